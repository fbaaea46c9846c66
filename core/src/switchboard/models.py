"""Value objects passed to hooks and returned by the store.

They are frozen attrs classes, so a plugin cannot change the core's state by mutating an
argument, and new fields can be added without changing any hook signature.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import attrs

from switchboard.address import Address


def utcnow() -> datetime:
    return datetime.now(UTC)


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class InteractionKind(enum.StrEnum):
    MESSAGE = "message"
    EMAIL = "email"
    CALL = "call"
    TASK = "task"


class InteractionStatus(enum.StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"  # the channel says it reached the recipient's device
    READ = "read"  # the channel says the recipient read it
    FAILED = "failed"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"
    OPEN = "open"  # a task to do (a callback)
    DONE = "done"


class Disposition(enum.StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"
    BUSY = "busy"
    FAILED = "failed"
    ABANDONED = "abandoned"
    VOICEMAIL = "voicemail"


class EventType(enum.StrEnum):
    """The types of events in the event log (the live stream, webhooks): the one list."""

    CALL_RINGING = "call.ringing"
    CALL_ANSWERED = "call.answered"
    CALL_ENDED = "call.ended"
    CALL_RECORDED = "call.recorded"
    CALL_TRANSFERRED = "call.transferred"
    CALL_SUPERVISED = "call.supervised"
    MESSAGE_RECEIVED = "message.received"
    MESSAGE_EDITED = "message.edited"
    MESSAGE_DELETED = "message.deleted"
    MESSAGE_QUARANTINED = "message.quarantined"
    MESSAGE_SENT = "message.sent"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_READ = "message.read"
    CONTACT_CREATED = "contact.created"
    CONTACT_MERGED = "contact.merged"
    TASK_CREATED = "task.created"
    TASK_DONE = "task.done"


class Role(enum.StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"


class Ring(enum.StrEnum):
    """Where an agent's calls ring: the desk phone (``extension``), the console's browser
    softphone, or both (the first to answer takes the call)."""

    PHONE = "phone"
    BROWSER = "browser"
    BOTH = "both"


@attrs.frozen
class Agent:
    """An employee who takes calls and answers messages."""

    id: int | None
    name: str
    extension: str | None = None
    email: str | None = None
    role: Role = Role.AGENT
    ring: Ring = Ring.PHONE

    @property
    def rings_phone(self) -> bool:
        return self.ring is not Ring.BROWSER and bool(self.extension)

    @property
    def rings_browser(self) -> bool:
        return self.ring is not Ring.PHONE


@attrs.frozen
class Contact:
    """A person or company. ``id`` is None for a contact not (yet) in the store.

    A ``resolve_contact`` implementation returns one of these: with the ``id`` of a stored
    contact, or with ``id=None`` and the details the core should store for a new one.
    """

    id: int | None
    name: str
    company: str | None = None
    addresses: tuple[Address, ...] = ()
    owner_agent_id: int | None = None
    created_at: datetime | None = None


@attrs.frozen
class Interaction:
    """One row of a contact's timeline: a message, an email or a call."""

    id: int
    contact_id: int
    channel: str
    direction: Direction
    kind: InteractionKind
    status: InteractionStatus
    external_id: str | None
    address: Address | None
    text: str | None = None
    subject: str | None = None
    error: str | None = None
    meta: dict[str, Any] = attrs.field(factory=dict)
    created_at: datetime = attrs.field(factory=utcnow)


class SupervisionMode(enum.StrEnum):
    """How a supervisor joins a live call."""

    LISTEN = "listen"  # hears both sides, is heard by nobody
    WHISPER = "whisper"  # heard by the agent only
    BARGE = "barge"  # heard by both


@attrs.frozen
class Supervision:
    """A supervisor joined a live call, or changed how (``mode``), at ``at``."""

    agent_id: int
    mode: SupervisionMode
    at: datetime = attrs.field(factory=utcnow)


@attrs.frozen
class IvrStep:
    """One node of an IVR flow a caller went through, and the digits pressed there."""

    node: str
    digits: str = ""
    at: datetime = attrs.field(factory=utcnow)


@attrs.frozen
class Recording:
    path: str
    duration: float
    sha256: str


@attrs.frozen
class CallRecord:
    """The detail of a call interaction; grows as the call goes on."""

    id: int
    interaction_id: int
    contact_id: int
    call_id: str
    channel: str
    direction: Direction
    from_address: str
    to_address: str
    status: InteractionStatus
    agent_id: int | None = None
    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    disposition: Disposition | None = None
    ivr_path: tuple[IvrStep, ...] = ()
    recording: Recording | None = None
    hangup_cause: str | None = None
    agents_notified: tuple[int, ...] = ()
    supervision: tuple[Supervision, ...] = ()
