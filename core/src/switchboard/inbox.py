"""Inbound messages: dedupe, resolve the contact, save, then fire hooks.

Concurrent ``receive`` calls are group-committed: one writer task takes everything that is
waiting (up to ``max_batch``) and stores it in one transaction. ``receive`` returns only
after that transaction committed and the hooks ran, so what a channel was told is stored,
is stored; a crash before the commit loses only messages whose ``receive`` had not returned
(the channel has not acknowledged them upstream, so they come again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from switchboard import limits
from switchboard.address import Address
from switchboard.channels import InboundMessage, InvalidInbound, Received
from switchboard.contacts import ContactResolver
from switchboard.events import contact_created_events, record, to_json
from switchboard.groupcommit import GroupCommit
from switchboard.models import Contact, Direction, EventType, Interaction, InteractionStatus, utcnow
from switchboard.store import (
    insert_many,
    interaction_from_row,
    interaction_t,
    load_contacts,
    pairs_in,
)

if TYPE_CHECKING:
    from switchboard.core import Switchboard

log = logging.getLogger("switchboard.inbox")


def bounded(message: InboundMessage) -> InboundMessage:
    """``message`` within the store's limits (see :mod:`switchboard.limits`)."""
    text, cut = limits.text(message.text)
    meta = limits.json_safe(message.meta) if message.meta else {}
    if cut:
        meta["truncated"] = f"text cut to {limits.MAX_TEXT} characters"
    return attrs.evolve(
        message,
        external_id=limits.external_id(message.external_id),
        text=text,
        subject=limits.one_line(message.subject, limits.MAX_SUBJECT),
        sender_name=limits.one_line(message.sender_name, limits.MAX_NAME),
        meta=meta,
    )


class _Pending:
    __slots__ = ("address", "answer", "channel", "message", "outbound")

    def __init__(
        self, channel: str, message: InboundMessage, address: Address, outbound: bool = False
    ) -> None:
        self.channel = channel
        self.message = message
        self.address = address
        self.outbound = outbound  # ours, sent outside Switchboard (``ctx.record_sent``)
        self.answer: Contact | None = None


