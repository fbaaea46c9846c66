"""Secrets never reach the logs: every configured secret is replaced by ``***`` in each
log record (message, arguments and traceback), whichever library wrote it (httpx logs
whole request URLs, and a Bot API URL holds the bot's token).

A secret is any string setting declared ``attrs.field(repr=False)``, in the core's
settings and in every plugin's: declaring a setting that way is all a plugin does to have
it kept out of logs, reprs and ``/api/health``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

MASK = "***"
#: Shorter values are not masked (masking "" or "a" everywhere would garble every line).
MIN_LENGTH = 6


def secret_values(*objects: Any) -> set[str]:
    """The strings of every ``repr=False`` attrs field found in ``objects`` (recursively:
    nested attrs objects, lists and mappings)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if attrs.has(type(value)):
            for field in attrs.fields(type(value)):
                inner = getattr(value, field.name)
                if not field.repr and isinstance(inner, str) and len(inner) >= MIN_LENGTH:
                    found.add(inner)
                else:
                    walk(inner)
        elif isinstance(value, Mapping):
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list | tuple | set):
            for inner in value:
                walk(inner)

    for obj in objects:
        walk(obj)
    return found


class Redactor(logging.Filter):
    """A logging filter (on handlers) that masks the given secrets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = self.redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True

    def install(self) -> None:
        """Mask in everything the root logger's handlers write."""
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)
