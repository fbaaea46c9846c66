"""Outgoing webhooks: every event, as a signed POST, at least once, in order.

Each webhook keeps a cursor in the store (the last event id it delivered) and sends the
events after it one by one: ``POST url`` with the JSON body ``{"id", "type",
"created_at", "data"}`` and the headers ``X-Switchboard-Event-Id``, ``X-Switchboard-Event``
and ``X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's
secret>``. A 2xx answer advances the cursor; anything else (or no answer within
``timeout``) is retried with exponential backoff, and after ``max_attempts`` the event is
set aside in ``webhook_failure`` and the next one goes. Each webhook runs on its own, so a
dead endpoint delays only itself. Receivers dedupe on the event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
import sqlalchemy as sa

from switchboard.backoff import Backoff
from switchboard.config import WebhookSettings
from switchboard.events import Event, cursor_t
from switchboard.models import utcnow
from switchboard.tables import WebhookFailureRow

if TYPE_CHECKING:
    from switchboard.core import Switchboard

log = logging.getLogger("switchboard.webhooks")

failure_t: sa.Table = WebhookFailureRow.__table__  # type: ignore[attr-defined]


def sign(secret: str, body: bytes) -> str:
    """The ``X-Switchboard-Signature`` value of a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    def __init__(
        self, core: Switchboard, settings: WebhookSettings, client: httpx.AsyncClient
    ) -> None:
        self.core = core
        self.s = settings
        self.client = client
        self._wakeup = asyncio.Event()
        self.delivered = 0
        self.failed = 0

    def wake(self) -> None:
        self._wakeup.set()

    def _cursor(self) -> tuple[int, int]:
        """(last delivered event id, attempts at the next one); new webhooks start now."""
        with self.core.store.write() as conn:
            row = conn.execute(sa.select(cursor_t).where(cursor_t.c.name == self.s.name)).first()
            if row is not None:
                return row.last_event_id, row.attempts
            start = int(
                conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM event")).scalar_one()
            )
            conn.execute(
                sa.insert(cursor_t).values(name=self.s.name, last_event_id=start, attempts=0)
            )
            return start, 0

    def _advance(self, event_id: int, failure: str | None = None) -> None:
        with self.core.store.write() as conn:
            conn.execute(
                sa.update(cursor_t)
                .where(cursor_t.c.name == self.s.name)
                .values(last_event_id=event_id, attempts=0, next_attempt_at=None, last_error=None)
            )
            if failure is not None:
                conn.execute(
                    sa.insert(failure_t).values(
                        name=self.s.name, event_id=event_id, error=failure, created_at=utcnow()
                    )
                )

    def _retry_later(self, attempts: int, error: str, delay: float) -> None:
        with self.core.store.write() as conn:
            conn.execute(
                sa.update(cursor_t)
                .where(cursor_t.c.name == self.s.name)
                .values(
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                )
            )

    async def run(self) -> None:
        last, attempts = await asyncio.to_thread(self._cursor)
        while True:
            events = await asyncio.to_thread(self.core.events.read_since, last, 200)
            if not events:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), 5.0)
                continue
            for event in events:
                if self.s.events and event.type not in self.s.events:
                    last = event.id
                    await asyncio.to_thread(self._advance, last)
                    continue
                attempts = await self._deliver(event, attempts)
                last, attempts = event.id, 0

    async def _deliver(self, event: Event, attempts: int) -> int:
        body = json.dumps(event.payload(), separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "x-switchboard-event-id": str(event.id),
            "x-switchboard-event": event.type,
            "x-switchboard-signature": sign(self.s.secret, body),
        }
        while True:
            attempts += 1
            try:
                response = await self.client.post(
                    self.s.url, content=body, headers=headers, timeout=self.s.timeout
                )
                error = None if response.is_success else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                await asyncio.to_thread(self._advance, event.id)
                self.delivered += 1
                return 0
            if attempts >= self.s.max_attempts:
                log.error(
                    "webhook %s: event %d given up after %d attempts: %s",
                    self.s.name,
                    event.id,
                    attempts,
                    error,
                )
                await asyncio.to_thread(self._advance, event.id, error)
                self.failed += 1
                return 0
            delay = Backoff(self.s.backoff_initial, self.s.backoff_max).delay(attempts)
            log.warning(
                "webhook %s: event %d attempt %d failed (%s); retry in %.1fs",
                self.s.name,
                event.id,
                attempts,
                error,
                delay,
            )
            await asyncio.to_thread(self._retry_later, attempts, error, delay)
            await asyncio.sleep(delay)


class Webhooks:
    """Runs one :class:`Webhook` task per configured webhook."""

    def __init__(self, core: Switchboard) -> None:
        self.core = core
        self.client = httpx.AsyncClient(follow_redirects=False)
        self.hooks = [Webhook(core, s, self.client) for s in core.config.core.webhooks]
        core.events.on_new_events(self._wake_all)

    def _wake_all(self) -> None:
        for hook in self.hooks:
            hook.wake()

    async def start(self) -> None:
        """Create missing cursors (a new webhook gets the events from now on), then run
        each webhook as a supervised loop (``webhook:NAME`` in ``/api/health``). Awaited
        during start-up, before the service takes requests, so "now" is well defined."""
        for hook in self.hooks:
            await asyncio.to_thread(hook._cursor)
        for hook in self.hooks:
            self.core.loops.start(f"webhook:{hook.s.name}", hook.run)

    async def stop(self) -> None:
        await self.core.loops.stop(*(f"webhook:{hook.s.name}" for hook in self.hooks))
        await self.client.aclose()
