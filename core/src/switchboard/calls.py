"""The call-record lifecycle a voice channel reports: ``ringing → answered → ended``.

Each step is stored, then its hook fires: ``call_ringing`` (the screen pop), then
``route_call`` picks who takes the call, ``call_answered``, ``call_ended``,
``recording_saved``. Steps out of order raise :class:`CallStateError`; a repeated
``ringing`` for the same call id returns the stored record and fires nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import wave
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard.address import Address
from switchboard.contacts import ContactResolver
from switchboard.errors import Conflict, Invalid
from switchboard.events import EventSpec, contact_created_events, to_json
from switchboard.events import record as record_events
from switchboard.models import (
    Agent,
    CallRecord,
    Contact,
    Direction,
    Disposition,
    EventType,
    InteractionKind,
    InteractionStatus,
    Recording,
    SupervisionMode,
    utcnow,
)
from switchboard.store import (
    agent_t,
    call_t,
    interaction_from_row,
    interaction_t,
    load_call,
    load_contacts,
)
from switchboard.tables import CallIvrStepRow

if TYPE_CHECKING:
    from switchboard.core import Switchboard

ivr_step_t: sa.Table = CallIvrStepRow.__table__  # type: ignore[attr-defined]


class CallStateError(Conflict):
    """A call event that does not fit the call's state (unknown call, answered after end)."""


def describe_recording(path: str | Path) -> Recording:
    """Duration (from the WAV header) and sha256 of a recording file."""
    p = Path(path)
    digest = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    try:
        with wave.open(str(p), "rb") as w:
            duration = w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError) as exc:
        raise Invalid(f"recording {p} is not a readable WAV file: {exc}") from None
    return Recording(path=str(p), duration=round(duration, 3), sha256=digest.hexdigest())


def _seconds(start: Any, end: Any) -> float | None:
    return None if start is None else round((end - start).total_seconds(), 3)


def call_agents(record: CallRecord) -> set[int]:
    """The agents a call's events are meant for: those it rang for, and who took it."""
    agents = set(record.agents_notified)
    if record.agent_id is not None:
        agents.add(record.agent_id)
    return agents


def contact_card(
    conn: Connection,
    contact: Contact,
    exclude_interaction: int | None = None,
    recent: int = 5,
    new: bool = False,
) -> dict[str, Any]:
    """What a screen pop shows: the contact, its owner agent, its latest interactions and
    whether the call just created it (``new``: an unknown caller)."""
    owner = None
    if contact.owner_agent_id is not None:
        row = conn.execute(
            sa.select(agent_t.c.id, agent_t.c.name).where(agent_t.c.id == contact.owner_agent_id)
        ).first()
        owner = None if row is None else {"id": row.id, "name": row.name}
    stmt = (
        sa.select(interaction_t)
        .where(interaction_t.c.contact_id == contact.id)
        .order_by(interaction_t.c.created_at.desc(), interaction_t.c.id.desc())
        .limit(recent)
    )
    if exclude_interaction is not None:
        stmt = stmt.where(interaction_t.c.id != exclude_interaction)
    return {
        **to_json(contact),
        "new": new,
        "owner_agent": owner,
        "recent_interactions": [to_json(interaction_from_row(r)) for r in conn.execute(stmt)],
    }


