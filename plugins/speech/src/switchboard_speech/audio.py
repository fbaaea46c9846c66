"""Reading a recording and finding who talks when, without any speech model.

A recording is a WAV: stereo as the SIP channel writes it (left the customer, right the
agent) or mono (one track, speaker ``call``). Each track is cut into 20 ms frames at
8 kHz and given to WebRTC's voice activity detector (``webrtcvad``); runs of speech
frames, joined across pauses shorter than ``pause_s`` and kept when at least ``min_talk_s``
long, are the track's *turns*. The talk metrics are arithmetic on the two lists of turns
(docs/speech.md defines each).
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import attrs

from switchboard_speech._compat import audioop

RATE = 8000  # what the detector and the metrics work at
FRAME = 160  # 20 ms at 8 kHz
FRAME_S = FRAME / RATE


class Unreadable(Exception):
    """The file is not a recording we can read (not a WAV, a codec other than PCM...)."""


@attrs.frozen
class Track:
    """One speaker's audio: 16-bit mono PCM at ``rate``."""

    speaker: str
    pcm: bytes
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate


@attrs.frozen
class Recording:
    tracks: list[Track]
    seconds: float  # the whole recording's length (before any cut)
    truncated: bool  # longer than the limit: only its start was read


def read_recording(path: str | Path, max_seconds: float) -> Recording:
    """The tracks of a WAV recording (at most ``max_seconds`` of it); ``Unreadable``."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.getnframes()
            if channels not in (1, 2) or width not in (1, 2, 4) or not 4000 <= rate <= 96000:
                raise Unreadable(
                    f"{channels} channels of {8 * width}-bit samples at {rate} Hz "
                    "(expected mono or stereo PCM)"
                )
            keep = min(frames, int(max_seconds * rate))
            data = w.readframes(keep)
    except (wave.Error, EOFError, OSError) as exc:
        raise Unreadable(f"not a readable WAV file: {exc}") from None
    if width != 2:
        data = audioop.lin2lin(data, width, 2)
    whole = frames / rate if rate else 0.0
    usable = len(data) - len(data) % (2 * channels)
    data = data[:usable]
    if channels == 2:
        left = audioop.tomono(data, 2, 1, 0)
        right = audioop.tomono(data, 2, 0, 1)
        tracks = [Track("customer", left, rate), Track("agent", right, rate)]
    else:
        tracks = [Track("call", data, rate)]
    return Recording(tracks, whole, keep < frames)


def resample(pcm: bytes, rate: int, to: int) -> bytes:
    if rate == to or not pcm:
        return pcm
    out, _ = audioop.ratecv(pcm, 2, 1, rate, to, None)
    return out


@attrs.frozen
class Turn:
    """A stretch of one speaker's talk (seconds into the recording)."""

    speaker: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def turns(
    track: Track, *, aggressiveness: int = 2, pause_s: float = 0.5, min_talk_s: float = 0.12
) -> list[Turn]:
    """The track's turns: speech frames, joined across pauses under ``pause_s``."""
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    pcm = resample(track.pcm, track.rate, RATE)
    step = FRAME * 2
    runs: list[list[float]] = []
    start: float | None = None
    n = len(pcm) // step
    for i in range(n):
        frame = pcm[i * step : (i + 1) * step]
        # a digital-silence frame is not speech (and the detector need not look at it)
        speech = audioop.max(frame, 2) > 64 and vad.is_speech(frame, RATE)
        t = i * FRAME_S
        if speech and start is None:
            start = t
        elif not speech and start is not None:
            runs.append([start, t])
            start = None
    if start is not None:
        runs.append([start, n * FRAME_S])
    joined: list[list[float]] = []
    for run in runs:
        if joined and run[0] - joined[-1][1] < pause_s:
            joined[-1][1] = run[1]
        else:
            joined.append(run)
    return [Turn(track.speaker, round(a, 3), round(b, 3)) for a, b in joined if b - a >= min_talk_s]


def _overlap(a: list[Turn], b: list[Turn]) -> float:
    total, j = 0.0, 0
    for x in a:
        while j < len(b) and b[j].end <= x.start:
            j += 1
        k = j
        while k < len(b) and b[k].start < x.end:
            total += max(0.0, min(x.end, b[k].end) - max(x.start, b[k].start))
            k += 1
    return total


def _starts_inside(a: list[Turn], b: list[Turn]) -> int:
    """How many turns of ``a`` start while a turn of ``b`` goes on."""
    return sum(1 for x in a if any(y.start < x.start < y.end for y in b))


def metrics(
    agent: list[Turn], customer: list[Turn], seconds: float, *, monologue_gap_s: float = 2.0
) -> dict[str, Any]:
    """Talk metrics of a call from its two speakers' turns (docs/speech.md)."""
    agent_s = sum(t.seconds for t in agent)
    customer_s = sum(t.seconds for t in customer)
    overtalk = _overlap(agent, customer)
    talking = agent_s + customer_s - overtalk
    # a monologue: agent turns joined while the customer says nothing in between
    longest, current = 0.0, None
    for t in agent:
        if (
            current is not None
            and t.start - current[1] < monologue_gap_s
            and not any(c.start < t.start and c.end > current[1] for c in customer)
        ):
            current[1] = t.end
        else:
            current = [t.start, t.end]
        longest = max(longest, current[1] - current[0])
    return {
        "seconds": round(seconds, 3),
        "agent_talk_s": round(agent_s, 3),
        "customer_talk_s": round(customer_s, 3),
        "talk_ratio": round(agent_s / (agent_s + customer_s), 3) if agent_s + customer_s else None,
        "silence_share": round(max(0.0, seconds - talking) / seconds, 3) if seconds else None,
        "overtalk_s": round(overtalk, 3),
        "interruptions": _starts_inside(agent, customer) + _starts_inside(customer, agent),
        "agent_interruptions": _starts_inside(agent, customer),
        "longest_monologue_s": round(longest, 3),
        "greeting_wait_s": agent[0].start if agent else None,
    }
