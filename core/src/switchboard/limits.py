"""Bounds on what comes from outside, applied at the core's edge (``ctx.receive``, the API).

Every string a channel hands the core is cleaned here before it reaches the database: NUL
bytes are dropped (PostgreSQL refuses them in text and JSON), one-line fields (names,
subjects) lose their line breaks and other control characters, and each field is cut to
its column's length. An over-long external id is replaced by a digest of itself, so the
same long id still deduplicates. The limits are listed in docs/security.md.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

#: Column lengths of the store (``tables.py``) and of RFC 5322 for subjects.
MAX_NAME = 300
MAX_SUBJECT = 998
MAX_EXTERNAL_ID = 255
#: A message text longer than this (characters) is cut, and ``meta["truncated"]`` says so.
MAX_TEXT = 1_000_000
#: A single string inside a message's ``meta`` (a file name, a header...).
MAX_META_STRING = 10_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid(value: str) -> str:
    """Without NULs, and without lone surrogates (a decoder's ``surrogateescape`` leftovers,
    which no database stores): those become U+FFFD."""
    return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))


def one_line(value: str | None, limit: int) -> str | None:
    """A name or subject: control characters (line breaks included) become one space, the
    ends are trimmed, the result is at most ``limit`` characters; ``None`` stays ``None``."""
    if value is None:
        return None
    return _CONTROL.sub(" ", _valid(value)).strip()[:limit]


def text(value: str | None, limit: int | None = None) -> tuple[str | None, bool]:
    """A message body without NULs, cut to ``limit`` (:data:`MAX_TEXT`); and whether it
    was cut."""
    if value is None:
        return None, False
    limit = MAX_TEXT if limit is None else limit
    value = _valid(value)
    return value[:limit], len(value) > limit


def external_id(value: str) -> str:
    """An external id that fits its column: NULs dropped; a longer one becomes
    ``sha256:<hex>`` of itself (stable, so deduplication still works)."""
    value = _valid(value)
    if len(value) <= MAX_EXTERNAL_ID:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def json_safe(value: Any, limit: int = MAX_META_STRING) -> Any:
    """``value`` (a message's meta) with NULs dropped from every string, strings cut to
    ``limit``, and keys made strings."""
    if isinstance(value, str):
        return _valid(value)[:limit]
    if isinstance(value, dict):
        return {json_safe(str(k), limit): json_safe(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, limit) for v in value]
    return value
