"""Switchboard's email channel. See docs/email.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchboard import Channel, hookimpl
from switchboard_email.channel import EmailChannel, EmailSettings

__all__ = ["PLUGIN", "EmailChannel", "EmailPlugin", "EmailSettings"]


class EmailPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "email"

    def __init__(self) -> None:
        self.channel = EmailChannel()

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(EmailSettings)

    @hookimpl
    def register_channels(self, register: Callable[[Channel], None]) -> None:
        register(self.channel)


PLUGIN = EmailPlugin()
