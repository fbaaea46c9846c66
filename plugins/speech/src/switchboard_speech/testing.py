"""Recordings made of espeak-ng sentences placed at known times on the two channels, for
the plugin's tests and benchmarks (and a plugin author's): ``conversation`` writes one and
returns when each sentence really sounds (its audible part, to the 10 ms)."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from pathlib import Path

import attrs

from switchboard_speech._compat import audioop

RATE = 8000


@attrs.frozen
class Line:
    """What ``speaker`` (``agent`` or ``customer``) says from ``at`` seconds."""

    speaker: str
    at: float
    text: str


@attrs.frozen
class Said:
    speaker: str
    start: float
    end: float
    text: str


def speak(text: str, *, voice: str = "en-us+m3", speed: int = 130) -> bytes:
    """``text`` spoken by espeak-ng: 16-bit mono PCM at 8 kHz, through G.711 A-law and
    back (as a phone call carries it), its silent start and end cut off."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("needs espeak-ng (scripts/system-deps)")
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    pcm, _ = audioop.ratecv(pcm, 2, 1, rate, RATE, None)
    pcm = audioop.alaw2lin(audioop.lin2alaw(pcm, 2), 2)
    return trim(pcm)


def trim(pcm: bytes, level: int = 300) -> bytes:
    """Cut the start and end quieter than ``level`` (in 10 ms steps)."""
    step = RATE // 100 * 2
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    loud = [i for i, c in enumerate(chunks) if len(c) == step and audioop.max(c, 2) > level]
    if not loud:
        return b""
    return b"".join(chunks[loud[0] : loud[-1] + 1])


def conversation(
    path: Path, lines: list[Line], seconds: float, *, mono: bool = False
) -> list[Said]:
    """A stereo WAV (left the customer, right the agent, as the SIP channel records) of
    ``seconds`` with each line spoken from its time; what was said when."""
    n = int(seconds * RATE)
    tracks = {"customer": bytearray(n * 2), "agent": bytearray(n * 2)}
    said = []
    for line in lines:
        pcm = speak(line.text)
        a = int(line.at * RATE) * 2
        track = tracks[line.speaker]
        end = min(len(track), a + len(pcm))
        track[a:end] = pcm[: end - a]
        said.append(Said(line.speaker, line.at, round(line.at + len(pcm) / 2 / RATE, 3), line.text))
    left, right = bytes(tracks["customer"]), bytes(tracks["agent"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setsampwidth(2)
        w.setframerate(RATE)
        if mono:
            w.setnchannels(1)
            w.writeframes(audioop.add(left, right, 2))
        else:
            w.setnchannels(2)
            w.writeframes(
                audioop.add(audioop.tostereo(left, 2, 1, 0), audioop.tostereo(right, 2, 0, 1), 2)
            )
    return said


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate: word edits (substitutions, insertions, deletions) per reference word."""
    from switchboard_speech.scoring import words_of

    ref, hyp = words_of(reference), words_of(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))
