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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from switchboard.address import Address
from switchboard.backoff import Backoff
from switchboard.channels import (
    Channel,
    ChannelState,
    OutboundMessage,
    PermanentSendError,
    TransientSendError,
)
from switchboard.contacts import ContactResolver
from switchboard.errors import Invalid, NotFound, SwitchboardError
from switchboard.events import EventSpec, contact_created_events, record, to_json
from switchboard.groupcommit import GroupCommit
from switchboard.models import (
    Contact,
    Direction,
    EventType,
    Interaction,
    InteractionKind,
    InteractionStatus,
    utcnow,
)
from switchboard.store import (
    insert_many,
    interaction_from_row,
    interaction_t,
    load_contacts,
    outbox_t,
    pairs_in,
    values_in,
)

if TYPE_CHECKING:
    from switchboard.core import Switchboard

log = logging.getLogger("switchboard.outbox")


class Outbox:
    def __init__(self, core: Switchboard) -> None:
        self.core = core
        self.settings = core.config.core.outbox
        self.backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
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
        contact is found or created), or both. Raises :class:`SwitchboardError` (unknown channel
        or contact, no address of the right kind) or :class:`AddressError`; nothing is
        stored then. Concurrent calls are committed together (group commit)."""
        ch = self.core.channel_objects.get(channel)
        if ch is None:
            known = ", ".join(sorted(self.core.channel_objects)) or "none"
            raise Invalid(f"unknown channel {channel!r} (channels: {known})")
        handle = self.core.channels[channel]
        if handle.state is ChannelState.NOT_CONFIGURED:
            # installed, but it would never send: refuse now rather than queue forever
            why = handle.last_error or f"add [plugins.{handle.plugin}] to the configuration"
            raise Invalid(f"channel {channel!r} is installed but not configured ({why})")
        addr = self.core.addresses.parse(address) if address is not None else None
        if addr is not None and addr.kind != ch.address_kind:
            raise Invalid(
                f"channel {channel!r} sends to {ch.address_kind} addresses, "
                f"not {addr.kind} ({addr})"
            )
        if contact_id is None and addr is None:
            raise Invalid("give contact_id or address")
        admit = getattr(ch, "admit", None)
        # the channel's own rule (WhatsApp's 24-hour window...), asked where it runs: a
        # process that only queues (a command, a runner without it) leaves it to the send
        if admit is not None and handle.state is ChannelState.RUNNING:
            await admit(contact_id, addr, dict(payload or {}))
        request = _Request(
            channel, ch.address_kind, contact_id, addr, text, subject, kind, dict(payload or {})
        )
        interaction, created = await self._accepted.submit(request)
        if created is not None:
            await self.core.plugins.hooks.contact_created(contact=created)
        return interaction

    def queue_in(self, conn: sa.Connection, messages: Sequence[Queued]) -> list[int]:
        """Queue many messages inside a plugin's own transaction (``sb.transaction``), so
        they commit or roll back with the plugin's rows; returns the new interactions'
        ids, in order. Contacts and addresses are taken as given (already checked by the
        caller); call :meth:`wake` once the transaction committed. Bulk inserts: a
        mailing queues thousands at a time. Raises :class:`Invalid` for an unknown
        channel."""
        for channel in {m.channel for m in messages}:
            if channel not in self.core.channels:
                raise Invalid(f"unknown channel {channel!r}")
        now = utcnow()
        ids = insert_many(
            conn,
            interaction_t,
            [
                {
                    "contact_id": m.contact_id,
                    "channel": m.channel,
                    "direction": Direction.OUTBOUND.value,
                    "kind": m.kind.value,
                    "status": InteractionStatus.QUEUED.value,
                    "address": str(m.address),
                    "text": m.text,
                    "subject": m.subject,
                    "meta": dict(m.meta) if m.meta else None,
                    "created_at": now,
                    "updated_at": now,
                }
                for m in messages
            ],
        )
        if ids:
            conn.execute(
                sa.insert(outbox_t),
                [
                    {
                        "interaction_id": i,
                        "channel": m.channel,
                        "address": str(m.address),
                        "payload": dict(m.payload(i) if callable(m.payload) else m.payload),
                        "attempts": 0,
                        "next_attempt_at": m.due or now,
                    }
                    for i, m in zip(ids, messages, strict=True)
                ],
            )
        return ids

    def due_now(self, conn: sa.Connection, interaction_ids: Iterable[int] | sa.Select[Any]) -> int:
        """Make these messages' waiting outbox rows due now (those not being sent): a plugin
        that will refuse them (``refuse_outbound``) has them failed at once rather than at
        their scheduled time. Returns how many rows. Inside ``sb.transaction``."""
        ids = interaction_ids if isinstance(interaction_ids, sa.Select) else list(interaction_ids)
        now = utcnow()
        return int(
            conn.execute(
                sa.update(outbox_t)
                .where(
                    outbox_t.c.interaction_id.in_(ids),
                    sa.or_(outbox_t.c.locked_until.is_(None), outbox_t.c.locked_until < now),
                )
                .values(next_attempt_at=now)
            ).rowcount
        )

    async def _accept(
        self, batch: list[_Request]
    ) -> list[tuple[Interaction, Contact | None] | BaseException]:
        outcomes = await asyncio.to_thread(self._store_batch, batch)
        self._wakeup.set()
        self.core.events.notify()
        return outcomes

    def _store_batch(
        self, batch: list[_Request]
    ) -> list[tuple[Interaction, Contact | None] | BaseException]:
        """One transaction for the batch: contacts resolved together, rows inserted in bulk."""
        with self.core.store.write() as conn:
            resolved = ContactResolver.resolve_many(
                conn,
                [
                    (r.address, None, None)
                    for r in batch
                    if r.contact_id is None and r.address is not None
                ],
            )
            known = load_contacts(conn, {r.contact_id for r in batch if r.contact_id is not None})
            created = load_contacts(conn, {cid for cid, new in resolved.values() if new})
            now = utcnow()
            targets: list[tuple[int, Address] | SwitchboardError] = []
            for r in batch:
                if r.contact_id is None:
                    assert r.address is not None
                    targets.append((resolved[r.address][0], r.address))
                    continue
                try:
                    targets.append(
                        (
                            r.contact_id,
                            r.address
                            or _address_of(known.get(r.contact_id), r.contact_id, r.address_kind),
                        )
                    )
                except SwitchboardError as exc:
                    targets.append(exc)
            rows: list[dict[str, Any]] = [
                {
                    "contact_id": t[0],
                    "channel": r.channel,
                    "direction": Direction.OUTBOUND.value,
                    "kind": r.kind.value,
                    "status": InteractionStatus.QUEUED.value,
                    "external_id": None,
                    "address": str(t[1]),
                    "text": r.text,
                    "subject": r.subject,
                    "error": None,
                    "meta": None,
                    "created_at": now,
                    "updated_at": now,
                    "payload": r.payload,
                }
                for r, t in zip(batch, targets, strict=True)
                if isinstance(t, tuple)
            ]
            ids = insert_many(
                conn,
                interaction_t,
                [{k: v for k, v in row.items() if k != "payload"} for row in rows],
            )
            if ids:
                conn.execute(
                    sa.insert(outbox_t),
                    [
                        {
                            "interaction_id": i,
                            "channel": row["channel"],
                            "address": row["address"],
                            "payload": row["payload"],
                            "attempts": 0,
                            "next_attempt_at": now,
                        }
                        for i, row in zip(ids, rows, strict=True)
                    ],
                )
            record(conn, contact_created_events(created.values()))
        stored = iter(zip(ids, rows, strict=True))
        result: list[tuple[Interaction, Contact | None] | BaseException] = []
        for t in targets:
            if isinstance(t, SwitchboardError):
                result.append(t)
                continue
            i, row = next(stored)
            new = created.pop(row["contact_id"], None)  # announce each new contact once
            result.append((interaction_from_row({**row, "id": i}), new))
        return result

    async def failed_later(self, channel: str, external_id: str, reason: str) -> Interaction | None:
        """A message already ``sent`` turned out undelivered (an email bounce): mark it
        ``failed`` with the reason and fire ``message_failed``. None if unknown."""

        def store() -> tuple[Interaction, Contact] | None:
            with self.core.store.write() as conn:
                row = _update_sent(
                    conn, channel, external_id, status=InteractionStatus.FAILED.value, error=reason
                )
                if row is None:
                    return None
                interaction = interaction_from_row(row)
                contact = load_contacts(conn, [interaction.contact_id])[interaction.contact_id]
                record(
                    conn,
                    [
                        (
                            EventType.MESSAGE_FAILED,
                            {
                                "interaction": to_json(interaction),
                                "contact": to_json(contact),
                                "error": reason,
                            },
                            None,
                        )
                    ],
                )
                return interaction, contact

        found = await asyncio.to_thread(store)
        if found is None:
            return None
        self.core.events.notify()
        await self.core.plugins.hooks.message_failed(
            interaction=found[0], contact=found[1], error=reason
        )
        return found[0]

    async def delivery(
        self, channel: str, external_id: str, status: InteractionStatus
    ) -> Interaction | None:
        """A message the channel sent was ``delivered`` or ``read`` (a receipt from the
        channel, a webhook): the interaction moves forward to that status (never back:
        a late ``delivered`` after ``read`` changes nothing) and the event
        ``message.delivered`` / ``message.read`` is recorded. None when no sent message
        of the channel has that id (not recorded as sent yet, or another's)."""
        earlier, event = _forward(status)

        def store() -> Interaction | None:
            with self.core.store.write() as conn:
                row = _update_sent(conn, channel, external_id, earlier, status=status.value)
                if row is None:
                    return None
                interaction = interaction_from_row(row)
                record(conn, [(event, {"interaction": to_json(interaction)}, None)])
                return interaction

        found = await asyncio.to_thread(store)
        if found is not None:
            self.core.events.notify()
        return found

    async def delivery_until(
        self, channel: str, address: Address, until: datetime, status: InteractionStatus
    ) -> list[Interaction]:
        """A watermark receipt: every message the channel sent to ``address`` that was
        recorded as sent (or last moved forward) at or before ``until`` was ``delivered``
        or ``read`` (Messenger's ``read.watermark``). Each moves forward, with its event;
        the ones that moved are returned. A message recorded after ``until`` stays as it
        is: the receipt may not cover it."""
        earlier, event = _forward(status)

        def store() -> list[Interaction]:
            with self.core.store.write() as conn:
                contact_id = self.core.store.find_contact_id(address, conn)
                if contact_id is None:
                    return []
                rows = conn.execute(
                    sa.update(interaction_t)
                    .where(
                        interaction_t.c.contact_id == contact_id,  # the index's prefix
                        interaction_t.c.created_at <= until,
                        interaction_t.c.channel == channel,
                        interaction_t.c.address == str(address),
                        interaction_t.c.direction == Direction.OUTBOUND.value,
                        interaction_t.c.status.in_(earlier),
                        interaction_t.c.updated_at <= until,
                    )
                    .values(status=status.value, updated_at=utcnow())
                    .returning(*interaction_t.c)
                ).all()
                moved = sorted((interaction_from_row(r) for r in rows), key=lambda i: i.id)
                record(conn, [(event, {"interaction": to_json(i)}, None) for i in moved])
                return moved

        moved = await asyncio.to_thread(store)
        if moved:
            self.core.events.notify()
        return moved

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

    def wake(self) -> None:
        """New rows are due (call from the event loop)."""
        self._wakeup.set()

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
        held = {row.id for row in claimed}
        holding = asyncio.create_task(self._hold(held))
        try:
            await asyncio.gather(
                *(
                    self._send_all(self.core.channel_objects[name], rows, held)
                    for name, rows in by_channel.items()
                )
            )
        finally:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
        return len(claimed)

    async def _hold(self, held: set[int]) -> None:
        """Extend the lease of the claimed rows not yet recorded, every third of the lease:
        a paced channel (Telegram sends one message a second to a chat) may take longer
        than one lease for a batch, and another runner must not take those rows."""
        lease = self.settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            ids = list(held)
            if not ids:
                continue
            try:
                await asyncio.to_thread(self._extend, ids, lease)
            except Exception as exc:  # the sends go on; the worst case is a second send
                log.warning("outbox: could not extend the lease of %d rows: %s", len(ids), exc)

    def _extend(self, ids: list[int], lease: float) -> None:
        with self.core.store.write() as conn:
            conn.execute(
                sa.update(outbox_t)
                .where(values_in(conn, outbox_t.c.id, ids), outbox_t.c.locked_until.is_not(None))
                .values(locked_until=utcnow() + timedelta(seconds=lease))
            )

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

    async def _send_all(self, channel: Channel, rows: list[Any], held: set[int]) -> None:
        """Send, at most ``channel.max_concurrency`` at once (default 1: one by one, in
        order); record the outcomes in groups (one transaction per group) while the next
        sends go on, so a paced channel keeps its pace through the commits. Messages a
        plugin refuses (hook ``refuse_outbound``, asked once for the batch) fail unsent."""
        limit = max(1, int(getattr(channel, "max_concurrency", 1) or 1))
        messages = [_message(row) for row in rows]
        refused = await self.core.plugins.hooks.refuse_outbound(messages=messages)
        if limit == 1:
            for start in range(0, len(rows), FINISH_GROUP):
                chunk = zip(rows[start : start + FINISH_GROUP], messages[start:], strict=False)
                group = [await self._send_one(channel, row, m, refused) for row, m in chunk]
                await self._record(group)
                held.difference_update(o.row.id for o in group)
            return
        slots = asyncio.Semaphore(limit)
        finished: list[_Outcome] = []
        recording = asyncio.Lock()

        async def record() -> None:
            async with recording:
                group = finished[:]
                del finished[:]
                if group:
                    await self._record(group)
                    held.difference_update(o.row.id for o in group)

        async def one(row: Any, message: OutboundMessage) -> None:
            async with slots:
                outcome = await self._send_one(channel, row, message, refused)
            finished.append(outcome)
            if len(finished) >= FINISH_GROUP:
                await record()

        # a failure to record cancels the other sends (their rows are sent again later)
        try:
            async with asyncio.TaskGroup() as sending:
                for row, message in zip(rows, messages, strict=True):
                    sending.create_task(one(row, message))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        await record()

    async def _send_one(
        self, channel: Channel, row: Any, message: OutboundMessage, refused: Mapping[int, str]
    ) -> _Outcome:
        reason = refused.get(row.interaction_id)
        if reason is not None:
            return _Outcome(row, failure=reason)
        try:
            receipt = await channel.send(message)
        except PermanentSendError as exc:
            return _Outcome(row, failure=str(exc))
        except TransientSendError as exc:
            return self._retry_or_fail(row, str(exc), exc.retry_after)
        except Exception as exc:  # an unexpected error from a channel: retry, then give up
            log.exception(
                "channel %s: send of interaction %d raised", row.channel, row.interaction_id
            )
            return self._retry_or_fail(row, f"{type(exc).__name__}: {exc}", None)
        return _Outcome(row, external_id=receipt.external_id, meta=dict(receipt.meta))

    def _retry_or_fail(self, row: Any, error: str, retry_after: float | None) -> _Outcome:
        if row.attempts >= self.settings.max_attempts:
            return _Outcome(row, failure=f"gave up after {row.attempts} attempts: {error}")
        delay = retry_after if retry_after is not None else self.backoff.delay(row.attempts)
        log.warning(
            "channel %s: interaction %d attempt %d failed (%s); retry in %.1fs",
            row.channel,
            row.interaction_id,
            row.attempts,
            error,
            delay,
        )
        return _Outcome(row, retry=(error, delay))

    async def _record(self, outcomes: list[_Outcome]) -> None:
        finished = await asyncio.to_thread(self._finish, outcomes)
        self.core.events.notify()
        for interaction, contact, failure in finished:
            if failure is None:
                await self.core.plugins.hooks.message_sent(interaction=interaction, contact=contact)
            else:
                await self.core.plugins.hooks.message_failed(
                    interaction=interaction, contact=contact, error=failure
                )

    def _finish(self, outcomes: list[_Outcome]) -> list[tuple[Interaction, Contact, str | None]]:
        """In one transaction: mark interactions sent or failed and drop their outbox rows
        (recording the events), or reschedule the ones to retry."""
        now = utcnow()
        done = [o for o in outcomes if o.retry is None]
        with self.core.store.write() as conn:
            taken = _receipts_taken(conn, done)
            for o in outcomes:
                if o.retry is not None:
                    error, delay = o.retry
                    conn.execute(
                        sa.update(outbox_t)
                        .where(outbox_t.c.id == o.row.id)
                        .values(
                            next_attempt_at=now + timedelta(seconds=delay),
                            locked_until=None,
                            last_error=error,
                        )
                    )
                    continue
                values: dict[str, Any] = {"updated_at": now}
                if o.failure is None:
                    values.update(status=InteractionStatus.SENT.value, external_id=o.external_id)
                    meta = dict(o.meta)
                    if (o.row.channel, o.external_id) in taken:
                        # another message of the channel has this id (a channel numbering
                        # its receipts like its inbound messages): sent all the same, the id
                        # kept in meta, never a failed batch and a second send
                        log.warning(
                            "channel %s: receipt id %r is another message's; kept in meta",
                            o.row.channel,
                            o.external_id,
                        )
                        values["external_id"] = None
                        meta["receipt_id"] = o.external_id
                    if meta:
                        values["meta"] = meta
                else:
                    values.update(status=InteractionStatus.FAILED.value, error=o.failure)
                conn.execute(
                    sa.update(interaction_t)
                    .where(interaction_t.c.id == o.row.interaction_id)
                    .values(values)
                )
            if not done:
                return []
            conn.execute(
                sa.delete(outbox_t).where(values_in(conn, outbox_t.c.id, [o.row.id for o in done]))
            )
            rows = {
                r.id: interaction_from_row(r)
                for r in conn.execute(
                    sa.select(interaction_t).where(
                        values_in(conn, interaction_t.c.id, [o.row.interaction_id for o in done])
                    )
                )
            }
            contacts = load_contacts(conn, (i.contact_id for i in rows.values()))
            finished = []
            events: list[EventSpec] = []
            for o in done:
                interaction = rows[o.row.interaction_id]
                contact = contacts[interaction.contact_id]
                data = {"interaction": to_json(interaction), "contact": to_json(contact)}
                if o.failure is not None:
                    data["error"] = o.failure
                events.append(
                    (
                        EventType.MESSAGE_SENT if o.failure is None else EventType.MESSAGE_FAILED,
                        data,
                        None,
                    )
                )
                finished.append((interaction, contact, o.failure))
            record(conn, events)
        return finished


def _receipts_taken(conn: sa.Connection, done: list[_Outcome]) -> set[tuple[str, str]]:
    """The (channel, receipt id) pairs among ``done`` that other interactions hold, or that
    two of ``done`` share (the first keeps it)."""
    pairs = [
        (o.row.channel, o.external_id, o.row.interaction_id)
        for o in done
        if o.failure is None and o.external_id
    ]
    if not pairs:
        return set()
    held = conn.execute(
        sa.select(interaction_t.c.channel, interaction_t.c.external_id, interaction_t.c.id).where(
            pairs_in(
                conn,
                interaction_t.c.channel,
                interaction_t.c.external_id,
                {(c, e) for c, e, _ in pairs},
            )
        )
    )
    owner = {(r.channel, r.external_id): r.id for r in held}
    taken = set()
    for channel, external_id, interaction_id in pairs:
        key = (channel, external_id)
        if owner.setdefault(key, interaction_id) != interaction_id:
            taken.add(key)
    return taken


def _forward(status: InteractionStatus) -> tuple[list[str], EventType]:
    """The statuses a delivery ``status`` may follow, and its event; ``Invalid`` for a
    status that is not a delivery."""
    if status not in FORWARD:
        raise Invalid(f"a delivery status is delivered or read, not {status.value!r}")
    event = (
        EventType.MESSAGE_DELIVERED
        if status is InteractionStatus.DELIVERED
        else EventType.MESSAGE_READ
    )
    return [s.value for s in FORWARD_FROM[status]], event


def _update_sent(
    conn: sa.Connection,
    channel: str,
    external_id: str,
    only: Collection[str] | None = None,
    **values: Any,
) -> Any:
    """Update the outbound message the channel knows as ``external_id`` (only while its
    status is one of ``only``, when given); the updated row, or None."""
    where = [
        interaction_t.c.channel == channel,
        interaction_t.c.external_id == external_id,
        interaction_t.c.direction == Direction.OUTBOUND.value,
    ]
    if only is not None:
        where.append(interaction_t.c.status.in_(list(only)))
    return conn.execute(
        sa.update(interaction_t)
        .where(*where)
        .values(**values, updated_at=utcnow())
        .returning(*interaction_t.c)
    ).first()


def _message(row: Any) -> OutboundMessage:
    """What the channel is given for one claimed outbox row."""
    kind, _, value = row.address.partition(":")
    return OutboundMessage(
        interaction_id=row.interaction_id,
        channel=row.channel,
        address=Address(kind, value),
        text=row.text,
        subject=row.subject,
        payload=dict(row.payload or {}),
        attempt=row.attempts,
        contact_id=row.contact_id,
    )


@attrs.frozen
class Queued:
    """One message for :meth:`Outbox.queue_in`: to ``address`` (``kind:value``) of contact
    ``contact_id`` on ``channel``, due at ``due`` (now when None). ``payload`` is what
    the channel gets besides the text (``html``, headers...), or a function of the new
    interaction's id that returns it (for links that name the message)."""

    contact_id: int
    channel: str
    address: Address | str
    text: str | None = None
    subject: str | None = None
    kind: InteractionKind = InteractionKind.MESSAGE
    payload: Mapping[str, Any] | Callable[[int], Mapping[str, Any]] = attrs.field(factory=dict)
    meta: Mapping[str, Any] | None = None
    due: datetime | None = None


#: Delivery statuses, and the ones each may follow (forward only).
FORWARD_FROM: dict[InteractionStatus, tuple[InteractionStatus, ...]] = {
    InteractionStatus.DELIVERED: (InteractionStatus.SENT,),
    InteractionStatus.READ: (InteractionStatus.SENT, InteractionStatus.DELIVERED),
}
FORWARD = tuple(FORWARD_FROM)

FINISH_GROUP = 20
"""Sends recorded per transaction. A process killed mid-group sends up to this many
messages again once their lease runs out (delivery is at least once)."""


@attrs.frozen
class _Outcome:
    row: Any
    external_id: str | None = None
    meta: dict[str, Any] = attrs.field(factory=dict)
    failure: str | None = None
    retry: tuple[str, float] | None = None


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


def _address_of(contact: Contact | None, contact_id: int, kind: str) -> Address:
    if contact is None:
        raise NotFound(f"no contact with id {contact_id}")
    for address in contact.addresses:
        if address.kind == kind:
            return address
    raise Invalid(f"contact {contact_id} has no {kind} address")
