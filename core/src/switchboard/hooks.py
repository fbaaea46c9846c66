"""The core's calls of each hook, typed: ``plugins.hooks.call_ringing(call=..., contact=...)``.

Each method calls one hook of :mod:`switchboard.hookspecs` with its arguments by name, so
mypy catches a misspelled hook or a wrong argument in the core, and a test checks that
every hookspec has its method here with the same arguments. How implementations are
called (one at a time, failures contained, awaitables awaited) is :class:`Plugins`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter, FastAPI

    from switchboard.address import Address
    from switchboard.channels import CallHandler, OutboundMessage
    from switchboard.core import Switchboard
    from switchboard.models import Agent, CallRecord, Contact, Interaction
    from switchboard.plugins import Plugins

#: What a ``register_*`` hook collected: ``(plugin name, the arguments of one register call)``.
Registrations = list[tuple[str, tuple[Any, ...]]]


class Hooks:
    def __init__(self, plugins: Plugins) -> None:
        self._plugins = plugins

    # -- channel --------------------------------------------------------------------------

    async def register_channels(self) -> Registrations:
        return await self._plugins.collect("register_channels")

    async def message_received(self, *, interaction: Interaction, contact: Contact) -> None:
        await self._plugins.call("message_received", interaction=interaction, contact=contact)

    async def message_sent(self, *, interaction: Interaction, contact: Contact) -> None:
        await self._plugins.call("message_sent", interaction=interaction, contact=contact)

    async def message_failed(
        self, *, interaction: Interaction, contact: Contact, error: str
    ) -> None:
        await self._plugins.call(
            "message_failed", interaction=interaction, contact=contact, error=error
        )

    async def refuse_outbound(self, *, messages: list[OutboundMessage]) -> dict[int, str]:
        """Every implementation's refusals, merged (the first reason for an id wins)."""
        refused: dict[int, str] = {}
        for answer in await self._plugins.call("refuse_outbound", messages=messages):
            if not isinstance(answer, Mapping):
                continue
            for interaction_id, reason in answer.items():
                refused.setdefault(int(interaction_id), str(reason))
        return refused

    # -- contact --------------------------------------------------------------------------

    async def register_address_kinds(self) -> Registrations:
        return await self._plugins.collect("register_address_kinds")

    async def resolve_contact(self, *, address: Address) -> Contact | None:
        found: Contact | None = await self._plugins.call_first("resolve_contact", address=address)
        return found

    async def contact_created(self, *, contact: Contact) -> None:
        await self._plugins.call("contact_created", contact=contact)

    # -- call record ----------------------------------------------------------------------

    async def call_ringing(self, *, call: CallRecord, contact: Contact) -> None:
        await self._plugins.call("call_ringing", call=call, contact=contact)

    async def route_call(self, *, call: CallRecord, contact: Contact) -> CallHandler | None:
        handler: CallHandler | None = await self._plugins.call_first(
            "route_call", call=call, contact=contact
        )
        return handler

    async def call_answered(self, *, call: CallRecord, agent: Agent | None) -> None:
        await self._plugins.call("call_answered", call=call, agent=agent)

    async def call_ended(self, *, record: CallRecord) -> None:
        await self._plugins.call("call_ended", record=record)

    async def recording_saved(self, *, record: CallRecord) -> None:
        await self._plugins.call("recording_saved", record=record)

    # -- runner ---------------------------------------------------------------------------

    async def register_settings(self) -> Registrations:
        return await self._plugins.collect("register_settings")

    async def register_migrations(self) -> Registrations:
        return await self._plugins.collect("register_migrations")

    async def register_routes(self, *, router: APIRouter) -> None:
        await self._plugins.call("register_routes", router=router)

    async def configure(self, *, switchboard: Switchboard) -> None:
        await self._plugins.call("configure", switchboard=switchboard)

    async def register_commands(self, *, group: click.Group) -> None:
        await self._plugins.call("register_commands", group=group)

    async def startup(self, *, app: FastAPI) -> None:
        await self._plugins.call("startup", app=app)

    async def shutdown(self, *, app: FastAPI) -> None:
        await self._plugins.call("shutdown", app=app)
