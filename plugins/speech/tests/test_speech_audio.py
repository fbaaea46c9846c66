"""The talk metrics against recordings whose timings we made (espeak-ng sentences placed
on the two channels), the English backend against what was said, and the scoring rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from speech_rig import RULES, SCRIPT, SECONDS

from switchboard_speech import Rule, audio
from switchboard_speech.scoring import score
from switchboard_speech.testing import Line, conversation, word_error_rate
from switchboard_speech.work import analyse

OPTIONS = {
    "backend": "pocketsphinx",
    "model_dir": None,
    "language": "en",
    "transcribe": True,
    "max_seconds": 3600.0,
    "monologue_gap_s": 2.0,
    "vad": {"aggressiveness": 2, "pause_s": 0.5, "min_talk_s": 0.12},
}
TOLERANCE = 0.1  # seconds


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    path = tmp_path_factory.mktemp("speech") / "call.wav"
    return path, conversation(path, SCRIPT, SECONDS)


def test_turns_match_the_constructed_timings(call: tuple[Path, list]) -> None:
    """Each sentence is one turn, found on its speaker's channel within 100 ms."""
    path, said = call
    rec = audio.read_recording(path, 3600)
    found = {t.speaker: audio.turns(t) for t in rec.tracks}
    for speaker in ("agent", "customer"):
        expected = [s for s in said if s.speaker == speaker]
        assert len(found[speaker]) == len(expected), found[speaker]
        for turn, s in zip(found[speaker], expected, strict=True):
            assert abs(turn.start - s.start) <= TOLERANCE, (turn, s)
            assert abs(turn.end - s.end) <= TOLERANCE, (turn, s)


def test_metrics_match_the_constructed_conversation(call: tuple[Path, list]) -> None:
    path, said = call
    m = analyse(str(path), {**OPTIONS, "transcribe": False})["metrics"]
    agent = [s for s in said if s.speaker == "agent"]
    customer = [s for s in said if s.speaker == "customer"]
    agent_s = sum(s.end - s.start for s in agent)
    customer_s = sum(s.end - s.start for s in customer)
    overlap = max(0.0, said[1].end - said[2].start)  # "sorry" starts while the customer talks
    assert m["seconds"] == SECONDS
    assert m["agent_talk_s"] == pytest.approx(agent_s, abs=3 * TOLERANCE)
    assert m["customer_talk_s"] == pytest.approx(customer_s, abs=2 * TOLERANCE)
    assert m["talk_ratio"] == pytest.approx(agent_s / (agent_s + customer_s), abs=0.02)
    assert m["overtalk_s"] == pytest.approx(overlap, abs=2 * TOLERANCE)
    assert (m["interruptions"], m["agent_interruptions"]) == (1, 1)
    # "sorry" and the price are one monologue: 1.8 s apart, the customer silent between
    monologue = agent[2].end - agent[1].start
    assert monologue > agent[0].end - agent[0].start
    assert m["longest_monologue_s"] == pytest.approx(monologue, abs=TOLERANCE)
    assert m["greeting_wait_s"] == pytest.approx(agent[0].start, abs=TOLERANCE)
    silence = SECONDS - (agent_s + customer_s - overlap)
    assert m["silence_share"] == pytest.approx(silence / SECONDS, abs=0.02)


def test_a_monologue_runs_across_short_pauses_until_the_customer_speaks(tmp_path: Path) -> None:
    """Two agent sentences 1 s apart are one monologue; after the customer speaks, a new
    one starts."""
    lines = [
        Line("agent", 0.5, "Our plan includes support."),
        Line("agent", 3.5, "It also includes training."),
        Line("customer", 7.0, "Okay."),
        Line("agent", 8.5, "Good."),
    ]
    said = conversation(tmp_path / "m.wav", lines, 10)
    m = analyse(str(tmp_path / "m.wav"), {**OPTIONS, "transcribe": False})["metrics"]
    assert said[1].start - said[0].end < 2.0
    assert m["longest_monologue_s"] == pytest.approx(said[1].end - said[0].start, abs=TOLERANCE)
    assert m["interruptions"] == 0


