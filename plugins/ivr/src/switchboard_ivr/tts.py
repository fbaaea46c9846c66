"""Text prompts spoken by espeak-ng, cached as WAV files by text and voice."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from switchboard_ivr.flow import Prompt

INSTALL = "apt-get install espeak-ng"


class Speaker:
    """Renders text prompts into ``cache_dir`` (once per text and voice)."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)

    def path_for(self, prompt: Prompt) -> Path:
        key = hashlib.sha256(f"{prompt.voice}\0{prompt.text}".encode()).hexdigest()[:24]
        return self.cache_dir / f"{prompt.voice}-{key}.wav"

    def __call__(self, prompt: Prompt) -> Path:
        assert prompt.text is not None
        path = self.path_for(prompt)
        if path.is_file():
            return path
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise RuntimeError(f"text prompt needs espeak-ng, which is not installed ({INSTALL})")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".wav", dir=self.cache_dir)
        os.close(fd)
        try:
            result = subprocess.run(
                [exe, "-v", prompt.voice, "-w", tmp, prompt.text],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if result.returncode != 0 or "does not exist" in result.stderr:
                raise RuntimeError(
                    f"espeak-ng could not speak voice {prompt.voice!r}: {result.stderr.strip()}"
                )
            os.replace(tmp, path)  # atomic: a half-written prompt is never cached
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path
