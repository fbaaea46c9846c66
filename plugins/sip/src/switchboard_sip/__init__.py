"""Switchboard's SIP telephony channel (screen pop, click-to-call, recording). See docs/sip.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchboard import Channel, hookimpl
from switchboard_sip.channel import SipCallSession, SipChannel, SipSettings

__all__ = ["PLUGIN", "SipCallSession", "SipChannel", "SipPlugin", "SipSettings"]


class SipPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "sip"

    def __init__(self) -> None:
        self.channel = SipChannel()

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(SipSettings)

    @hookimpl
    def register_channels(self, register: Callable[[Channel], None]) -> None:
        register(self.channel)


PLUGIN = SipPlugin()