class Inbox:
    def __init__(self, core: Switchboard, *, max_batch: int = 500) -> None:
        self.core = core
        self.resolver = ContactResolver(core.plugins, core.config.core.resolve_timeout)
        self._batches: GroupCommit[_Pending, Received] = GroupCommit(
            self._process, max_batch=max_batch, name="switchboard-inbox"
        )

    async def receive(
        self, channel: str, message: InboundMessage, *, outbound: bool = False
    ) -> Received:
        """Store one inbound message; raises :class:`AddressError` for a bad sender.
        With ``outbound``, a message our side sent outside Switchboard: ``sender`` is the
        customer it went to; it is stored as sent (event ``message.sent``).

        The message is bounded first (:mod:`switchboard.limits`): NULs dropped, names and
        subjects on one line and cut to their columns, a long external id digested."""
        if not message.external_id:
            raise ValueError(f"{channel}: an inbound message needs an external_id")
        message = bounded(message)
        address = self.core.addresses.parse(message.sender)
        return await self._batches.submit(_Pending(channel, message, address, outbound))

    async def close(self) -> None:
        await self._batches.close()

    async def edit(self, channel: str, message: InboundMessage) -> Received:
        """A message was edited at its source: update its text, subject and meta (the
        interaction keeps its id and place on the timeline). An edit of a message never
        received is stored as a new message; one whose original is being stored at the same
        moment (both in one batch from the channel) is applied to it once it is stored."""
        message = bounded(message)

        def change(row: Any) -> dict[str, Any]:
            meta = {
                **(row.meta or {}),
                **message.meta,
                "edits": int((row.meta or {}).get("edits", 0)) + 1,
            }
            return {"text": message.text, "subject": message.subject or row.subject, "meta": meta}

        def store() -> Received | None:
            found = self._rewrite(channel, message.external_id, change, EventType.MESSAGE_EDITED)
            return Received(found[0], found[1], duplicate=False) if found else None

        edited = await asyncio.to_thread(store)
        if edited is None:
            received = await self.receive(channel, message)
            if not received.duplicate:
                return received
            # The original was stored meanwhile (and won): the edit still applies to it.
            edited = await asyncio.to_thread(store)
            if edited is None:  # pragma: no cover - stored rows are never deleted
                return received
        self.core.events.notify()
        return edited

    async def deleted(
        self, channel: str, external_id: str, *, keep: bool = False
    ) -> Interaction | None:
        """The sender deleted (unsent) a message stored from this channel: the
        interaction stays on the timeline, marked ``meta.deleted`` (when, and whether its
        content was kept). Unless ``keep``, its text is cleared and its files deleted
        (``meta.attachment(s)`` keep only the name and the reason). Event
        ``message.deleted``; None when no message of the channel has that id."""
        external_id = limits.external_id(external_id)

        files: list[str] = []

        def change(row: Any) -> dict[str, Any] | None:
            meta = dict(row.meta or {})
            if meta.get("deleted"):
                return None  # told twice: once is enough
            meta["deleted"] = {"at": utcnow().isoformat(), "content_kept": keep}
            if not keep:
                for key in ("attachment", "attachments"):
                    if key in meta:
                        meta[key], gone = _forget_files(meta[key])
                        files.extend(gone)
            return {"text": row.text if keep else None, "meta": meta}

        found = await asyncio.to_thread(
            self._rewrite, channel, external_id, change, EventType.MESSAGE_DELETED
        )
        if found is None:
            return None
        for path in files:  # only files inside our folders: a stored path is not trusted
            kept = self.core.file_roots.check(path)
            if kept is not None:
                await asyncio.to_thread(kept.unlink, missing_ok=True)
        self.core.events.notify()
        return found[0]

    def _rewrite(
        self,
        channel: str,
        external_id: str,
        change: Callable[[Any], dict[str, Any] | None],
        event: EventType,
    ) -> tuple[Interaction, Contact] | None:
        """In one transaction: the stored message ``(channel, external_id)`` gets the
        values ``change(row)`` returns (None: it stays as it is, no event) and ``event``
        is recorded; the message and its contact, or None when none is stored."""
        with self.core.store.write() as conn:
            row = conn.execute(
                sa.select(interaction_t).where(
                    interaction_t.c.channel == channel,
                    interaction_t.c.external_id == external_id,
                )
            ).first()
            if row is None:
                return None
            values = change(row)
            if values is not None:
                row = conn.execute(
                    sa.update(interaction_t)
                    .where(interaction_t.c.id == row.id)
                    .values(**values, updated_at=utcnow())
                    .returning(*interaction_t.c)
                ).one()
            interaction = interaction_from_row(row)
            contact = load_contacts(conn, [interaction.contact_id])[interaction.contact_id]
            if values is not None:
                data = {"interaction": to_json(interaction), "contact": to_json(contact)}
                record(conn, [(event, data, None)])
            return interaction, contact

    async def _process(self, batch: list[_Pending]) -> list[Received | BaseException]:
        if self.resolver.has_plugins():
            # Ask plugins only about messages not stored before (redeliveries are
            # common, and an external CRM is slow).
            keys = {(p.channel, p.message.external_id) for p in batch}
            known = await asyncio.to_thread(self._existing, keys)
            fresh = [p for p in batch if (p.channel, p.message.external_id) not in known]
            answers = await self.resolver.ask_plugins(p.address for p in fresh)
            for p in fresh:
                p.answer = answers.get(p.address)
        outcomes: list[Received | BaseException]
        try:
            outcomes = list(await asyncio.to_thread(self._store, batch))
        except SQLAlchemyError as exc:
            # Another process stored one of these keys meanwhile (IntegrityError), or one
            # item is something the database refuses: store each message on its own, so
            # only the item at fault fails and the others' senders are not affected.
            if not isinstance(exc, IntegrityError):
                log.warning("a batch of %d failed (%s); storing one by one", len(batch), exc)
            outcomes = []
            for p in batch:
                try:
                    outcomes += await asyncio.to_thread(self._store, [p])
                except DataError as one:  # this item's values: it will never be stored
                    outcomes.append(InvalidInbound(f"the database refused it: {one.orig}"))
                except SQLAlchemyError as one:
                    outcomes.append(one)
        self.core.events.notify()
        for received in outcomes:
            if isinstance(received, BaseException):
                continue
            if received.contact_created:
                await self.core.plugins.hooks.contact_created(contact=received.contact)
            if received.duplicate:
                continue
            if received.interaction.direction is Direction.OUTBOUND:
                await self.core.plugins.hooks.message_sent(
                    interaction=received.interaction, contact=received.contact
                )
            else:
                await self.core.plugins.hooks.message_received(
                    interaction=received.interaction,
                    contact=received.contact,
                )
        return outcomes

    def _existing(self, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        with self.core.store.read() as conn:
            return {
                (r.channel, r.external_id)
                for r in conn.execute(
                    sa.select(interaction_t.c.channel, interaction_t.c.external_id).where(
                        pairs_in(conn, interaction_t.c.channel, interaction_t.c.external_id, keys)
                    )
                )
            } & keys

    def _store(self, batch: list[_Pending]) -> list[Received]:
        with self.core.store.write() as conn:
            return self._store_in(conn, batch)

    def _store_in(self, conn: Connection, batch: list[_Pending]) -> list[Received]:
        keys = {(p.channel, p.message.external_id) for p in batch}
        stored: dict[tuple[str, str], Any] = {
            (r.channel, r.external_id): r
            for r in conn.execute(
                sa.select(interaction_t).where(
                    pairs_in(conn, interaction_t.c.channel, interaction_t.c.external_id, keys)
                )
            )
            if (r.channel, r.external_id) in keys
        }
        todo: dict[tuple[str, str], _Pending] = {}
        for p in batch:
            key = (p.channel, p.message.external_id)
            if key not in stored and key not in todo:
                todo[key] = p
        contacts_of = ContactResolver.resolve_many(
            conn, [(p.address, p.answer, p.message.sender_name) for p in todo.values()]
        )
        created = {cid for cid, was_created in contacts_of.values() if was_created}
        new_rows: list[dict[str, Any]] = []
        now = utcnow()
        for p in todo.values():
            contact_id = contacts_of[p.address][0]
            m = p.message
            new_rows.append(
                {
                    "contact_id": contact_id,
                    "channel": p.channel,
                    "direction": (Direction.OUTBOUND if p.outbound else Direction.INBOUND).value,
                    "kind": m.kind.value,
                    "status": (
                        InteractionStatus.SENT if p.outbound else InteractionStatus.RECEIVED
                    ).value,
                    "external_id": m.external_id,
                    "address": str(p.address),
                    "text": m.text,
                    "subject": m.subject,
                    "meta": m.meta or None,
                    "created_at": m.received_at or now,
                    "updated_at": now,
                }
            )
        ids = insert_many(conn, interaction_t, new_rows)
        inserted: dict[tuple[str, str], Any] = {
            (r["channel"], r["external_id"]): {**r, "id": i}
            for r, i in zip(new_rows, ids, strict=True)
        }
        by_key: dict[tuple[str, str], Interaction] = {
            key: interaction_from_row(row) for key, row in (stored | inserted).items()
        }
        contacts = load_contacts(conn, (i.contact_id for i in by_key.values()))
        out = []
        announced: set[tuple[str, str]] = set()
        announced_contacts: set[int] = set()
        for p in batch:
            key = (p.channel, p.message.external_id)
            interaction = by_key[key]
            fresh = key in inserted and key not in announced
            announced.add(key)
            new_contact = fresh and interaction.contact_id in created - announced_contacts
            if new_contact:
                announced_contacts.add(interaction.contact_id)
            out.append(
                Received(
                    interaction=interaction,
                    contact=contacts[interaction.contact_id],
                    duplicate=not fresh,
                    contact_created=new_contact,
                )
            )
        record(
            conn,
            [
                *contact_created_events(contacts[c] for c in created),
                *(
                    (
                        EventType.MESSAGE_SENT
                        if r.interaction.direction is Direction.OUTBOUND
                        else EventType.MESSAGE_RECEIVED,
                        {"interaction": to_json(r.interaction), "contact": to_json(r.contact)},
                        None,
                    )
                    for r in out
                    if not r.duplicate
                ),
            ],
        )
        return out


def _forget_files(noted: Any) -> tuple[Any, list[str]]:
    """``meta.attachment`` (a dict) or ``meta.attachments`` (a list of them) with each
    file's path dropped and the reason noted; and the paths dropped."""
    items = noted if isinstance(noted, list) else [noted]
    paths: list[str] = []
    kept: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            item = dict(item)
            path = item.pop("path", None)
            if isinstance(path, str):
                paths.append(path)
            item["skipped"] = "deleted by the sender"
        kept.append(item)
    return (kept if isinstance(noted, list) else kept[0]), paths
