"""Reading JSON that came from outside (a webhook body, an API answer) without trusting its
shape: each helper returns a value of the type asked for, or an empty or None one, never
raises. A channel reads a provider's payload with them and stores what it finds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is an object, else ``{}``."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` when it is a list, else ``[]``."""
    return value if isinstance(value, list) else []


def as_float(value: Any) -> float | None:
    """``value`` as a number (a latitude...), or None."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def as_time(value: Any, per_second: int = 1) -> datetime | None:
    """An epoch timestamp (seconds; ``per_second=1000`` for milliseconds) as an aware
    datetime, or None."""
    try:
        return datetime.fromtimestamp(int(value) / per_second, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def clean(text: Any, limit: int) -> str | None:
    """Outside text made safe to store: a string, no NUL, at most ``limit`` characters;
    None when it is not a string."""
    if not isinstance(text, str):
        return None
    return text.replace("\x00", "")[:limit]