class CallLog:
    def __init__(self, core: Switchboard) -> None:
        self.core = core

    async def ringing(
        self,
        channel: str,
        call_id: str,
        *,
        direction: Direction,
        from_address: Address | str,
        to_address: Address | str,
        agents: Iterable[int] = (),
        caller_name: str | None = None,
    ) -> tuple[CallRecord, Contact]:
        """A call started ringing; the customer is the caller (inbound) or callee.

        Returns once the ``call.ringing`` event (the screen pop) has reached the live event
        streams (waiting 0.25 s at most) and the ``call_ringing`` hooks have run: a channel
        rings the agents' phones after this, so the card is up before any phone rings."""
        frm = self._addr(from_address)
        to = self._addr(to_address)
        customer = frm if direction == Direction.INBOUND else to
        existing = await asyncio.to_thread(self.core.store.get_call, call_id, channel)
        if existing is not None:
            known = await asyncio.to_thread(self.core.store.get_contact, existing.contact_id)
            assert known is not None
            return existing, known
        answers = {}
        if isinstance(customer, Address):
            answers = await self.core.inbox.resolver.ask_plugins([customer])

        def store() -> tuple[CallRecord, Contact, bool, int]:
            now = utcnow()
            with self.core.store.write() as conn:
                created = False
                if isinstance(customer, Address):
                    contact_id, created = ContactResolver.resolve_one(
                        conn, customer, answers.get(customer), caller_name
                    )
                else:  # an unreadable number (withheld, "anonymous"): its own contact
                    contact_id = (
                        self.core.store.create_contact(
                            caller_name or customer or "unknown caller", conn=conn
                        ).id
                        or 0
                    )
                    created = True
                interaction_id = conn.execute(
                    sa.insert(interaction_t)
                    .values(
                        contact_id=contact_id,
                        channel=channel,
                        direction=direction.value,
                        kind=InteractionKind.CALL.value,
                        status=InteractionStatus.RINGING.value,
                        external_id=call_id,
                        address=str(customer),
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(interaction_t.c.id)
                ).scalar_one()
                conn.execute(
                    sa.insert(call_t).values(
                        interaction_id=interaction_id,
                        call_id=call_id,
                        channel=channel,
                        direction=direction.value,
                        from_address=str(frm),
                        to_address=str(to),
                        ringing_at=now,
                        ivr_path=[],
                        agents_notified=sorted(set(agents)),
                        node=self.core.singletons.node,
                    )
                )
                record = self._load(conn, call_id, channel)
                contact = load_contacts(conn, [contact_id])[contact_id]
                events = contact_created_events([contact]) if created else []
                events.append(
                    (
                        EventType.CALL_RINGING,
                        {
                            "call": to_json(record),
                            "contact": contact_card(conn, contact, interaction_id, new=created),
                        },
                        call_agents(record),
                    )
                )
                pop = record_events(conn, events)[-1]
            return record, contact, created, pop

        record, contact, created, pop = await asyncio.to_thread(store)
        self.core.events.notify()
        # the screen pop first: the channel rings phones only after ringing() returns
        await self.core.events.delivered(pop)
        if created:
            await self.core.plugins.hooks.contact_created(contact=contact)
        await self.core.plugins.hooks.call_ringing(call=record, contact=contact)
        return record, contact

    async def route(self, record: CallRecord, contact: Contact) -> Any:
        """Ask ``route_call`` who takes the call: the handler returned, or None."""
        return await self.core.plugins.hooks.route_call(call=record, contact=contact)

    async def answered(self, channel: str, call_id: str, agent: Agent | None = None) -> CallRecord:
        def store() -> CallRecord:
            with self.core.store.write() as conn:
                record = self._load(conn, call_id, channel)
                if record.status != InteractionStatus.RINGING:
                    raise CallStateError(
                        f"call {call_id} on {channel} is {record.status}, cannot be answered"
                    )
                now = utcnow()
                self._update(
                    conn,
                    record,
                    InteractionStatus.ANSWERED,
                    answered_at=now,
                    agent_id=agent.id if agent else None,
                    wait_s=_seconds(record.ringing_at, now),
                )
                record = self._load(conn, call_id, channel)
                record_events(
                    conn,
                    [
                        (
                            EventType.CALL_ANSWERED,
                            {"call": to_json(record), "agent": to_json(agent)},
                            call_agents(record),
                        )
                    ],
                )
                return record

        record = await asyncio.to_thread(store)
        self.core.events.notify()
        await self.core.plugins.hooks.call_answered(call=record, agent=agent)
        return record

    async def transferred(self, channel: str, call_id: str, agent: Agent | None) -> CallRecord:
        """An answered call now talks to ``agent`` (None: someone who is not an agent, such
        as an outside number): the record's agent changes and ``call.transferred`` is
        published with the new agent and the one before."""

        def store() -> tuple[CallRecord, int | None]:
            with self.core.store.write() as conn:
                record = self._load(conn, call_id, channel)
                if record.status != InteractionStatus.ANSWERED:
                    raise CallStateError(
                        f"call {call_id} on {channel} is {record.status}, cannot be transferred"
                    )
                before = record.agent_id
                conn.execute(
                    sa.update(call_t)
                    .where(call_t.c.id == record.id)
                    .values(agent_id=agent.id if agent else None)
                )
                record = self._load(conn, call_id, channel)
                record_events(
                    conn,
                    [
                        (
                            EventType.CALL_TRANSFERRED,
                            {
                                "call": to_json(record),
                                "agent": to_json(agent),
                                "from_agent_id": before,
                            },
                            call_agents(record) | ({before} if before else set()),
                        )
                    ],
                )
                return record, before

        record, _ = await asyncio.to_thread(store)
        self.core.events.notify()
        return record

    async def supervised(
        self, channel: str, call_id: str, supervisor: Agent, mode: SupervisionMode
    ) -> CallRecord:
        """A supervisor joined an answered call (or changed how: ``mode``): kept in the
        record's ``supervision`` and published as ``call.supervised`` to the call's agents
        and the supervisor."""

        def store() -> CallRecord:
            with self.core.store.write() as conn:
                record = self._load(conn, call_id, channel)
                if record.status != InteractionStatus.ANSWERED:
                    raise CallStateError(f"call {call_id} on {channel} is {record.status}")
                kept = [
                    {"agent_id": s.agent_id, "mode": str(s.mode), "at": s.at.isoformat()}
                    for s in record.supervision
                ]
                kept.append(
                    {"agent_id": supervisor.id, "mode": str(mode), "at": utcnow().isoformat()}
                )
                conn.execute(
                    sa.update(call_t).where(call_t.c.id == record.id).values(supervision=kept)
                )
                record = self._load(conn, call_id, channel)
                to = call_agents(record) | ({supervisor.id} if supervisor.id else set())
                record_events(
                    conn,
                    [
                        (
                            EventType.CALL_SUPERVISED,
                            {
                                "call": to_json(record),
                                "supervisor": to_json(supervisor),
                                "mode": str(mode),
                            },
                            to,
                        )
                    ],
                )
                return record

        record = await asyncio.to_thread(store)
        self.core.events.notify()
        return record

    async def ivr_step(self, channel: str, call_id: str, node: str, digits: str = "") -> None:
        """Append a node visited (and the digits pressed there) to the call's IVR path."""

        def store() -> None:
            with self.core.store.write() as conn:
                record = self._load(conn, call_id, channel)
                if record.status == InteractionStatus.ENDED:
                    raise CallStateError(f"call {call_id} on {channel} has ended")
                path = [
                    {"node": s.node, "digits": s.digits, "at": s.at.isoformat()}
                    for s in record.ivr_path
                ]
                path.append({"node": node, "digits": digits, "at": utcnow().isoformat()})
                conn.execute(
                    sa.update(call_t)
                    .where(call_t.c.id == record.id)
                    .values(ivr_path=path, ivr_last_node=node[:100])
                )
                conn.execute(
                    sa.insert(ivr_step_t).values(
                        call_record_id=record.id,
                        ringing_at=record.ringing_at,
                        node=node[:100],
                        digits=digits[:32],
                    )
                )

        await asyncio.to_thread(store)

    async def ended(
        self,
        channel: str,
        call_id: str,
        disposition: Disposition | None = None,
        hangup_cause: str | None = None,
    ) -> CallRecord:
        """The call ended. Without a disposition: ``answered`` if it was, else ``missed``."""

        def store() -> CallRecord:
            with self.core.store.write() as conn:
                record = self._load(conn, call_id, channel)
                if record.status == InteractionStatus.ENDED:
                    raise CallStateError(f"call {call_id} on {channel} has already ended")
                final = disposition or (
                    Disposition.ANSWERED if record.answered_at else Disposition.MISSED
                )
                now = utcnow()
                self._update(
                    conn,
                    record,
                    InteractionStatus.ENDED,
                    ended_at=now,
                    disposition=final.value,
                    hangup_cause=hangup_cause,
                    talk_s=_seconds(record.answered_at, now) if record.answered_at else None,
                )
                record = self._load(conn, call_id, channel)
                events: list[EventSpec] = [
                    (EventType.CALL_ENDED, {"call": to_json(record)}, call_agents(record))
                ]
                task = self._callback_task(conn, record)
                if task is not None:
                    events.append(task)
                record_events(conn, events)
                return record

        record = await asyncio.to_thread(store)
        self.core.events.notify()
        await self.core.plugins.hooks.call_ended(record=record)
        return record

    async def recording_saved(self, channel: str, call_id: str, path: str | Path) -> CallRecord:
        """Attach a WAV recording (duration and sha256 are read from the file)."""

        def store() -> CallRecord:
            rec = describe_recording(path)
            with self.core.store.write() as conn:
                record = self._load(conn, call_id, channel)
                conn.execute(
                    sa.update(call_t)
                    .where(call_t.c.id == record.id)
                    .values(
                        recording_path=rec.path,
                        recording_duration=rec.duration,
                        recording_sha256=rec.sha256,
                    )
                )
                record = self._load(conn, call_id, channel)
                record_events(
                    conn,
                    [(EventType.CALL_RECORDED, {"call": to_json(record)}, call_agents(record))],
                )
                return record

        record = await asyncio.to_thread(store)
        self.core.events.notify()
        await self.core.plugins.hooks.recording_saved(record=record)
        return record

    def _callback_task(self, conn: Connection, record: CallRecord) -> EventSpec | None:
        """A missed (abandoned, voicemail...) call becomes a callback task on the contact's
        timeline, for the contact's owner, else the first agent the call rang for."""
        settings = self.core.config.core.callbacks
        if not settings.enabled or record.disposition is None:
            return None
        if record.disposition.value not in settings.dispositions:
            return None
        contact = load_contacts(conn, [record.contact_id])[record.contact_id]
        agent_id = contact.owner_agent_id
        if agent_id is None and record.agents_notified:
            agent_id = record.agents_notified[0]
        now = utcnow()
        due = now + timedelta(minutes=settings.due_minutes)
        customer = (
            record.from_address if record.direction is Direction.INBOUND else record.to_address
        )
        number = customer.split(":", 1)[-1]
        meta = {
            "call_id": record.call_id,
            "agent_id": agent_id,
            "due_at": due.isoformat(),
            "reason": record.disposition.value,
        }
        task_id = conn.execute(
            sa.insert(interaction_t)
            .values(
                contact_id=record.contact_id,
                channel=record.channel,
                direction=Direction.OUTBOUND.value,
                kind=InteractionKind.TASK.value,
                status=InteractionStatus.OPEN.value,
                external_id=f"callback:{record.call_id}",
                address=customer,
                text=f"Call back {number} ({record.disposition.value} call)",
                meta=meta,
                created_at=now,
                updated_at=now,
            )
            .returning(interaction_t.c.id)
        ).scalar_one()
        row = conn.execute(sa.select(interaction_t).where(interaction_t.c.id == task_id)).one()
        task = to_json(interaction_from_row(row))
        return (
            EventType.TASK_CREATED,
            {"task": task},
            {agent_id} if agent_id is not None else None,
        )

    # -- helpers --------------------------------------------------------------------------

    def _addr(self, raw: Address | str) -> Address | str:
        """Parse an address; a caller id that is not a number stays as text."""
        if isinstance(raw, Address):
            return raw
        try:
            return self.core.addresses.parse(raw)
        except ValueError:
            return raw

    @staticmethod
    def _load(conn: Connection, call_id: str, channel: str) -> CallRecord:
        record = load_call(conn, call_id, channel)
        if record is None:
            raise CallStateError(f"no call {call_id!r} on channel {channel!r}")
        return record

    @staticmethod
    def _update(
        conn: Connection, record: CallRecord, status: InteractionStatus, **values: Any
    ) -> None:
        conn.execute(sa.update(call_t).where(call_t.c.id == record.id).values(**values))
        conn.execute(
            sa.update(interaction_t)
            .where(interaction_t.c.id == record.interaction_id)
            .values(status=status.value, updated_at=utcnow())
        )
