"""Backends of the tests' own (``backend = "speech_backends:NAME"``), loaded in the
worker processes: one that crashes its process on long turns, one that stalls while a
marker file exists."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from switchboard_speech.backends import PocketSphinx, Word


class Crash:
    """Kills its own process (as a segfaulting engine would) on a turn over 3 s."""

    def __init__(self, model_dir: str | None, language: str) -> None:
        pass

    def transcribe(self, pcm: bytes, rate: int) -> list[Word]:
        if len(pcm) / 2 / rate > 3.0:
            os.kill(os.getpid(), signal.SIGKILL)
        return [Word("short", 0.0, len(pcm) / 2 / rate)]


class Stall(PocketSphinx):
    """pocketsphinx, but it waits while the file named by ``SPEECH_TEST_STALL`` exists."""

    def transcribe(self, pcm: bytes, rate: int) -> list[Word]:
        marker = Path(os.environ.get("SPEECH_TEST_STALL", "/nonexistent"))
        while marker.exists():
            time.sleep(0.05)
        return super().transcribe(pcm, rate)
