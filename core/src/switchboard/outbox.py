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

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard.address import Address
from switchboard.channels import Channel, OutboundMessage, PermanentSendError, TransientSendError
from switchboard.config import OutboxSettings
from switchboard.contacts import ContactResolver
from switchboard.events import contact_created_events, record, to_json
from switchboard.groupcommit import GroupCommit
from switchboard.models import (
    Contact,
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
        self._accepted: GroupCommit[_Request, tuple[Interaction, Contact | None]] = GroupCommit(
            self._accept, name="switchboard-outbox-accept"
        )

    async def close(self) -> None:
        self.stop()
        await self._accepted.close()

    # -- accepting ------------------------------------------------------------------------

    async def enqueue(
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
        """Accept a message for sending; it is committed when this returns.

        Give ``contact_id`` (its address of the channel's kind is used), ``address`` (its
        contact is found or created), or both. Raises :class:`StoreError` (unknown channel
        or contact, no address of the right kind) or :class:`AddressError`; nothing is
        stored then. Concurrent calls are committed together (group commit)."""
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
        if contact_id is None and addr is None:
            raise StoreError("give contact_id or address")
        request = _Request(
            channel, ch.address_kind, contact_id, addr, text, subject, kind, dict(payload or {})
        )
        interaction, created = await self._accepted.submit(request)
        if created is not None:
            await self.core.plugins.call("contact_created", contact=created)
        return interaction

    async def _accept(
        self, batch: list[_Request]
    ) -> list[tuple[Interaction, Contact | None] | BaseException]:
        def store() -> list[tuple[Interaction, Contact | None] | BaseException]:
            with self.core.store.write() as conn:
                out = [self._insert(conn, r) for r in batch]
                created = [o[1] for o in out if isinstance(o, tuple) and o[1] is not None]
                record(conn, contact_created_events(created))
                return out

        outcomes = await asyncio.to_thread(store)
        self._wakeup.set()
        self.core.events.notify()
        return outcomes

    def _insert(
        self, conn: Connection, r: _Request
    ) -> tuple[Interaction, Contact | None] | BaseException:
        created: Contact | None = None
        contact_id, addr = r.contact_id, r.address
        try:
            if contact_id is None:
                assert addr is not None
                contact_id, was_created = ContactResolver.resolve_one(conn, addr)
                if was_created:
                    created = load_contacts(conn, [contact_id])[contact_id]
            elif addr is None:
                addr = _contact_address(conn, contact_id, r.address_kind)
        except StoreError as exc:
            return exc
        now = utcnow()
        row = conn.execute(
            sa.insert(interaction_t)
            .values(
                contact_id=contact_id,
                channel=r.channel,
                direction=Direction.OUTBOUND.value,
                kind=r.kind.value,
                status=InteractionStatus.QUEUED.value,
                address=str(addr),
                text=r.text,
                subject=r.subject,
                created_at=now,
                updated_at=now,
            )
            .returning(*interaction_t.c)
        ).one()
        conn.execute(
            sa.insert(outbox_t).values(
                interaction_id=row.id,
                channel=r.channel,
                address=str(addr),
                payload=r.payload,
                attempts=0,
                next_attempt_at=now,
            )
        )
        return interaction_from_row(row), created

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
            done = await asyncio.to_thread(
                self._finish, row, receipt.external_id, receipt.meta, None
            )
            await self.core.plugins.call("message_sent", interaction=done[0], contact=done[1])
            return
        if permanent or row.attempts >= self.settings.max_attempts:
            reason = error if permanent else f"gave up after {row.attempts} attempts: {error}"
            done = await asyncio.to_thread(self._finish, row, None, {}, reason)
            await self.core.plugins.call(
                "message_failed", interaction=done[0], contact=done[1], error=reason
            )
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

    def _finish(
        self, row: Any, external_id: str | None, meta: Mapping[str, Any], failure: str | None
    ) -> tuple[Interaction, Contact]:
        """Mark the interaction sent (or failed), drop the outbox row, record the event."""
        values: dict[str, Any] = {"updated_at": utcnow()}
        if failure is None:
            values.update(status=InteractionStatus.SENT.value, external_id=external_id)
            if meta:
                values["meta"] = dict(meta)
        else:
            values.update(status=InteractionStatus.FAILED.value, error=failure)
        with self.core.store.write() as conn:
            updated = conn.execute(
                sa.update(interaction_t)
                .where(interaction_t.c.id == row.interaction_id)
                .values(values)
                .returning(*interaction_t.c)
            ).one()
            conn.execute(sa.delete(outbox_t).where(outbox_t.c.id == row.id))
            interaction = interaction_from_row(updated)
            contact = load_contacts(conn, [interaction.contact_id])[interaction.contact_id]
            data = {"interaction": to_json(interaction), "contact": to_json(contact)}
            if failure is not None:
                data["error"] = failure
            record(conn, [("message.sent" if failure is None else "message.failed", data, None)])
        self.core.events.notify()
        return interaction, contact

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


@attrs.frozen
class _Request:
    channel: str
    address_kind: str
    contact_id: int | None
    address: Address | None
    text: str | None
    subject: str | None
    kind: InteractionKind
    payload: dict[str, Any]


def _contact_address(conn: sa.engine.Connection, contact_id: int, kind: str) -> Address:
    contact = load_contacts(conn, [contact_id]).get(contact_id)
    if contact is None:
        raise StoreError(f"no contact with id {contact_id}")
    for address in contact.addresses:
        if address.kind == kind:
            return address
    raise StoreError(f"contact {contact_id} has no {kind} address")
