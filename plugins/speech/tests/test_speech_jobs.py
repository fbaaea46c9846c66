"""Jobs from recordings to stored analyses: the consumer queues one per recording, the
workers (processes of their own) analyse them, the results are searchable on SQLite and
PostgreSQL; bad recordings end with a status, a crashing backend fails only its job, a
killed worker's job is taken again, and retention deletes transcripts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from speech_rig import SCRIPT, SECONDS, open_speech, plugin, recorded_call, silent_wav

from switchboard import ConfigError, Principal, Role
from switchboard.testing import make_config, pg_database
from switchboard_speech import SpeechSettings
from switchboard_speech.service import prune_rows
from switchboard_speech.tables import job_t
from switchboard_speech.testing import Line, conversation

HERE = Path(__file__).parent


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        with pg_database() as url:
            yield url


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calls") / "scripted.wav"
    conversation(path, SCRIPT, SECONDS)
    return path


async def until(check: Any, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := await check()):
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.05)
    return value


def who(sb: Any, name: str) -> Principal:
    agent = sb.store.get_agent(name)
    return Principal(name=name, role=Role.AGENT, agent=agent)


SUPERVISOR = Principal(name="sue", role=Role.SUPERVISOR)


async def test_a_recorded_call_is_analysed_scored_and_found_by_a_word(
    tmp_path: Path, scripted: Path, db: str | None
) -> None:
    sb = await open_speech(tmp_path, db)
    speech = plugin(sb)
    try:
        await sb.consumers.start()  # as the runner does: call.recorded queues the job
        await recorded_call(sb, "call-1", scripted)
        await recorded_call(sb, "call-2", silent_wav(tmp_path / "quiet.wav", 2), agent="bob")
        await until(lambda: _queued(speech, 2))
        await speech.run(until_idle=True)
        found = await speech.analyses(["call-1", "call-2"])
        one = found["call-1"]
        assert one["status"] == "done" and one["transcribed"]
        assert [s["speaker"] for s in one["segments"]] == [line.speaker for line in SCRIPT]
        assert one["metrics"]["interruptions"] == 1
        assert one["score"] == pytest.approx(80.0)
        assert {r["rule"]: r["passed"] for r in one["rules"]} == {
            "greeting": True,
            "price": True,
            "next step": False,
            "no slang": True,
        }
        assert found["call-2"]["status"] == "silent" and found["call-2"]["segments"] == []

        hits = await sb.search_calls(SUPERVISOR, "problem order")
        assert [call.call_id for call, _ in hits] == ["call-1"]
        [match] = hits[0][1].matches
        assert match.speaker == "customer" and abs(match.start - 5.5) < 0.1
        assert "<mark>problem</mark>" in match.highlighted
        assert "<mark>order</mark>" in match.highlighted
        # what was said is as private as the recording: alice took it, bob did not
        assert [c.call_id for c, _ in await sb.search_calls(who(sb, "alice"), "order")] == [
            "call-1"
        ]
        assert await sb.search_calls(who(sb, "bob"), "order") == []
        assert await sb.search_calls(SUPERVISOR, "order -problem") == []
        assert await sb.search_calls(SUPERVISOR, '"hundred dollar" or zebra')
        assert await sb.search_calls(SUPERVISOR, "zebra") == []
        # FTS5 or tsquery syntax typed in is only words
        assert [c.call_id for c, _ in await sb.search_calls(SUPERVISOR, 'order" ^ * (:')] == [
            "call-1"
        ]
        analysed = [e.data for e in sb.events.read_since(0) if e.type == "speech.analysed"]
        assert {d["call_id"]: d["status"] for d in analysed} == {
            "call-1": "done",
            "call-2": "silent",
        }
    finally:
        await sb.consumers.stop()
        await sb.close()


async def _queued(speech: Any, n: int) -> bool:
    counts = await speech.job_counts()
    return sum(counts.values()) >= n


async def test_bad_recordings_end_with_a_status_and_are_not_retried(tmp_path: Path) -> None:
    sb = await open_speech(tmp_path)
    speech = plugin(sb)
    try:
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
        gone = silent_wav(tmp_path / "gone.wav", 1)
        await recorded_call(sb, "bad", silent_wav(bad, 1))
        bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")  # broken after it was saved
        await recorded_call(sb, "gone", gone)
        gone.unlink()
        await speech.queue(["bad", "gone", "no-such-call"])
        await speech.run(until_idle=True)
        rows = await sb.transaction(
            lambda c: {r.call_id: r for r in c.execute(sa.select(job_t))}, write=False
        )
        assert rows["bad"].state == "unreadable" and "WAV" in rows["bad"].error
        assert rows["gone"].state == "missing"
        assert rows["no-such-call"].state == "missing"
        assert {r.attempts for r in rows.values()} == {1}
        assert (await speech.analyses(["bad"]))["bad"]["status"] == "unreadable"
    finally:
        await sb.close()


async def test_a_crashing_backend_fails_its_job_and_the_others_go_on(tmp_path: Path) -> None:
    """The backend kills its worker process on the long call: that job fails with the
    reason, its slot gets a new process, and the short calls are done."""
    sb = await open_speech(tmp_path, backend="speech_backends:Crash", workers=2)
    speech = plugin(sb)
    try:
        long = tmp_path / "long.wav"
        conversation(
            long, [Line("agent", 0.5, "This sentence goes on for well over three seconds.")], 6
        )
        short = tmp_path / "short.wav"
        conversation(short, [Line("agent", 0.3, "Hello.")], 2)
        await recorded_call(sb, "long", long)
        for i in range(3):
            await recorded_call(sb, f"short-{i}", short)
        await speech.queue(["long", "short-0", "short-1", "short-2"])
        await speech.run(until_idle=True)
        found = await speech.analyses(["long", "short-0", "short-1", "short-2"])
        assert found["long"]["status"] == "failed"
        assert "worker process died" in found["long"]["error"]
        assert all(found[f"short-{i}"]["status"] == "done" for i in range(3))
        assert found["short-0"]["segments"][0]["text"] == "short"
    finally:
        await sb.close()


def test_a_missing_model_folder_or_backend_stops_start_up_naming_the_setting(
    tmp_path: Path,
) -> None:
    from speech_rig import config

    def problems(**speech: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            make_config(tmp_path, config(**speech), {"speech": SpeechSettings})
        return str(caught.value)

    text = problems(backend="vosk", models={"en": str(tmp_path / "no-model")})
    assert "models.en: no such folder" in text
    assert "backend: vosk needs the module 'vosk'" in text
    assert "models.ru: the pocketsphinx backend needs a model folder" in problems(language="ru")
    assert "no agent named 'carol'" in problems(agents_off=["carol"])
    assert "rules[0].kind" in problems(rules=[{"name": "x", "phrases": ["a"], "kind": "maybe"}])
    assert "search_configs.kk: a PostgreSQL" in problems(search_configs={"kk": "simple'); --"})


async def test_search_needs_the_plugin_and_a_query(tmp_path: Path) -> None:
    from switchboard import Invalid
    from switchboard.testing import open_switchboard

    sb = await open_switchboard(tmp_path, start=False)
    try:
        with pytest.raises(Invalid, match="no plugin searches"):
            await sb.search_calls(SUPERVISOR, "order")
        with pytest.raises(Invalid):
            await sb.search_calls(SUPERVISOR, "   ")
    finally:
        await sb.close()


async def test_retention_deletes_transcripts_with_their_recordings(
    tmp_path: Path, scripted: Path
) -> None:
    sb = await open_speech(tmp_path, transcribe=False)
    speech = plugin(sb)
    try:
        copy = tmp_path / "copy.wav"
        copy.write_bytes(scripted.read_bytes())
        await recorded_call(sb, "kept", scripted)
        await recorded_call(sb, "deleted", copy)
        await speech.queue(["kept", "deleted"])
        await speech.run(until_idle=True)
        copy.unlink()  # the company's recording retention removed it
        assert await sb.transaction(lambda c: prune_rows(c, None)) == 1
        found = await speech.analyses(["kept", "deleted"])
        assert set(found) == {"kept"} and found["kept"]["status"] == "done"
        from datetime import UTC, datetime, timedelta

        future = datetime.now(UTC) + timedelta(days=1)
        assert await sb.transaction(lambda c: prune_rows(c, future)) == 1
        assert await speech.analyses(["kept"]) == {}
    finally:
        await sb.close()


def test_a_job_killed_mid_way_is_taken_again(tmp_path: Path, scripted: Path) -> None:
    """``switchboard speech backfill`` is killed (-9) while its worker transcribes; run
    again, it takes the job once the lease has run out and finishes it."""

    async def record() -> None:
        sb = await open_speech(tmp_path)
        await recorded_call(sb, "call-1", scripted)
        await sb.close()

    asyncio.run(record())
    db = tmp_path / "switchboard-test.db"
    cfg = tmp_path / "switchboard.toml"
    cfg.write_text(
        f'[switchboard]\ndatabase_url = "sqlite:///{db}"\n'
        f'recordings_dir = "{tmp_path / "recordings"}"\n'
        '[[switchboard.agents]]\nname = "alice"\nextension = "101"\n'
        '[[switchboard.agents]]\nname = "bob"\nextension = "102"\n'
        '[plugins.speech]\nbackend = "speech_backends:Stall"\nlease_seconds = 3\n'
    )
    stall = tmp_path / "stall"
    stall.touch()
    env = {
        **os.environ,
        "SPEECH_TEST_STALL": str(stall),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "SWITCHBOARD_PLUGINS": "speech",
    }
    command = [
        str(Path(sys.executable).parent / "switchboard"),
        "speech",
        "backfill",
        "-c",
        str(cfg),
        "--since",
        "2000-01-01",
    ]
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    engine = sa.create_engine(f"sqlite:///{db}")

    def state() -> tuple[str, int] | None:
        with engine.connect() as c:
            row = c.execute(sa.select(job_t.c.state, job_t.c.attempts)).first()
        return (row.state, row.attempts) if row else None

    deadline = time.monotonic() + 60
    while state() != ("working", 1):
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    log.close()
    stall.unlink()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert state() == ("done", 2)
    assert "done 1" in again.stdout
    engine.dispose()


async def test_privacy_settings_keep_an_agents_calls_untranscribed(
    tmp_path: Path, scripted: Path
) -> None:
    """``agents_off``: bob's calls get their talk metrics, never a transcript or a score;
    ``channels``: only the named channels' calls are transcribed."""
    sb = await open_speech(tmp_path, agents_off=["bob"], channels=["sip", "webrtc"])
    speech = plugin(sb)
    try:
        await recorded_call(sb, "alices", scripted)
        await recorded_call(sb, "bobs", scripted, agent="bob")
        await speech.queue(["alices", "bobs"])
        await speech.run(until_idle=True)
        found = await speech.analyses(["alices", "bobs"])
        assert found["alices"]["transcribed"] and found["alices"]["segments"]
        bobs = found["bobs"]
        assert bobs["status"] == "done" and not bobs["transcribed"]
        assert bobs["segments"] == [] and bobs["score"] is None and bobs["rules"] == []
        assert bobs["metrics"]["interruptions"] == 1
        assert [c.call_id for c, _ in await sb.search_calls(SUPERVISOR, "order")] == ["alices"]
    finally:
        await sb.close()
    sb = await open_speech(tmp_path / "other", channels=["webrtc"])
    try:
        await recorded_call(sb, "sip-call", scripted)
        await plugin(sb).queue(["sip-call"])
        await plugin(sb).run(until_idle=True)
        assert not (await plugin(sb).analyses(["sip-call"]))["sip-call"]["transcribed"]
    finally:
        await sb.close()


