"""Switchboard's email channel. See docs/email.md."""

from __future__ import annotations

from typing import Any

from switchboard import hookimpl
from switchboard_email.channel import EmailChannel, EmailSettings

__all__ = ["EmailChannel", "EmailSettings"]


@hookimpl
def register_settings(register: Any) -> None:
    register(EmailSettings)


@hookimpl
def register_channels(register: Any) -> None:
    register(EmailChannel())


@hookimpl
def register_commands(group: Any) -> None:
    from switchboard_email.commands import email_commands

    group.add_command(email_commands)
