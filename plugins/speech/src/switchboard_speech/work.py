"""What a worker process does with one recording: read it, find the turns, measure the
talk, and (when asked) transcribe each turn. Runs in a process of its own (see
``jobs.py``), so nothing here touches the database or the event loop; the answer is a
plain dict."""

from __future__ import annotations

from typing import Any

from switchboard_speech import audio, backends

#: Backends made in this process, by (name, model folder, language): a model loads once.
_made: dict[tuple[str, str | None, str], backends.Transcriber] = {}
#: Audio kept either side of a turn, so a word cut by the detector is heard whole.
MARGIN_S = 0.15


def backend(name: str, model_dir: str | None, language: str) -> backends.Transcriber:
    key = (name, model_dir, language)
    if key not in _made:
        _made[key] = backends.make_backend(name, model_dir, language)
    return _made[key]


def analyse(path: str, options: dict[str, Any]) -> dict[str, Any]:
    """``status``: ``done``, ``silent`` (nobody talks) or ``unreadable`` (with ``error``);
    with ``metrics``, ``segments`` (speaker, start, end, text, words) and ``truncated``."""
    try:
        rec = audio.read_recording(path, options["max_seconds"])
    except audio.Unreadable as exc:
        return {"status": "unreadable", "error": str(exc)}
    vad = options["vad"]
    found = {t.speaker: audio.turns(t, **vad) for t in rec.tracks}
    seconds = min(rec.seconds, options["max_seconds"])
    agent = found.get("agent", found.get("call", []))
    customer = found.get("customer", [])
    metrics = audio.metrics(agent, customer, seconds, monologue_gap_s=options["monologue_gap_s"])
    result: dict[str, Any] = {
        "status": "done",
        "metrics": metrics,
        "segments": [],
        "truncated": rec.truncated,
        "seconds": rec.seconds,
    }
    if not any(found.values()):
        result["status"] = "silent"
        return result
    if options["transcribe"]:
        engine = backend(options["backend"], options["model_dir"], options["language"])
        segments = []
        for track in rec.tracks:
            for turn in found[track.speaker]:
                start = max(0.0, turn.start - MARGIN_S)
                end = min(track.seconds, turn.end + MARGIN_S)
                a, b = int(start * track.rate) * 2, int(end * track.rate) * 2
                pcm = audio.resample(track.pcm[a:b], track.rate, backends.RATE)
                words = engine.transcribe(pcm, backends.RATE)
                if not words:
                    continue
                segments.append(
                    {
                        "speaker": track.speaker,
                        "start": turn.start,
                        "end": turn.end,
                        "text": " ".join(w.text for w in words),
                        "words": [
                            [w.text, round(start + w.start, 2), round(start + w.end, 2)]
                            for w in words
                        ],
                    }
                )
        segments.sort(key=lambda s: (s["start"], s["speaker"]))
        result["segments"] = segments
    return result
