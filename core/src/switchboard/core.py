"""The assembled core: plugins, config, address book, store, inbox, outbox, calls, channels.

``await Switchboard.open(config_path)`` loads the plugins, checks the configuration against
their settings classes, opens and upgrades the store and syncs the configured agents.
``await sb.start_channels()`` starts the channels of configured plugins, each on its own:
one that fails to start is recorded as ``failing`` and the others run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard.address import Address, AddressBook
from switchboard.analytics import call_stats
from switchboard.backoff import Backoff
from switchboard.calls import CallLog
from switchboard.channels import Channel, ChannelContext, ChannelState, NotConfigured
from switchboard.config import Config, load_config
from switchboard.consumers import Consumers
from switchboard.errors import Invalid
from switchboard.events import (
    EventHub,
    PluginEventType,
    contact_created_events,
    record,
    to_json,
)
from switchboard.files import FileRoots
from switchboard.inbox import Inbox
from switchboard.models import Contact, EventType
from switchboard.nodes import Nodes
from switchboard.outbox import Outbox
from switchboard.plugins import Plugins
from switchboard.quarantine import Quarantine
from switchboard.relay import CallRelay
from switchboard.schema import PluginSchema, plugin_schema
from switchboard.search import CallSearch
from switchboard.service import NAME_MAX, ServiceAPI, one_line
from switchboard.singletons import Singletons
from switchboard.softphones import Softphones
from switchboard.store import AddressTaken, Store, address_t, interaction_t, load_contacts
from switchboard.supervisor import Supervisor
from switchboard.tasks import Tasks
from switchboard.templates import Templates

log = logging.getLogger("switchboard")
T = TypeVar("T")
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


TASK_STOP_TIMEOUT = 5.0
"""Seconds a channel's cancelled tasks get to finish before the channel is stopped anyway."""


@attrs.define
class ChannelHandle:
    plugin: str
    channel: Channel
    state: ChannelState = ChannelState.STOPPED
    last_error: str | None = None
    restarts: int = 0
    failure: asyncio.Future[str] | None = None
    #: The channel's background tasks (``ctx.spawn``), cancelled when it stops.
    tasks: Tasks = attrs.Factory(lambda: Tasks(log))
    #: The channel's supervised loops (``ctx.supervise``), stopped when it stops.
    loops: set[str] = attrs.Factory(set)
    supervisor: asyncio.Task[None] | None = None


async def load_plugins(only: Iterable[str] | None = None) -> tuple[Plugins, dict[str, Any]]:
    """Load the installed plugins and collect their settings classes."""
    plugins = Plugins()
    plugins.load_entry_points(only)
    return plugins, await settings_classes(plugins)


async def settings_classes(plugins: Plugins) -> dict[str, Any]:
    classes: dict[str, Any] = dict.fromkeys(plugins.names)
    for plugin, args in await plugins.hooks.register_settings():
        if len(args) != 1 or not attrs.has(args[0]):
            plugins.hook_error(plugin, "register_settings", "register() takes one attrs class")
            continue
        classes[plugin] = args[0]
    return classes


async def plugin_schemas(plugins: Plugins) -> list[PluginSchema]:
    """What the plugins registered with ``register_migrations`` (SchemaError if malformed)."""
    return [plugin_schema(p, args) for p, args in await plugins.hooks.register_migrations()]


