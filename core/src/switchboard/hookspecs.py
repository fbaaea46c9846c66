"""Switchboard's hook specifications (pluggy project ``switchboard``).

Four families: channel, contact, call record, runner. An implementation takes any subset
of a hook's arguments and may return a value, or an awaitable that the core awaits.
Hooks are called one implementation at a time: one that raises is logged with its
plugin's name and the others still run. Every hook has a section in ``docs/hooks.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import click
    import sqlalchemy as sa
    from fastapi import APIRouter, FastAPI

    from switchboard.address import Address, Normalizer
    from switchboard.channels import CallHandler, Channel, OutboundMessage
    from switchboard.core import Switchboard
    from switchboard.models import Agent, CallRecord, Contact, Interaction

hookspec = pluggy.HookspecMarker("switchboard")


# -- channel ----------------------------------------------------------------------------


@hookspec
def register_channels(register: Callable[[Channel], None]) -> None:
    """Register channel objects: call ``register(channel)`` once per channel."""


@hookspec
def message_received(interaction: Interaction, contact: Contact) -> None:
    """An inbound message was saved on the contact's timeline."""


@hookspec
def message_sent(interaction: Interaction, contact: Contact) -> None:
    """An outbound message was handed to its channel, which accepted it."""


@hookspec
def message_failed(interaction: Interaction, contact: Contact, error: str) -> None:
    """An outbound message was given up on: a permanent error or too many retries."""


@hookspec
def refuse_outbound(messages: list[OutboundMessage]) -> Mapping[int, str] | None:
    """The outbox is about to send ``messages`` (one channel's due batch): return
    ``{interaction_id: reason}`` for those that must not go (they fail at once with the
    reason, no retry), or None. Called once per batch, so one query can answer for all."""


# -- contact ----------------------------------------------------------------------------


@hookspec
def register_address_kinds(register: Callable[[str, Normalizer], None]) -> None:
    """Add address kinds: call ``register(kind, normalizer)`` for each."""


@hookspec(firstresult=True)
def resolve_contact(address: Address) -> Contact | None:
    """Return the contact behind an address (an external CRM answers first), or None."""


@hookspec
def contact_created(contact: Contact) -> None:
    """A contact was created in the store."""


# -- call record ------------------------------------------------------------------------


@hookspec
def call_ringing(call: CallRecord, contact: Contact) -> None:
    """A call started ringing: the screen pop, fired before anyone answers."""


@hookspec(firstresult=True)
def route_call(call: CallRecord, contact: Contact) -> CallHandler | None:
    """Return the handler that takes a ringing call (e.g. an IVR flow), or None."""


@hookspec
def call_answered(call: CallRecord, agent: Agent | None) -> None:
    """A call was answered (by an agent, or by an IVR when ``agent`` is None)."""


@hookspec
def call_ended(record: CallRecord) -> None:
    """A call ended; ``record`` has its disposition, times and IVR path."""


@hookspec
def recording_saved(record: CallRecord) -> None:
    """A call's recording was stored; ``record.recording`` has path, duration, sha256."""


# -- runner -----------------------------------------------------------------------------


@hookspec
def register_settings(register: Callable[[type[Any]], None]) -> None:
    """Register the plugin's settings: ``register(SettingsClass)`` for ``[plugins.NAME]``."""


@hookspec
def register_migrations(register: Callable[[str | Path, sa.MetaData | None], None]) -> None:
    """Declare the plugin's own tables: ``register(versions, metadata=None)`` with the
    folder of its Alembic revisions and the ``MetaData`` holding its tables."""


@hookspec
def register_routes(router: APIRouter) -> None:
    """Add HTTP routes to the runner: ``router`` is a FastAPI ``APIRouter``."""


@hookspec
def configure(switchboard: Switchboard) -> None:
    """The Switchboard is open (settings read, store ready, channels registered, not yet
    started). Keep what the plugin needs of it, e.g. its own settings:
    ``switchboard.config.plugin_settings(NAME)``."""


@hookspec
def register_commands(group: click.Group) -> None:
    """Add subcommands to the ``switchboard`` command line: ``group`` is its click group."""


@hookspec
def startup(app: FastAPI) -> None:
    """The runner has started: store ready, channels about to start."""


@hookspec
def shutdown(app: FastAPI) -> None:
    """The runner is stopping: channels stopped, store still open."""