def test_the_english_backend_hears_the_keywords_at_their_times(call: tuple[Path, list]) -> None:
    """pocketsphinx (its built-in English model) on telephone audio: the tests hold it to
    the keywords and where they were said, and print the word error rate."""
    path, said = call
    found = analyse(str(path), OPTIONS)
    assert found["status"] == "done"
    segments = found["segments"]
    assert [s["speaker"] for s in segments] == [s.speaker for s in said]
    for seg, s in zip(segments, said, strict=True):
        assert abs(seg["start"] - s.start) <= TOLERANCE
    words = {w[0]: w[1] for s in segments for w in s["words"]}
    assert "morning" in words and words["morning"] < said[0].start + 1.5
    assert {"problem", "order"} <= set(words)
    assert "hundred" in words and said[3].start < words["hundred"] < said[3].end
    reference = " ".join(s.text for s in said)
    hypothesis = " ".join(s["text"] for s in segments)
    wer = word_error_rate(reference, hypothesis)
    print(f"pocketsphinx WER on the scripted call: {wer:.0%} ({hypothesis!r})")
    assert wer < 0.8  # espeak's voice through G.711 is far from the model's training data


def test_scoring_hits_and_misses_as_designed(call: tuple[Path, list]) -> None:
    path, _ = call
    segments = analyse(str(path), OPTIONS)["segments"]
    result = score([Rule(**r) for r in RULES], segments)  # type: ignore[arg-type]
    outcome = {r["rule"]: r for r in result["rules"]}
    assert outcome["greeting"]["passed"] and outcome["greeting"]["at"] < 5
    assert outcome["price"]["passed"] and 11 < outcome["price"]["at"] < 14
    assert not outcome["next step"]["passed"] and "at" not in outcome["next step"]
    assert outcome["no slang"]["passed"]
    assert result["score"] == pytest.approx(100 * 4 / 5)  # weights 1 + 2 + 1 of 5


def test_a_rule_counts_only_its_speaker_and_its_time() -> None:
    segments = [
        {"speaker": "customer", "start": 1.0, "end": 2.0, "text": "good morning", "words": []},
        {"speaker": "agent", "start": 9.0, "end": 10.0, "text": "good morning", "words": []},
        {"speaker": "agent", "start": 12.0, "end": 13.0, "text": "whatever you say", "words": []},
    ]
    rules = [
        Rule("greeting", ["good morning"], within_s=5),
        Rule("late greeting", ["good morning"]),
        Rule("no slang", ["whatever"], kind="must_not", weight=3),
    ]
    result = score(rules, segments)
    assert [r["passed"] for r in result["rules"]] == [False, True, False]
    assert result["rules"][1]["at"] == 9.0 and result["rules"][2]["said"] == "whatever you say"
    assert result["score"] == pytest.approx(20.0)


def test_unreadable_and_silent_recordings_end_with_a_status(tmp_path: Path) -> None:
    from speech_rig import silent_wav

    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    bad = analyse(str(tmp_path / "bad.wav"), OPTIONS)
    assert bad["status"] == "unreadable" and "WAV" in bad["error"]
    silent = analyse(str(silent_wav(tmp_path / "s.wav", 3)), OPTIONS)
    assert silent["status"] == "silent" and silent["segments"] == []
    assert silent["metrics"]["talk_ratio"] is None and silent["metrics"]["silence_share"] == 1.0


def test_a_long_recording_is_cut_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    conversation(path, [Line("agent", 0.5, "Hello there."), Line("agent", 8, "Bye.")], 10)
    found = analyse(str(path), {**OPTIONS, "max_seconds": 5.0, "transcribe": False})
    assert found["truncated"] and found["metrics"]["seconds"] == 5.0
    assert found["metrics"]["agent_talk_s"] < 2
