"""Speech-to-text backends behind one interface.

A backend is made once per worker process (``make_backend``) and then turns one turn's
audio (16-bit mono PCM at 16 kHz) into words with times. Three are built in:

- ``pocketsphinx``: its wheel carries an English (US) model, so it works with nothing
  downloaded: the default, and the one the tests use. Another language's model is a
  folder with the acoustic model (a sub-folder), a language model (``*.lm.bin`` or
  ``*.lm``) and a dictionary (``*.dict``).
- ``vosk``: a Vosk model folder (``vosk-model-small-en-us-0.15``, ``vosk-model-small-ru-0.22``...).
- ``whisper``: faster-whisper with a CTranslate2 model folder (``faster-whisper-small``...).

Anything else is ``module:callable``: ``callable(model_dir, language)`` returns an object
with ``transcribe(pcm, rate) -> list[Word]``, for a company's own engine.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Protocol

import attrs

RATE = 16000  # what every backend is given


@attrs.frozen
class Word:
    text: str
    start: float  # seconds into the audio given
    end: float


class Transcriber(Protocol):
    def transcribe(self, pcm: bytes, rate: int) -> list[Word]: ...


BUILT_IN = ("pocketsphinx", "vosk", "whisper")
#: The import each built-in backend needs (a start-up check names what is missing).
MODULES = {"pocketsphinx": "pocketsphinx", "vosk": "vosk", "whisper": "faster_whisper"}
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")


#: pocketsphinx's search narrowed from its defaults (beam 1e-48, wbeam 7e-29, no limit on
#: active HMMs and words per frame): 2.5 times as fast at the same word error rate on
#: bench/speech_bench.py's call (docs/benchmarks.md).
SEARCH = {"beam": 1e-40, "wbeam": 1e-20, "pbeam": 1e-40, "maxhmmpf": 3000, "maxwpf": 10}


class PocketSphinx:
    def __init__(self, model_dir: str | None, language: str) -> None:
        from pocketsphinx import Decoder

        options: dict[str, object] = {"samprate": RATE, "loglevel": "FATAL", **SEARCH}
        if model_dir:
            folder = Path(model_dir)
            hmm = next((p for p in sorted(folder.iterdir()) if p.is_dir()), None)
            lm = next(iter(sorted(folder.glob("*.lm.bin")) or sorted(folder.glob("*.lm"))), None)
            words = next(iter(sorted(folder.glob("*.dict"))), None)
            if hmm is None or lm is None or words is None:
                raise ValueError(
                    f"{folder}: a pocketsphinx model folder holds an acoustic model folder, "
                    "a *.lm.bin (or *.lm) and a *.dict"
                )
            options.update(hmm=str(hmm), lm=str(lm), dict=str(words))
        self.decoder = Decoder(**options)

    def transcribe(self, pcm: bytes, rate: int) -> list[Word]:
        d = self.decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        fps = 100.0  # pocketsphinx's frames per second
        out = []
        for seg in d.seg():
            word = re.sub(r"\(\d+\)$", "", seg.word)  # "the(2)": the second pronunciation
            if _FILLER.match(word):
                continue
            out.append(Word(word, seg.start_frame / fps, (seg.end_frame + 1) / fps))
        return out


class Vosk:
    def __init__(self, model_dir: str | None, language: str) -> None:
        import vosk

        if not model_dir:
            raise ValueError("the vosk backend needs a model folder (models.LANGUAGE)")
        vosk.SetLogLevel(-1)
        self.model = vosk.Model(model_dir)
        self._vosk = vosk

    def transcribe(self, pcm: bytes, rate: int) -> list[Word]:
        rec = self._vosk.KaldiRecognizer(self.model, rate)
        rec.SetWords(True)
        rec.AcceptWaveform(pcm)
        result = json.loads(rec.FinalResult())
        return [
            Word(str(w["word"]), float(w["start"]), float(w["end"]))
            for w in result.get("result", [])
        ]


class Whisper:
    def __init__(self, model_dir: str | None, language: str) -> None:
        from faster_whisper import WhisperModel

        if not model_dir:
            raise ValueError("the whisper backend needs a model folder (models.LANGUAGE)")
        self.model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=1)
        self.language = language

    def transcribe(self, pcm: bytes, rate: int) -> list[Word]:
        import numpy as np

        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        segments, _ = self.model.transcribe(
            audio, language=self.language, word_timestamps=True, vad_filter=False, beam_size=1
        )
        return [
            Word(w.word.strip(), float(w.start), float(w.end))
            for s in segments
            for w in (s.words or [])
            if w.word.strip()
        ]


def make_backend(name: str, model_dir: str | None, language: str) -> Transcriber:
    """The backend called ``name`` (built in, or ``module:callable``)."""
    if name == "pocketsphinx":
        return PocketSphinx(model_dir, language)
    if name == "vosk":
        return Vosk(model_dir, language)
    if name == "whisper":
        return Whisper(model_dir, language)
    module, _, attr = name.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    made: Transcriber = factory(model_dir, language)
    return made
