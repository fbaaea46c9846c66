"""Events: ``message.received``, ``call.ringing``... for the live stream and the webhooks.

Events are rows of the ``event`` table, written by :func:`record` inside the transaction
that makes the change they report. The :class:`EventHub` tails that table (woken at once
by commits in this process, polling for other processes) and hands each new event to its
subscribers (SSE clients, webhook dispatchers). Anyone who knows the last id it saw can
read on from there: ``Last-Event-ID`` resume has no gaps.

On PostgreSQL, sequence values are handed out before commit, so two transactions could
commit their events out of id order and a tailer could step over the earlier id. Event
writers therefore take a transaction-scoped advisory lock: events commit in id order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NewType

import attrs
import cattrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard.address import Address
from switchboard.models import Contact, EventType, utcnow
from switchboard.store import insert_many
from switchboard.tables import EventRow, WebhookCursorRow

if TYPE_CHECKING:
    from switchboard.core import Switchboard

log = logging.getLogger("switchboard.events")

event_t: sa.Table = EventRow.__table__  # type: ignore[attr-defined]
cursor_t: sa.Table = WebhookCursorRow.__table__  # type: ignore[attr-defined]

_EVENT_LOCK_ID = 0x5B0A_2D00_0002
#: On PostgreSQL, the channel every runner LISTENs on: a commit that wrote events wakes
#: every runner's hub at once (the event table stays the record and the resume point).
NOTIFY_CHANNEL = "switchboard_events"

json_converter = cattrs.Converter()
json_converter.register_unstructure_hook(datetime, lambda d: d.isoformat())
json_converter.register_unstructure_hook(Address, str)
json_converter.register_unstructure_hook_func(
    lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda e: e.value
)


def to_json(obj: Any) -> Any:
    """JSON-ready data of a value object (datetimes in ISO 8601, addresses as text)."""
    return json_converter.unstructure(obj)


@attrs.frozen
class Event:
    id: int
    type: str
    data: dict[str, Any]
    agents: tuple[int, ...] | None
    created_at: datetime

    def visible_to(self, agent_id: int | None, sees_all: bool) -> bool:
        """Agent-specific events (``agents`` set) go to those agents; the rest to all."""
        return sees_all or self.agents is None or (agent_id is not None and agent_id in self.agents)

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "created_at": self.created_at.isoformat(),
            "data": self.data,
        }


def _event(row: Any) -> Event:
    return Event(
        id=row.id,
        type=row.type,
        data=dict(row.data or {}),
        agents=None if row.agents is None else tuple(row.agents),
        created_at=row.created_at,
    )


#: The type of an event a plugin publishes: ``<plugin>.<name>`` (see
#: :meth:`Switchboard.publish`); the core's own are :class:`EventType`.
PluginEventType = NewType("PluginEventType", str)

EventSpec = tuple[EventType | PluginEventType, Mapping[str, Any], Iterable[int] | None]
"""An event to record: (type, data, the agents it is meant for or None for everyone)."""


def record(conn: Connection, events: Iterable[EventSpec]) -> list[int]:
    """Write events ``(type, data, agents or None)`` in the caller's transaction; their
    ids, in order."""
    rows = [
        {
            "type": t,
            "data": dict(d),
            "agents": None if a is None else sorted(set(a)),
            "created_at": utcnow(),
        }
        for t, d, a in events
    ]
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _EVENT_LOCK_ID})
        # delivered when (and only if) the transaction commits; one per transaction
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    return insert_many(conn, event_t, rows)


def contact_created_events(contacts: Iterable[Contact]) -> list[EventSpec]:
    return [(EventType.CONTACT_CREATED, {"contact": to_json(c)}, None) for c in contacts]


class Subscription:
    """A subscriber's queue. ``overflowed`` is set when it fell too far behind: the
    subscriber should stop and, if it wants, read on from its last id."""

    def __init__(self, accepts: Callable[[Event], bool], size: int) -> None:
        self.accepts = accepts
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.overflowed = asyncio.Event()
        self.last_put = 0  # the id of the last event queued for it
        self.last_taken = 0  # ...and of the last one it took

    async def get(self) -> Event:
        """The next event (consumers take events with this, so the hub knows how far each
        one has read: see :meth:`EventHub.delivered`)."""
        event = await self.queue.get()
        self.last_taken = event.id
        return event

    def has_taken(self, event_id: int) -> bool:
        """Whether it has taken every event up to ``event_id`` that was queued for it."""
        return self.last_taken >= min(self.last_put, event_id)


class EventHub:
    def __init__(self, core: Switchboard, *, poll_interval: float = 1.0) -> None:
        self.core = core
        self.poll_interval = poll_interval
        self.last_id = 0
        self._started = False
        self._subs: set[Subscription] = set()
        self._wakeup = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self.counts: collections.Counter[str] = collections.Counter()

    # -- reading --------------------------------------------------------------------------

    def read_since(self, after_id: int, limit: int = 1000) -> list[Event]:
        with self.core.store.read() as conn:
            rows = conn.execute(
                sa.select(event_t)
                .where(event_t.c.id > after_id)
                .order_by(event_t.c.id)
                .limit(limit)
            ).all()
        return [_event(r) for r in rows]

    def current_id(self) -> int:
        with self.core.store.read() as conn:
            return int(
                conn.execute(sa.select(sa.func.coalesce(sa.func.max(event_t.c.id), 0))).scalar_one()
            )

    # -- subscribing ----------------------------------------------------------------------

    def subscribe(self, accepts: Callable[[Event], bool], size: int = 1000) -> Subscription:
        sub = Subscription(accepts, size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def delivered(self, event_id: int, timeout: float = 0.25) -> bool:
        """Wait until the hub has read ``event_id`` and every live stream has taken it (so
        its bytes are on their way), at most ``timeout`` seconds; whether it got there.
        A channel awaits this between recording a call and ringing phones: the screen
        pop leaves before any phone rings, and a stalled hub or reader delays a call by
        ``timeout`` at most."""
        if not self._started:  # no hub runs in this process (a script, a test): no stream
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._wakeup.set()
        while True:
            if self.last_id >= event_id and all(s.has_taken(event_id) for s in self._subs):
                await asyncio.sleep(0)  # the stream writers run before we go on
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.001)

    def on_new_events(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (no arguments) whenever new events were read."""
        self._listeners.append(listener)

    def notify(self) -> None:
        """Something committed events: read them now rather than at the next poll."""
        self._wakeup.set()

    # -- tailing --------------------------------------------------------------------------

    async def run(self) -> None:
        """Tail the event log until cancelled. A read that fails raises: the runner's
        supervisor shows the hub failing and starts it again, and it resumes after the
        last event it handed out (none is skipped)."""
        if not self._started:
            self.last_id = await asyncio.to_thread(self.current_id)
            self._started = True
        while True:
            self._wakeup.clear()
            events = await asyncio.to_thread(self.read_since, self.last_id)
            if events:
                self.last_id = events[-1].id
                self._dispatch(events)
                if len(events) >= 1000:
                    continue  # more waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)

    async def listen(self) -> None:
        """On PostgreSQL: LISTEN for other runners' (and this one's) event commits on a
        connection of its own and wake the hub for each, so an event written on one node
        reaches every node's streams and webhooks at once, not at the next poll. A lost
        connection raises: the supervisor shows ``events:listen`` failing and starts it
        again, while the poll (``poll_interval``) still reads every event."""
        async with await self.core.store.listen_connection() as conn:
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._wakeup.set()  # what was committed before the LISTEN took hold
            async for _ in conn.notifies():
                self._wakeup.set()

    def _dispatch(self, events: list[Event]) -> None:
        for sub in list(self._subs):
            for event in events:
                if not sub.accepts(event):
                    continue
                try:
                    sub.queue.put_nowait(event)
                    sub.last_put = event.id
                except asyncio.QueueFull:
                    sub.overflowed.set()
                    self._subs.discard(sub)
                    break
        self.counts.update(e.type for e in events)
        for listener in self._listeners:
            listener()

    # -- retention ------------------------------------------------------------------------

    def prune(self, older_than_days: float, batch: int = 5000) -> int:
        """Delete the events older than ``older_than_days`` that every event consumer (each
        webhook, each plugin's) has handled: one that is behind keeps its events. Returns
        how many; deletes in batches, so other writers wait at most one batch."""
        cutoff = utcnow() - timedelta(days=older_than_days)
        hooks = {w.name for w in self.core.config.core.webhooks} | set(self.core.consumers.names())
        total = 0
        while True:
            with self.core.store.write() as conn:
                old = sa.select(event_t.c.id).where(event_t.c.created_at < cutoff)
                if hooks:
                    floor = conn.execute(
                        sa.select(sa.func.min(cursor_t.c.last_event_id)).where(
                            cursor_t.c.name.in_(sorted(hooks))
                        )
                    ).scalar()
                    old = old.where(event_t.c.id <= (floor or 0))
                ids = list(conn.execute(old.order_by(event_t.c.id).limit(batch)).scalars())
                if ids:
                    conn.execute(sa.delete(event_t).where(event_t.c.id.in_(ids)))
            total += len(ids)
            if len(ids) < batch:
                return total

    async def prune_forever(self) -> None:
        """The pruning loop (``[switchboard.events]``): at start, then every
        ``prune_interval`` seconds; ``retention_days = 0`` keeps everything."""
        settings = self.core.config.core.events
        while True:
            if settings.retention_days > 0:
                pruned = await asyncio.to_thread(self.prune, settings.retention_days)
                if pruned:
                    log.info(
                        "event log: %d events older than %g days pruned",
                        pruned,
                        settings.retention_days,
                    )
            await asyncio.sleep(settings.prune_interval)
