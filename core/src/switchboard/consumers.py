"""Durable readers of the event log: the webhooks, and plugins' own (a CRM connector).

An :class:`EventConsumer` keeps a cursor in the store (the last event it handled, table
``webhook_cursor``) and hands the events after it to its handler one by one, in order, at
least once: a handler that raises is called again with the same event after a backoff
(the attempts and the error kept with the cursor, so a restart goes on where it was),
and the next event waits. :class:`SkipEvent` sets one event aside for good (the
``webhook_failure`` table, with the reason) and the next one goes; so does reaching
``max_attempts`` when one is set. Each consumer runs as a supervised loop of its own: a
slow or dead far side delays only its own consumer, and its lag and last error show in
``/api/health`` and ``/metrics``.

A plugin adds one from its ``configure(switchboard)`` hook::

    switchboard.consumers.add("acme-crm", self.push, types={"call.ringing", "call.ended"})

and the runner starts it (loop ``consumer:acme-crm``); a command that opens the core
without the runner does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from switchboard.backoff import Backoff
from switchboard.events import Event, cursor_t
from switchboard.models import utcnow
from switchboard.tables import WebhookFailureRow

if TYPE_CHECKING:
    from switchboard.core import Switchboard

log = logging.getLogger("switchboard.consumers")

failure_t: sa.Table = WebhookFailureRow.__table__  # type: ignore[attr-defined]

Handler = Callable[[Event], Awaitable[None]]

#: Failed attempts in a row at one event after which a consumer makes health degraded.
STUCK_AFTER = 3


class SkipEvent(Exception):
    """Raised by a consumer's handler: this event can never be handled (a far side's
    answer of a shape it cannot read). It is set aside with the reason and the consumer
    goes on with the next."""


class EventConsumer:
    """One durable reader of the event log (see the module's text). ``name`` is its
    cursor's key; ``types`` the event types it wants (None: all; the others are passed
    over without a call); ``max_attempts`` None keeps trying an event until it goes."""

    def __init__(
        self,
        core: Switchboard,
        name: str,
        handle: Handler,
        *,
        types: Iterable[str] | None = None,
        max_attempts: int | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        batch: int = 200,
        save_every: float = 0.0,
    ) -> None:
        self.core = core
        self.name = name
        self.handle = handle
        self.types = frozenset(types) if types else None
        self.max_attempts = max_attempts
        self.backoff = Backoff(backoff_initial, backoff_max)
        self.batch = batch
        self.position = 0  # the last event handled (or passed over)
        self.attempts = 0  # at the event after it
        self.last_error: str | None = None
        self.delivered = 0
        self.failed = 0
        self._wakeup = asyncio.Event()
        #: Seconds between two writes of the cursor (0: after every event). A consumer
        #: whose pushes are idempotent (an id map) saves a write per event this way; after
        #: a crash, the events of the last ``save_every`` seconds come again.
        self.save_every = save_every
        self._saved_at = 0.0
        self._unsaved = False  # handled (or passed over) past the saved cursor

    def wake(self) -> None:
        self._wakeup.set()

    def lag(self) -> int:
        """Events written after the last one this consumer handled."""
        return max(0, self.core.events.last_id - self.position)

    def health(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "lag": self.lag(),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "delivered": self.delivered,
            "failed": self.failed,
        }

    def cursor(self) -> tuple[int, int]:
        """(last handled event id, attempts at the next one), created at the newest event
        when this consumer is new: it gets the events from now on."""
        with self.core.store.write() as conn:
            row = conn.execute(sa.select(cursor_t).where(cursor_t.c.name == self.name)).first()
            if row is not None:
                self.position, self.attempts = row.last_event_id, row.attempts
                self.last_error = row.last_error
                return self.position, self.attempts
            start = int(
                conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM event")).scalar_one()
            )
            conn.execute(
                sa.insert(cursor_t).values(name=self.name, last_event_id=start, attempts=0)
            )
            self.position, self.attempts = start, 0
            return start, 0

    def _advance(self, event_id: int, failure: str | None = None) -> None:
        with self.core.store.write() as conn:
            conn.execute(
                sa.update(cursor_t)
                .where(cursor_t.c.name == self.name)
                .values(last_event_id=event_id, attempts=0, next_attempt_at=None, last_error=None)
            )
            if failure is not None:
                conn.execute(
                    sa.insert(failure_t).values(
                        name=self.name, event_id=event_id, error=failure, created_at=utcnow()
                    )
                )

    def _retry_later(self, attempts: int, error: str, delay: float) -> None:
        with self.core.store.write() as conn:
            conn.execute(
                sa.update(cursor_t)
                .where(cursor_t.c.name == self.name)
                .values(
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                )
            )

    async def run(self) -> None:
        """Hand every event after the cursor to the handler, then wait for more."""
        await asyncio.to_thread(self.cursor)
        while True:
            events = await asyncio.to_thread(self.core.events.read_since, self.position, self.batch)
            if not events:
                if self._unsaved:  # idle: the position handled so far is saved now
                    await self._save(self.position)
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), 5.0)
                continue
            for event in events:
                if self.types is not None and event.type not in self.types:
                    self._unsaved = True  # passed over: saved with the next write
                else:
                    await self._one(event)  # writes the cursor: the passed-over ones too
                self.position, self.attempts = event.id, 0
            if self._unsaved and self._due():
                await self._save(self.position)

    def _due(self) -> bool:
        return time.monotonic() - self._saved_at >= self.save_every

    async def _save(self, event_id: int) -> None:
        await asyncio.to_thread(self._advance, event_id)
        self._saved_at, self._unsaved = time.monotonic(), False

    async def _one(self, event: Event) -> None:
        while True:
            self.attempts += 1
            try:
                await self.handle(event)
            except SkipEvent as exc:
                await self._give_up(event, f"skipped: {exc}"[:2000])
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:2000]
            else:
                if self._due():
                    await self._save(event.id)
                else:  # save_every: saved with a later event, or when idle
                    self._unsaved = True
                self.delivered += 1
                self.last_error = None
                return
            self.last_error = error
            if self.max_attempts is not None and self.attempts >= self.max_attempts:
                await self._give_up(event, f"{error} (after {self.attempts} attempts)")
                return
            delay = self.backoff.delay(self.attempts)
            log.warning(
                "%s: event %d attempt %d failed (%s); retry in %.1fs",
                self.name,
                event.id,
                self.attempts,
                error,
                delay,
            )
            await asyncio.to_thread(self._retry_later, self.attempts, error, delay)
            await asyncio.sleep(delay)

    async def _give_up(self, event: Event, reason: str) -> None:
        log.error("%s: event %d (%s) set aside: %s", self.name, event.id, event.type, reason)
        await asyncio.to_thread(self._advance, event.id, reason)
        self._saved_at, self._unsaved = time.monotonic(), False
        self.failed += 1
        self.last_error = reason


class Consumers:
    """The event consumers of one Switchboard: plugins' (``add``) and the webhooks'."""

    def __init__(self, core: Switchboard) -> None:
        self.core = core
        self.all: dict[str, tuple[str, EventConsumer]] = {}  # cursor name: (loop, consumer)
        core.events.on_new_events(self._wake_all)

    def add(
        self,
        name: str,
        handle: Handler,
        *,
        types: Iterable[str] | None = None,
        max_attempts: int | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        save_every: float = 0.0,
    ) -> EventConsumer:
        """A plugin's consumer ``name`` (its cursor is ``consumer:NAME``, its loop in
        ``/api/health`` too), started with the runner. ``handle(event)`` returns when the
        event is handled; it raises to have it again after a backoff, or
        :class:`SkipEvent` to set it aside. ``save_every``: see :class:`EventConsumer`."""
        key = f"consumer:{name}"
        return self.add_named(
            key,
            key,
            handle,
            types=types,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            save_every=save_every,
        )

    def add_named(
        self,
        key: str,
        loop: str,
        handle: Handler,
        *,
        types: Iterable[str] | None = None,
        max_attempts: int | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        save_every: float = 0.0,
    ) -> EventConsumer:
        """A consumer with the cursor ``key`` and the loop name ``loop`` (the webhooks keep
        their own names: their cursors predate plugins' consumers)."""
        if key in self.all:
            raise ValueError(f"an event consumer named {key!r} exists already")
        consumer = EventConsumer(
            self.core,
            key,
            handle,
            types=types,
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            save_every=save_every,
        )
        self.all[key] = (loop, consumer)
        return consumer

    def _wake_all(self) -> None:
        for _, consumer in self.all.values():
            consumer.wake()

    def names(self) -> list[str]:
        """The cursor names of every consumer (event retention keeps what they lack)."""
        return list(self.all)

    async def start(self) -> None:
        """Create missing cursors (a new consumer gets the events from now on), then run
        each as a supervised loop. Awaited during start-up, before the service takes
        requests, so "now" is well defined."""
        for _, consumer in self.all.values():
            await asyncio.to_thread(consumer.cursor)
        for loop, consumer in self.all.values():  # on one runner of several at a time
            self.core.loops.start(loop, self.core.singletons.wrap(loop, consumer.run))

    async def stop(self) -> None:
        await self.core.loops.stop(*(loop for loop, _ in self.all.values()))

    def health(self) -> dict[str, dict[str, Any]]:
        return {key: consumer.health() for key, (_, consumer) in self.all.items()}

    def stuck(self) -> list[str]:
        """Consumers whose next event failed ``STUCK_AFTER`` times in a row (a CRM or
        webhook refusing us, not a blip): ``/api/health`` is ``degraded`` while any is."""
        return [key for key, (_, c) in self.all.items() if c.attempts >= STUCK_AFTER]
