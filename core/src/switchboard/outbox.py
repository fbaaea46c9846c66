"""Outgoing messages: a durable queue in the store, sent by a worker.

``enqueue`` writes the ``queued`` interaction and its outbox row in one transaction: once it
returns, the message survives a killed process. The worker claims due rows with a lease
(PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so several runners share the queue), sends each
through its channel, and in one transaction marks the interaction ``sent`` (or ``failed``)
and deletes the row. A process killed mid-send leaves a leased row that is sent again once
the lease runs out: delivery is at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from switchboard.address import Address
from switchboard.channels import Channel, OutboundMessage, PermanentSendError, TransientSendError
from switchboard.config import OutboxSettings
from switchboard.contacts import ContactResolver
from switchboard.models import (
    Direction,
    Interaction,
    InteractionKind,
    InteractionStatus,
    utcnow,
)
from switchboard.store import (
    StoreError,
    interaction_from_row,
    interaction_t,
    load_contacts,
    outbox_t,
)

if TYPE_CHECKING:
    from switchboard.core import Switchboard

log = logging.getLogger("switchboard.outbox")


def backoff_delay(
    attempt: int, settings: OutboxSettings, rng: random.Random | None = None
) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential, capped, ±10 % jitter."""
    base = min(settings.backoff_max, settings.backoff_initial * 2.0 ** (attempt - 1))
    jitter: float = (rng or random).random()
    return base * (0.9 + 0.2 * jitter)


