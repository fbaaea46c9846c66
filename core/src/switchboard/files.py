"""Where a channel keeps files that came from outside (attachments, photos, voice notes).

No outside text ever becomes a path: the folder is the channel's own (a setting), the
sub-folder is our own id (year-month and a random id), and the file name is a cleaned,
length-bounded form of the sender's name, used only as the last part. The result is
checked to lie inside the folder before anything is written.
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path

#: Bytes of a cleaned file name (UTF-8); file systems take 255, the id prefix needs room.
MAX_NAME_BYTES = 150

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


def safe_filename(name: str | None, fallback: str = "file") -> str:
    """A file name that is one harmless path component: no separators, control
    characters or leading dots, at most :data:`MAX_NAME_BYTES` UTF-8 bytes (the extension
    kept where it fits); ``fallback`` when nothing is left."""
    cleaned = unicodedata.normalize("NFC", name or "")
    cleaned = _UNSAFE.sub("_", cleaned).strip(" ._")
    if not cleaned:
        cleaned = fallback
    stem, dot, ext = cleaned.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = cleaned, ""
    room = MAX_NAME_BYTES - (len(ext.encode()) + 1 if ext else 0)
    stem = stem.encode()[:room].decode("utf-8", "ignore").rstrip(" ._") or fallback
    return f"{stem}.{ext}" if ext else stem


def new_file_path(folder: str | os.PathLike[str], name: str | None, fallback: str = "file") -> Path:
    """A fresh path for a file from outside: ``folder/YYYY-MM/<random id>/<safe name>``.
    The sub-folder is created; the path is proved to lie inside ``folder``."""
    root = Path(folder).resolve()
    sub = root / datetime.now(UTC).strftime("%Y-%m") / uuid.uuid4().hex
    path = (sub / safe_filename(name, fallback)).resolve()
    if not path.is_relative_to(root) or path.parent != sub:
        raise ValueError(f"refusing a file path outside {root}: {path}")
    sub.mkdir(parents=True, exist_ok=True)
    return path