async def test_search_ranks_by_relevance_or_newest_first_and_filters(
    tmp_path: Path, db: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored transcripts (as the workers store them): the call saying the word most is
    first; a word in more turns than the search ranks lists the newest calls first; the
    filters (contact, agent, period) narrow the calls."""
    from switchboard_speech import service

    sb = await open_speech(tmp_path, db)
    speech = plugin(sb)
    quiet = silent_wav(tmp_path / "q.wav", 1)
    texts = {
        "old": "refund please a refund today refund",
        "mid": "i want a refund",
        "new": "where is my refund",
    }
    try:
        for i, (call_id, text) in enumerate(texts.items()):
            await recorded_call(
                sb,
                call_id,
                quiet,
                agent="bob" if call_id == "new" else "alice",
                number=f"+1202555014{i}",
            )
            segment = {"speaker": "customer", "start": 1.0, "end": 3.0, "text": text, "words": []}
            found = {"status": "done", "metrics": {}, "segments": [segment]}
            await speech.store(await sb.call(call_id), found, "en", True)
        ids = [c.call_id for c, _ in await sb.search_calls(SUPERVISOR, "refund")]
        assert ids[0] == "old" and set(ids) == set(texts)
        monkeypatch.setattr(service, "RANK_AT_MOST", 2)
        ids = [c.call_id for c, _ in await sb.search_calls(SUPERVISOR, "refund")]
        assert ids == ["new", "mid", "old"]
        alice = sb.store.get_agent("alice").id
        ids = [c.call_id for c, _ in await sb.search_calls(SUPERVISOR, "refund", agent_id=alice)]
        assert ids == ["mid", "old"]
        mid = (await sb.call("mid")).contact_id
        ids = [c.call_id for c, _ in await sb.search_calls(SUPERVISOR, "refund", contact_id=mid)]
        assert ids == ["mid"]
        since = (await sb.call("new")).ringing_at
        ids = [c.call_id for c, _ in await sb.search_calls(SUPERVISOR, "refund", since=since)]
        assert ids == ["new"]
        assert [c.call_id for c, _ in await sb.search_calls(SUPERVISOR, "refund", limit=1)] == [
            "new"
        ]
    finally:
        await sb.close()
