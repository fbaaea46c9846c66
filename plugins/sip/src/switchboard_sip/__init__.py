"""Switchboard's SIP telephony channel (screen pop, click-to-call, recording). See docs/sip.md."""

from __future__ import annotations

from typing import Any

from switchboard import hookimpl
from switchboard_sip.channel import SipCallSession, SipChannel, SipSettings

__all__ = ["SipCallSession", "SipChannel", "SipSettings"]


@hookimpl
def register_settings(register: Any) -> None:
    register(SipSettings)


@hookimpl
def register_channels(register: Any) -> None:
    register(SipChannel())
