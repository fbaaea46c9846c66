"""Switchboard's mailings: lists of contacts, a template sent to a list on any channel,
open/click/reply/bounce tracking and RFC 8058 one-click unsubscribe. See docs/mailings.md.

Everything here stands on the core's service API: the plugin's own tables and migration
(``register_migrations``), its routes (``register_routes``), the outbox's ``queue_in``
inside its transaction, and the hooks ``message_received`` (replies), ``message_failed``
(bounces) and ``refuse_outbound`` (no mailing to whoever unsubscribed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Any

import click
from fastapi import APIRouter

from switchboard import Contact, Interaction, OutboundMessage, Switchboard, hookimpl
from switchboard_mailings import tables
from switchboard_mailings.links import Links
from switchboard_mailings.mailings import UNSUBSCRIBED, MailingError, Mailings
from switchboard_mailings.settings import MailingSettings

__all__ = [
    "PLUGIN",
    "UNSUBSCRIBED",
    "Links",
    "MailingError",
    "MailingSettings",
    "Mailings",
    "MailingsPlugin",
]


class MailingsPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "mailings"

    def __init__(self) -> None:
        #: The service, once the runner configured the plugin (None before).
        self.mailings: Mailings | None = None

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(MailingSettings)

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(files("switchboard_mailings") / "migrations", tables.metadata)

    @hookimpl
    def configure(self, switchboard: Switchboard) -> None:
        settings = switchboard.config.plugin_settings(self.plugin_name)
        if not isinstance(settings, MailingSettings):
            settings = MailingSettings()
        self.mailings = Mailings(switchboard, settings)

    @hookimpl
    def register_routes(self, router: APIRouter) -> None:
        if self.mailings is not None:
            from switchboard_mailings.routes import api_router, tracking_router

            router.include_router(api_router(self.mailings))
            router.include_router(tracking_router(self.mailings))

    @hookimpl
    def register_commands(self, group: click.Group) -> None:
        from switchboard_mailings.commands import mailings_commands

        group.add_command(mailings_commands)

    @hookimpl
    async def message_received(self, interaction: Interaction, contact: Contact) -> None:
        if self.mailings is not None:
            await self.mailings.note_reply(interaction)

    @hookimpl
    async def message_failed(self, interaction: Interaction, error: str) -> None:
        if self.mailings is not None:
            await self.mailings.note_bounce(interaction)

    @hookimpl
    async def refuse_outbound(self, messages: list[OutboundMessage]) -> Mapping[int, str]:
        if self.mailings is None:
            return {}
        return await self.mailings.refusals(messages)


PLUGIN = MailingsPlugin()
