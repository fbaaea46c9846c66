"""Where a channel keeps files that came from outside (attachments, photos, voice notes).

No outside text ever becomes a path: the folder is the channel's own (a setting), the
sub-folder is our own id (year-month and a random id), and the file name is a cleaned,
length-bounded form of the sender's name, used only as the last part. The result is
checked to lie inside the folder before anything is written.
"""

from __future__ import annotations

import asyncio
import os
import re
import unicodedata
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx

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


class FileRoots:
    """The folders Switchboard keeps files in: the recordings folder and every channel's
    files folder (registered by ``ctx.files_dir``). A path is served or sent only when it
    resolves (symbolic links followed) to a regular file inside one of them: a path that
    came from a payload, a template or a stored row never reaches anything else."""

    def __init__(self, *folders: str | os.PathLike[str]) -> None:
        self._roots: set[Path] = set()
        for folder in folders:
            self.add(folder)

    def add(self, folder: str | os.PathLike[str]) -> Path:
        resolved = Path(folder).resolve()
        self._roots.add(resolved)
        return resolved

    def __iter__(self) -> Iterator[Path]:
        return iter(sorted(self._roots))

    def check(self, path: str | os.PathLike[str]) -> Path | None:
        """``path`` resolved, if it is a regular file inside one of the folders; else None."""
        try:
            found = Path(path).resolve()
        except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL...
            return None
        if not any(found.is_relative_to(root) for root in self._roots):
            return None
        return found if found.is_file() else None


@attrs.frozen
class Attachment:
    """A file a message carried, as its channel noted it in the interaction's ``meta``:
    ``meta.attachment`` (one: Telegram, WhatsApp) or ``meta.attachments`` (a list: email),
    each ``{path, file_name | filename, mime_type | content_type, size}``, or ``skipped``
    / ``error`` with the reason it was not kept (then ``path`` is None)."""

    index: int
    name: str
    mime_type: str | None
    size: int | None
    path: str | None
    note: str | None  # why the file was not kept


def attachments(meta: Mapping[str, Any] | None) -> list[Attachment]:
    """The attachments an interaction's ``meta`` names, in order (see :class:`Attachment`)."""
    meta = meta or {}
    found = [meta["attachment"]] if isinstance(meta.get("attachment"), dict) else []
    if isinstance(meta.get("attachments"), list):
        found += [a for a in meta["attachments"] if isinstance(a, dict)]
    out = []
    for index, a in enumerate(found):
        name = a.get("file_name") or a.get("filename") or a.get("kind") or "file"
        mime = a.get("mime_type") or a.get("content_type")
        size = a.get("size")
        path = a.get("path")
        note = a.get("skipped") or a.get("error")
        out.append(
            Attachment(
                index=index,
                name=safe_filename(str(name), "file"),
                mime_type=str(mime)[:128] if mime else None,
                size=size if isinstance(size, int) else None,
                path=path if isinstance(path, str) and not note else None,
                note=str(note)[:500] if note else (None if path else "not kept"),
            )
        )
    return out


#: A media type as a server may declare it (``type/subtype``), nothing more.
MIME = re.compile(r"^[A-Za-z0-9][\w.+-]{0,63}/[A-Za-z0-9][\w.+-]{0,63}$")
#: Types a browser may show in place: pictures, sound and video (not SVG, which runs
#: scripts). Anything else is served as a download of ``application/octet-stream``.
INLINE = re.compile(r"^(image/(png|jpeg|gif|webp)|audio/[\w.+-]+|video/[\w.+-]+)$")


def shown_as(mime_type: str | None) -> str | None:
    """``image``, ``audio`` or ``video`` when a browser may show a file of this type in
    place (see :data:`INLINE`); None: a download."""
    if mime_type and INLINE.fullmatch(mime_type.lower()):
        return mime_type.partition("/")[0].lower()
    return None


async def download_file(
    http: httpx.AsyncClient,
    url: str,
    info: dict[str, Any],
    *,
    folder: Path,
    limit: int,
    setting: str = "max_file_bytes",
    fallback: str = "file",
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Download a file a message carries into a new file under ``folder`` (named from
    ``info["file_name"]`` cleaned, else ``fallback``: :func:`new_file_path`), streamed and
    cut off at ``limit`` bytes, and note the outcome in ``info`` (returned): ``path`` and
    ``size`` (and ``mime_type`` from the server's ``Content-Type`` when ``info`` has
    none); or ``skipped`` when it is larger than ``limit`` (declared in ``info["size"]``
    or found while streaming; ``setting`` names the limit in the reason); or ``error``
    with the reason. Never raises for the download: the message is stored either way."""
    reason = f"larger than {setting} ({limit})"
    declared = info.get("size")
    if isinstance(declared, int) and declared > limit:
        info["skipped"] = reason
        return info
    try:
        target = await asyncio.to_thread(new_file_path, folder, info.get("file_name"), fallback)
        size = 0
        async with http.stream("GET", url, headers=headers) as response:
            response.raise_for_status()
            if not info.get("mime_type"):  # the server's word, when the message gave none
                declared_type = response.headers.get("content-type", "").split(";")[0].strip()
                if MIME.fullmatch(declared_type):
                    info["mime_type"] = declared_type.lower()
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        break
                    out.write(chunk)
        if size > limit:  # the declared size was wrong, or there was none
            await asyncio.to_thread(target.unlink)
            info["skipped"] = reason
            return info
    except (httpx.HTTPError, OSError, ValueError) as exc:
        info["error"] = f"download failed: {type(exc).__name__}: {str(exc)[:200]}"
        return info
    info["path"] = str(target)
    info["size"] = size
    return info
