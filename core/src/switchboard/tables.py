"""Persistence: SQLModel tables. The schema itself is owned by the Alembic migrations in
``switchboard/migrations``; a test checks that these tables and the migrations agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _json() -> Any:
    return Field(default=None, sa_type=sa.JSON, nullable=True)


class AgentRow(SQLModel, table=True):
    __tablename__ = "agent"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    extension: str | None = Field(default=None, max_length=64)
    email: str | None = Field(default=None, max_length=320)
    role: str = Field(default="agent", max_length=32)
    ring: str = Field(default="phone", max_length=16)


class ContactRow(SQLModel, table=True):
    __tablename__ = "contact"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=300)
    company: str | None = Field(default=None, max_length=300)
    owner_agent_id: int | None = Field(default=None, foreign_key="agent.id", index=True)
    created_at: datetime | None = _ts()


class AddressRow(SQLModel, table=True):
    """One address of a contact; (kind, value) is unique, so lookup is one index probe."""

    __tablename__ = "address"
    __table_args__ = (sa.UniqueConstraint("kind", "value", name="uq_address_kind_value"),)

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contact.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=32)
    value: str = Field(max_length=320)


class InteractionRow(SQLModel, table=True):
    """A timeline row; (channel, external_id) is the idempotency key of inbound traffic."""

    __tablename__ = "interaction"
    __table_args__ = (
        sa.UniqueConstraint("channel", "external_id", name="uq_interaction_channel_external_id"),
        sa.Index("ix_interaction_contact_created", "contact_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contact.id", ondelete="CASCADE")
    channel: str = Field(max_length=64)
    direction: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    status: str = Field(max_length=16)
    external_id: str | None = Field(default=None, max_length=255)
    address: str | None = Field(default=None, max_length=400)
    text: str | None = Field(default=None, sa_type=sa.Text)
    subject: str | None = Field(default=None, max_length=998)
    error: str | None = Field(default=None, sa_type=sa.Text)
    meta: dict[str, Any] | None = _json()
    created_at: datetime | None = _ts(nullable=False)
    updated_at: datetime | None = _ts()


class CallRecordRow(SQLModel, table=True):
    __tablename__ = "call_record"
    __table_args__ = (
        sa.UniqueConstraint("channel", "call_id", name="uq_call_record_call_id"),
        # covers the analytics queries: a period's figures come from the index alone
        sa.Index(
            "ix_call_record_analytics",
            "ringing_at",
            "direction",
            "disposition",
            "agent_id",
            "wait_s",
            "talk_s",
            "ivr_last_node",
        ),
        # the calls not yet ended, by runner: what the sweeper reads (switchboard.nodes)
        sa.Index(
            "ix_call_record_open_node",
            "node",
            postgresql_where=sa.text("ended_at IS NULL"),
            sqlite_where=sa.text("ended_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", unique=True, ondelete="CASCADE")
    # a call is found by its id alone (sb.call, GET /api/calls/{id}, a search's hits)
    call_id: str = Field(max_length=255, index=True)
    channel: str = Field(max_length=64)
    direction: str = Field(max_length=16)
    from_address: str = Field(max_length=400)
    to_address: str = Field(max_length=400)
    agent_id: int | None = Field(default=None, foreign_key="agent.id", index=True)
    ringing_at: datetime | None = _ts(index=True)
    answered_at: datetime | None = _ts()
    ended_at: datetime | None = _ts()
    disposition: str | None = Field(default=None, max_length=16)
    ivr_path: list[dict[str, Any]] | None = _json()
    agents_notified: list[int] | None = _json()
    supervision: list[dict[str, Any]] | None = _json()
    recording_path: str | None = Field(default=None, max_length=1024)
    recording_duration: float | None = None
    recording_sha256: str | None = Field(default=None, max_length=64)
    hangup_cause: str | None = Field(default=None, max_length=255)
    # kept for call analytics (sums over a period without date arithmetic per row)
    wait_s: float | None = None
    talk_s: float | None = None
    ivr_last_node: str | None = Field(default=None, max_length=100)
    # the runner handling the call (host:pid): a dead runner's calls are ended by another
    node: str | None = Field(default=None, max_length=100)


class OutboxRow(SQLModel, table=True):
    """A message accepted for sending and not yet sent or given up on.

    Written in the same transaction as its ``queued`` interaction; deleted in the same
    transaction that marks the interaction ``sent`` or ``failed``.
    """

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_due", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", unique=True, ondelete="CASCADE")
    channel: str = Field(max_length=64)
    address: str = Field(max_length=400)
    payload: dict[str, Any] | None = _json()
    attempts: int = 0
    next_attempt_at: datetime | None = _ts(nullable=False)
    locked_until: datetime | None = _ts()
    last_error: str | None = Field(default=None, sa_type=sa.Text)


class EventRow(SQLModel, table=True):
    """The event log behind the live stream and the webhooks.

    Written in the same transaction as the change it reports, so a stored message or call
    step always has its event, and a reader resuming from an id misses nothing.
    """

    __tablename__ = "event"
    __table_args__ = (sa.Index("ix_event_created_at", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    type: str = Field(max_length=32)
    data: dict[str, Any] | None = _json()
    agents: list[int] | None = _json()
    created_at: datetime | None = _ts(nullable=False)


class WebhookCursorRow(SQLModel, table=True):
    """How far each webhook has been delivered (events are sent in order, at least once)."""

    __tablename__ = "webhook_cursor"

    name: str = Field(primary_key=True, max_length=200)
    last_event_id: int = 0
    attempts: int = 0
    next_attempt_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, sa_type=sa.Text)


class WebhookFailureRow(SQLModel, table=True):
    """An event a webhook gave up on after its attempts (kept for a person to look at)."""

    __tablename__ = "webhook_failure"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, index=True)
    event_id: int
    error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime | None = _ts(nullable=False)


class CallIvrStepRow(SQLModel, table=True):
    """One IVR node a call visited (also in the record's ``ivr_path``), for analytics."""

    __tablename__ = "call_ivr_step"
    __table_args__ = (sa.Index("ix_call_ivr_step_ringing", "ringing_at", "node", "digits"),)

    id: int | None = Field(default=None, primary_key=True)
    call_record_id: int = Field(foreign_key="call_record.id", ondelete="CASCADE", index=True)
    ringing_at: datetime | None = _ts(nullable=False)
    node: str = Field(max_length=100)
    digits: str = Field(default="", max_length=32)


class QuarantineRow(SQLModel, table=True):
    """An inbound item a channel could not store (a sender no address book reads, a
    database that refuses it...): kept with the reason for a person to look at, while the
    channel acknowledged it and moved on. One row per (channel, external id)."""

    __tablename__ = "quarantine"
    __table_args__ = (sa.UniqueConstraint("channel", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=64)
    external_id: str = Field(max_length=255)
    reason: str = Field(sa_type=sa.Text)
    raw: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime | None = _ts(nullable=False, index=True)