class Outbox:
    def __init__(self, core: Switchboard) -> None:
        self.core = core
        self.settings = core.config.core.outbox
        self._wakeup = asyncio.Event()
        self._stopping = False

    # -- accepting ------------------------------------------------------------------------

    def enqueue(
        self,
        channel: str,
        *,
        contact_id: int | None = None,
        address: Address | str | None = None,
        text: str | None = None,
        subject: str | None = None,
        kind: InteractionKind = InteractionKind.MESSAGE,
        payload: Mapping[str, Any] | None = None,
    ) -> Interaction:
        """Accept a message for sending. Give ``contact_id`` (its address of the channel's
        kind is used), ``address`` (its contact is found or created), or both."""
        ch = self.core.channel_objects.get(channel)
        if ch is None:
            known = ", ".join(sorted(self.core.channel_objects)) or "none"
            raise StoreError(f"unknown channel {channel!r} (channels: {known})")
        addr = self.core.addresses.parse(address) if address is not None else None
        if addr is not None and addr.kind != ch.address_kind:
            raise StoreError(
                f"channel {channel!r} sends to {ch.address_kind} addresses, "
                f"not {addr.kind} ({addr})"
            )
        now = utcnow()
        with self.core.store.write() as conn:
            if contact_id is None:
                if addr is None:
                    raise StoreError("give contact_id or address")
                contact_id, _ = ContactResolver.resolve_one(conn, addr)
            elif addr is None:
                addr = _contact_address(conn, contact_id, ch.address_kind)
            row = conn.execute(
                sa.insert(interaction_t)
                .values(
                    contact_id=contact_id,
                    channel=channel,
                    direction=Direction.OUTBOUND.value,
                    kind=kind.value,
                    status=InteractionStatus.QUEUED.value,
                    address=str(addr),
                    text=text,
                    subject=subject,
                    created_at=now,
                    updated_at=now,
                )
                .returning(*interaction_t.c)
            ).one()
            conn.execute(
                sa.insert(outbox_t).values(
                    interaction_id=row.id,
                    channel=channel,
                    address=str(addr),
                    payload=dict(payload or {}),
                    attempts=0,
                    next_attempt_at=now,
                )
            )
        self._wakeup.set()
        return interaction_from_row(row)

    def depth(self) -> int:
        with self.core.store.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(outbox_t)).scalar_one())

    # -- sending --------------------------------------------------------------------------

    async def run(self) -> None:
        """Send due messages until :meth:`stop`; in-flight sends finish first."""
        self._stopping = False
        while not self._stopping:
            sent = await self.process_due()
            if sent == 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.settings.poll_interval)
                self._wakeup.clear()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def process_due(self, channels: Collection[str] | None = None) -> int:
        """One pass: claim due rows of the running channels, send them; return how many."""
        names = list(channels if channels is not None else self.core.running_channels())
        if not names:
            return 0
        claimed = await asyncio.to_thread(self._claim, names)
        if not claimed:
            return 0
        by_channel: dict[str, list[Any]] = {}
        for row in claimed:
            by_channel.setdefault(row.channel, []).append(row)
        await asyncio.gather(
            *(
                self._send_all(self.core.channel_objects[name], rows)
                for name, rows in by_channel.items()
            )
        )
        return len(claimed)

    def _claim(self, channels: list[str]) -> list[Any]:
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        with self.core.store.write() as conn:
            ids = (
                conn.execute(
                    sa.select(outbox_t.c.id)
                    .where(
                        outbox_t.c.channel.in_(channels),
                        outbox_t.c.next_attempt_at <= now,
                        sa.or_(outbox_t.c.locked_until.is_(None), outbox_t.c.locked_until < now),
                    )
                    .order_by(outbox_t.c.next_attempt_at, outbox_t.c.id)
                    .limit(self.settings.batch_size)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            if not ids:
                return []
            conn.execute(
                sa.update(outbox_t)
                .where(outbox_t.c.id.in_(ids))
                .values(locked_until=lease, attempts=outbox_t.c.attempts + 1)
            )
            return list(
                conn.execute(
                    sa.select(
                        outbox_t,
                        interaction_t.c.text,
                        interaction_t.c.subject,
                        interaction_t.c.contact_id,
                    )
                    .join(interaction_t, interaction_t.c.id == outbox_t.c.interaction_id)
                    .where(outbox_t.c.id.in_(ids))
                    .order_by(outbox_t.c.next_attempt_at, outbox_t.c.id)
                ).all()
            )

    async def _send_all(self, channel: Channel, rows: list[Any]) -> None:
        for row in rows:
            await self._send_one(channel, row)

    async def _send_one(self, channel: Channel, row: Any) -> None:
        kind, _, value = row.address.partition(":")
        message = OutboundMessage(
            interaction_id=row.interaction_id,
            channel=row.channel,
            address=Address(kind, value),
            text=row.text,
            subject=row.subject,
            payload=dict(row.payload or {}),
            attempt=row.attempts,
            contact_id=row.contact_id,
        )
        error: str | None = None
        retry_after: float | None = None
        permanent = False
        try:
            receipt = await channel.send(message)
        except PermanentSendError as exc:
            error, permanent = f"{exc}", True
        except TransientSendError as exc:
            error, retry_after = f"{exc}", exc.retry_after
        except Exception as exc:  # an unexpected error from a channel: retry, then give up
            log.exception(
                "channel %s: send of interaction %d raised", row.channel, row.interaction_id
            )
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            await asyncio.to_thread(self._mark_sent, row, receipt.external_id, receipt.meta)
            await self._fire("message_sent", row.interaction_id)
            return
        if permanent or row.attempts >= self.settings.max_attempts:
            reason = error if permanent else f"gave up after {row.attempts} attempts: {error}"
            await asyncio.to_thread(self._mark_failed, row, reason)
            await self._fire("message_failed", row.interaction_id, error=reason)
            return
        delay = (
            retry_after if retry_after is not None else backoff_delay(row.attempts, self.settings)
        )
        log.warning(
            "channel %s: interaction %d attempt %d failed (%s); retry in %.1fs",
            row.channel,
            row.interaction_id,
            row.attempts,
            error,
            delay,
        )
        await asyncio.to_thread(self._reschedule, row, error, delay)

    def _mark_sent(self, row: Any, external_id: str, meta: Mapping[str, Any]) -> None:
        with self.core.store.write() as conn:
            values: dict[str, Any] = {
                "status": InteractionStatus.SENT.value,
                "external_id": external_id,
                "updated_at": utcnow(),
            }
            if meta:
                values["meta"] = dict(meta)
            conn.execute(
                sa.update(interaction_t)
                .where(interaction_t.c.id == row.interaction_id)
                .values(values)
            )
            conn.execute(sa.delete(outbox_t).where(outbox_t.c.id == row.id))

    def _mark_failed(self, row: Any, reason: str) -> None:
        with self.core.store.write() as conn:
            conn.execute(
                sa.update(interaction_t)
                .where(interaction_t.c.id == row.interaction_id)
                .values(status=InteractionStatus.FAILED.value, error=reason, updated_at=utcnow())
            )
            conn.execute(sa.delete(outbox_t).where(outbox_t.c.id == row.id))

    def _reschedule(self, row: Any, error: str, delay: float) -> None:
        with self.core.store.write() as conn:
            conn.execute(
                sa.update(outbox_t)
                .where(outbox_t.c.id == row.id)
                .values(
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                    locked_until=None,
                    last_error=error,
                )
            )

    async def _fire(self, hook: str, interaction_id: int, **extra: Any) -> None:
        def load() -> tuple[Interaction, Any]:
            with self.core.store.read() as conn:
                row = conn.execute(
                    sa.select(interaction_t).where(interaction_t.c.id == interaction_id)
                ).one()
                return interaction_from_row(row), load_contacts(conn, [row.contact_id])

        interaction, contacts = await asyncio.to_thread(load)
        await self.core.plugins.call(
            hook, interaction=interaction, contact=contacts[interaction.contact_id], **extra
        )


def _contact_address(conn: sa.engine.Connection, contact_id: int, kind: str) -> Address:
    contact = load_contacts(conn, [contact_id]).get(contact_id)
    if contact is None:
        raise StoreError(f"no contact with id {contact_id}")
    for address in contact.addresses:
        if address.kind == kind:
            return address
    raise StoreError(f"contact {contact_id} has no {kind} address")