class Switchboard(ServiceAPI):
    """The assembled core: the service API plugins and front ends call (docs/plugins.md)."""

    def __init__(self, config: Config, plugins: Plugins, store: Store) -> None:
        self.config = config
        self.plugins = plugins
        self.store = store
        self.addresses = AddressBook(config.core.default_region)
        self.inbox = Inbox(self)
        self.outbox = Outbox(self)
        self.calls = CallLog(self)
        #: Browser softphones the console connects, and the browser legs ringing them.
        self.softphones = Softphones()
        self.events = EventHub(self)
        #: Durable readers of the event log: the webhooks and plugins' (a CRM connector).
        self.consumers = Consumers(self)
        self.quarantine = Quarantine(self)
        #: The supervised background loops (outbox, event hub, webhooks...).
        self.loops = Supervisor()
        #: Work that runs on one runner at a time (event consumers), and who holds it.
        self.singletons = Singletons(self)
        self.nodes = Nodes(self)
        self.relay = CallRelay(self)
        #: The plugin that searches calls' content (``GET /api/calls?q=``), if one does.
        self.call_search: CallSearch | None = None
        self.channels: dict[str, ChannelHandle] = {}
        #: The plugins' own tables and migrations (``register_migrations``).
        self.schemas: list[PluginSchema] = []
        #: The message templates of ``[switchboard.templates]``; see :meth:`render`.
        self.templates = Templates(config.core.templates)
        #: The folders files are served and sent from (recordings, channels' files).
        self.file_roots = FileRoots(config.core.recordings_dir)

    @classmethod
    async def open(
        cls,
        config: Config | str | Path | None = None,
        *,
        plugins: Plugins | None = None,
        upgrade: bool = True,
    ) -> Switchboard:
        """Load plugins (unless given), read the config, open the store, register channels."""
        if plugins is None:
            plugins, classes = await load_plugins()
        else:
            classes = await settings_classes(plugins)
        if not isinstance(config, Config):
            errors = {e.plugin: e.error for e in plugins.errors}
            config = load_config(config, classes, plugin_errors=errors)
        schemas = await plugin_schemas(plugins)
        store = Store(config.core.database_url)
        if upgrade:
            try:
                store.upgrade(plugins=schemas)
            except BaseException:
                store.close()
                raise
        sb = cls(config, plugins, store)
        sb.schemas = schemas
        await sb._register_plugins_parts()
        store.sync_agents([a.to_agent() for a in config.core.agents])
        await plugins.hooks.configure(switchboard=sb)
        return sb

    async def _register_plugins_parts(self) -> None:
        for plugin, args in await self.plugins.hooks.register_address_kinds():
            try:
                self.addresses.register(*args)
            except (TypeError, ValueError) as exc:
                self.plugins.hook_error(plugin, "register_address_kinds", str(exc))
        for plugin, args in await self.plugins.hooks.register_channels():
            channel = args[0] if len(args) == 1 else None
            if not isinstance(channel, Channel):
                self.plugins.hook_error(
                    plugin,
                    "register_channels",
                    f"register() takes one Channel object, got {args!r}",
                )
                continue
            if channel.name in self.channels:
                other = self.channels[channel.name].plugin
                self.plugins.hook_error(
                    plugin,
                    "register_channels",
                    f"channel name {channel.name!r} is already taken by plugin {other!r}",
                )
                continue
            state = (
                ChannelState.NOT_CONFIGURED
                if plugin in self.config.unconfigured
                else ChannelState.STOPPED
            )
            handle = ChannelHandle(plugin, channel, state)
            handle.tasks.on_error = functools.partial(self._task_crashed, channel.name)
            self.channels[channel.name] = handle

    @property
    def channel_objects(self) -> dict[str, Channel]:
        return {name: h.channel for name, h in self.channels.items()}

    def running_channels(self) -> list[str]:
        return [n for n, h in self.channels.items() if h.state == ChannelState.RUNNING]

    def supervise(
        self, name: str, run: Callable[[], Awaitable[None]], *, one_runner: bool = False
    ) -> None:
        """Run a plugin's background work (``await run()``) as a supervised loop of the
        runner, listed in ``/api/health``'s ``loops`` under ``name`` (``PLUGIN:PART``): when
        it raises, the error is logged and shown, the service reports ``degraded``, and it
        starts again after a backoff. Call it from the ``startup`` hook (a command that only
        opens the core runs no loops); the loops stop when the runner stops.

        With ``one_runner``, of several runners on one PostgreSQL only one runs it at a
        time, and another takes it over when that one dies (``sb.singletons``,
        ``[switchboard.nodes] takeover_seconds``); the work's state must live in the
        database or upstream, since the next holder starts ``run()`` afresh."""
        self.loops.start(name, self.singletons.wrap(name, run) if one_runner else run)

    async def start_channels(self, names: Iterable[str] | None = None) -> None:
        """Start channels once each; one that fails is marked ``failing`` (no retry)."""
        for name in self._wanted(names):
            await self.start_channel(name)

    async def supervise_channels(
        self,
        names: Iterable[str] | None = None,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        """Start channels and keep them running: a channel that fails to start, or that
        reports a failure once running, is stopped and started again with exponential
        backoff; its state and last error show in ``/api/health``."""
        for name in self._wanted(names):
            handle = self.channels[name]
            handle.supervisor = asyncio.create_task(
                self._supervise(name, backoff_initial, backoff_max),
                name=f"switchboard-channel-{name}",
            )
        await asyncio.sleep(0)  # let each attempt its first start

    def _wanted(self, names: Iterable[str] | None) -> list[str]:
        wanted = set(names) if names is not None else None
        unknown = sorted((wanted or set()) - set(self.channels))
        if unknown:
            raise ValueError(
                f"unknown channel(s) {', '.join(unknown)}; "
                f"known: {', '.join(self.channels) or 'none'}"
            )
        return [
            name
            for name, h in self.channels.items()
            if (wanted is None or name in wanted)
            and h.state not in (ChannelState.NOT_CONFIGURED, ChannelState.RUNNING)
        ]

    async def _supervise(self, name: str, initial: float, maximum: float) -> None:
        handle = self.channels[name]
        backoff = Backoff(initial, maximum)
        while True:
            started = time.monotonic()
            if await self.start_channel(name):
                assert handle.failure is not None
                reason = await handle.failure
                if time.monotonic() - started > maximum:
                    backoff.succeeded()  # it had been running fine for a while
                delay = backoff.failed()
                handle.state = ChannelState.FAILING
                handle.last_error = reason
                log.error("channel %s failed: %s; restarting in %.1fs", name, reason, delay)
                await self._stop_one(name, ChannelState.FAILING)
            elif handle.state is ChannelState.NOT_CONFIGURED:
                return  # its settings do not ask for it
            else:
                delay = backoff.failed()
                log.warning("channel %s: next start in %.1fs", name, delay)
            await asyncio.sleep(delay)
            handle.restarts += 1

    async def start_channel(self, name: str) -> bool:
        handle = self.channels[name]
        handle.state = ChannelState.STARTING
        handle.failure = asyncio.get_running_loop().create_future()
        ctx = ChannelContext(self, name, handle.plugin, self.config.plugin_settings(handle.plugin))
        try:
            await handle.channel.start(ctx)
        except NotConfigured as exc:  # the settings do not ask for it: nothing to retry
            log.info("channel %s (plugin %s) is not configured: %s", name, handle.plugin, exc)
            await self._stop_one(name, ChannelState.NOT_CONFIGURED)
            handle.last_error = str(exc)
            return False
        except Exception as exc:
            handle.state = ChannelState.FAILING
            handle.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("channel %s (plugin %s) failed to start", name, handle.plugin)
            await self._stop_one(name, ChannelState.FAILING)
            return False
        if handle.failure.done():  # it failed while starting
            handle.state = ChannelState.FAILING
            handle.last_error = handle.failure.result()
            await self._stop_one(name, ChannelState.FAILING)
            return False
        handle.state = ChannelState.RUNNING
        handle.last_error = None
        return True

    def channel_failed(self, name: str, reason: str) -> None:
        """A running channel reports that it broke (called through ``ctx.fail``)."""
        handle = self.channels[name]
        if handle.failure is not None and not handle.failure.done():
            handle.failure.set_result(reason)
        if handle.supervisor is None:  # not supervised: just show it
            handle.state = ChannelState.FAILING
            handle.last_error = reason

    def _task_crashed(self, name: str, task: asyncio.Task[Any], exc: BaseException) -> None:
        """A channel's background task (``ctx.spawn``) raised: the channel failed."""
        logging.getLogger(f"switchboard.channel.{name}").error(
            "task %s crashed: %r", task.get_name(), exc
        )
        self.channel_failed(name, f"{type(exc).__name__}: {exc}")

    async def _stop_one(self, name: str, final: ChannelState) -> None:
        handle = self.channels[name]
        # a task that swallows its cancellation is left to channel.stop() below, which
        # closes what it reads from
        if handle.loops:  # (no names would stop every loop of the runner)
            for loop in await self.loops.stop(*handle.loops, timeout=TASK_STOP_TIMEOUT):
                log.error(
                    "channel %s: loop %s did not stop within %.0f s after cancel",
                    name,
                    loop,
                    TASK_STOP_TIMEOUT,
                )
            handle.loops.clear()
        for task in await handle.tasks.cancel_all(TASK_STOP_TIMEOUT):
            log.error(
                "channel %s: task %s did not stop within %.0f s after cancel",
                name,
                task.get_name(),
                TASK_STOP_TIMEOUT,
            )
        try:
            await handle.channel.stop()
        except Exception as exc:
            log.exception("channel %s failed to stop", name)
            handle.last_error = f"{type(exc).__name__}: {exc}"
        handle.state = final

    async def stop_channels(self) -> None:
        for handle in self.channels.values():
            if handle.supervisor is not None:
                handle.supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handle.supervisor
                handle.supervisor = None
        for name, handle in self.channels.items():
            if handle.state in (ChannelState.RUNNING, ChannelState.FAILING, ChannelState.STARTING):
                await self._stop_one(name, ChannelState.STOPPED)

    async def create_contact(
        self,
        name: str,
        addresses: Iterable[Address] = (),
        *,
        company: str | None = None,
        owner_agent_id: int | None = None,
    ) -> Contact:
        """Create a contact (its event is recorded with it); fires ``contact_created``.
        Raises :class:`AddressTaken` when an address belongs to another contact,
        ``Invalid`` for a name or company that is not one line of up to 300 characters."""
        one_line(name, "name", NAME_MAX, required=True)
        one_line(company, "company", NAME_MAX)
        addrs = list(addresses)

        def store() -> Contact:
            with self.store.write() as conn:
                for a in addrs:
                    owner = self.store.find_contact_id(a, conn)
                    if owner is not None:
                        raise AddressTaken(a, owner)
                contact = self.store.create_contact(
                    name, addrs, company=company, owner_agent_id=owner_agent_id, conn=conn
                )
                record(conn, contact_created_events([contact]))
                return contact

        contact = await asyncio.to_thread(store)
        self.events.notify()
        await self.plugins.hooks.contact_created(contact=contact)
        return contact

    async def link_addresses(self, known: Address, new: Address) -> Contact:
        """Two addresses are the same person (a Telegram user shared their phone number):
        make them one contact. When each already has its own contact, the one behind
        ``new`` is merged into the one behind ``known`` (timeline and addresses move; event
        ``contact.merged`` names the id that went away)."""
        merged = False

        def store() -> tuple[Contact, Contact | None]:
            nonlocal merged
            with self.store.write() as conn:
                a = self.store.find_contact_id(known, conn)
                b = self.store.find_contact_id(new, conn)
                created = None
                if a is None and b is None:
                    contact = self.store.create_contact(new.value, [new, known], conn=conn)
                    created = contact
                    record(conn, contact_created_events([contact]))
                    return contact, created
                if a is None:
                    assert b is not None
                    self.store.add_address_in(conn, b, known)
                    target = b
                elif b is None:
                    self.store.add_address_in(conn, a, new)
                    target = a
                else:
                    if a != b:
                        log.info("merging contact %d into %d (%s is %s)", b, a, new, known)
                        self.store.merge_contacts(conn, into=a, source=b)
                    target = a
                contact = load_contacts(conn, [target])[target]
                if a is not None and b is not None and a != b:
                    data = {"contact": to_json(contact), "merged_id": b}
                    record(conn, [(EventType.CONTACT_MERGED, data, None)])
                    merged = True
                return contact, None

        contact, created = await asyncio.to_thread(store)
        if created is not None or merged:
            self.events.notify()
        if created is not None:
            await self.plugins.hooks.contact_created(contact=created)
        return contact

    def plugin(self, name: str) -> Any:
        """The loaded plugin object registered as ``name`` (its entry point's object), or
        None: how one plugin uses another's public service when both are installed (the
        console shows the mailings plugin's figures through ``sb.plugin("mailings")``)."""
        return self.plugins.pm.get_plugin(name) if name in self.plugins.names else None

    async def transaction(self, work: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run ``work(conn)`` in a transaction on the store's database, in a worker thread,
        and return what it returns: how a plugin reads and writes its own tables
        (``register_migrations``). ``conn`` is a SQLAlchemy Core ``Connection``; the
        transaction commits when ``work`` returns and rolls back if it raises.
        ``write=False`` is for reads: no queueing behind writers on SQLite, and on
        PostgreSQL each statement runs on its own (no BEGIN/COMMIT round trips; statements
        that must agree with each other belong in a write transaction)."""

        def run() -> T:
            with self.store.write() if write else self.store.glance() as conn:
                return work(conn)

        result = await asyncio.to_thread(run)
        if write:
            self.events.notify()  # events recorded with publish_in go out now
        return result

    # What a plugin's transaction (``transaction``) may read and write of the core's data,
    # on the same connection: the tables behind these are the core's own.

    def contacts_in(self, conn: Connection, ids: Iterable[int]) -> dict[int, Contact]:
        """:meth:`contacts`, inside a transaction."""
        return load_contacts(conn, list(set(ids)))

    def addresses_in(
        self, conn: Connection, contact_ids: Iterable[int] | sa.Select[Any], kind: str
    ) -> dict[int, Address]:
        """Each contact's first address of ``kind`` (``email``, ``tel``...), by contact id;
        contacts without one are left out. ``contact_ids`` may be a SELECT of ids (the
        members of a plugin's list, say), so a large audience is one query."""
        ids = contact_ids if isinstance(contact_ids, sa.Select) else list(set(contact_ids))
        found: dict[int, Address] = {}
        for r in conn.execute(
            sa.select(address_t.c.contact_id, address_t.c.value)
            .where(address_t.c.kind == kind, address_t.c.contact_id.in_(ids))
            .order_by(address_t.c.id)
        ):
            found.setdefault(r.contact_id, Address(kind, r.value))
        return found

    def message_statuses(
        self, conn: Connection, interaction_ids: Iterable[int] | sa.Select[Any]
    ) -> dict[str, int]:
        """How many of these messages are ``queued``, ``sent``, ``failed``... (statuses
        with none are left out); ``interaction_ids`` may be a SELECT of ids."""
        ids = interaction_ids if isinstance(interaction_ids, sa.Select) else list(interaction_ids)
        rows = conn.execute(
            sa.select(interaction_t.c.status, sa.func.count())
            .where(interaction_t.c.id.in_(ids))
            .group_by(interaction_t.c.status)
        )
        return {str(status): int(n) for status, n in rows}

    async def contacts(self, ids: Iterable[int]) -> dict[int, Contact]:
        """The contact cards with these ids (with their addresses), by id; unknown ids are
        left out. One query, off the event loop."""

        def load() -> dict[int, Contact]:
            with self.store.read() as conn:
                return load_contacts(conn, list(set(ids)))

        return await asyncio.to_thread(load)

    async def call_stats(
        self, since: datetime, until: datetime, group_by: str = "agent"
    ) -> list[dict[str, Any]]:
        """Call figures per agent, per UTC day or per IVR node for ``[since, until)``
        (``GET /api/analytics/calls``; docs/api.md), with the configured service level."""
        sla = self.config.core.analytics.service_level_seconds
        return await asyncio.to_thread(call_stats, self.store, since, until, group_by, sla)

    async def publish(
        self,
        plugin: str,
        name: str,
        data: Mapping[str, Any],
        agents: Iterable[int] | None = None,
    ) -> int:
        """Publish an event of the plugin's own, ``<plugin>.<name>`` (``whatsapp.status``
        say), to the live stream and to webhooks that subscribed to it; ``agents`` limits
        it to those agents (and supervisors), None is for everyone. ``data`` must be JSON.
        Returns the event's id. Raises :class:`Invalid` for a name that is not
        ``[a-z][a-z0-9_]*`` or data that is not a JSON object."""
        return await self.transaction(
            lambda conn: self.publish_in(conn, plugin, name, data, agents)
        )

    def publish_in(
        self,
        conn: Connection,
        plugin: str,
        name: str,
        data: Mapping[str, Any],
        agents: Iterable[int] | None = None,
    ) -> int:
        """:meth:`publish` inside a plugin's transaction: the event commits with the
        plugin's rows, or not at all."""
        if not _EVENT_NAME.fullmatch(name):
            raise Invalid(
                f"event name {name!r}: expected [a-z][a-z0-9_]* (the type is plugin.name)"
            )
        try:
            body = json.loads(json.dumps(dict(data)))
        except (TypeError, ValueError) as exc:
            raise Invalid(f"event {plugin}.{name}: data is not JSON: {exc}") from None
        return record(conn, [(PluginEventType(f"{plugin}.{name}"), body, agents)])[0]

    async def close(self) -> None:
        await self.outbox.close()
        await self.stop_channels()
        await self.inbox.close()
        self.store.close()
