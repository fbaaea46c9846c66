"""The plugin's tables (made by ``migrations/``). Full-text search has an index of each
database's own kind, made by the migration beside these: on SQLite the FTS5 table
``speech_fts`` over ``speech_segment.text`` (kept in step by triggers), on PostgreSQL the
``tsv`` column of ``speech_segment`` (the text's ``tsvector`` in its language's
configuration) with a GIN index."""

from __future__ import annotations

import sqlalchemy as sa

from switchboard import UTCDateTime

metadata = sa.MetaData()

#: One recording to analyse; claimed by a worker with a lease (docs/speech.md, "Jobs").
job_t = sa.Table(
    "speech_job",
    metadata,
    sa.Column("call_id", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # queued working done failed...
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("due", sa.Float, nullable=False),  # not before (epoch seconds)
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("worker", sa.String(100), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    sa.Index("ix_speech_job_due", "state", "due"),
)

#: What the analysis found for a call: the metrics, the score, which backend and language.
result_t = sa.Table(
    "speech_result",
    metadata,
    sa.Column("call_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # done silent unreadable...
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("agent_id", sa.Integer, nullable=True),
    sa.Column("contact_id", sa.Integer, nullable=True),
    sa.Column("call_at", UTCDateTime(timezone=True), nullable=True),  # the call's ringing_at
    sa.Column("language", sa.String(16), nullable=False),
    sa.Column("backend", sa.String(100), nullable=False),
    sa.Column("transcribed", sa.Boolean, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("analysed_at", UTCDateTime(timezone=True), nullable=False),
    sa.Index("ix_speech_result_agent", "agent_id", "call_at"),
    sa.Index("ix_speech_result_contact", "contact_id"),
)

#: One turn of the transcript: who spoke, when, what (and each word's time).
segment_t = sa.Table(
    "speech_segment",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(200), nullable=False),
    sa.Column("speaker", sa.String(16), nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("words", sa.JSON, nullable=False),
    sa.Column("language", sa.String(16), nullable=False),
    sa.Index("ix_speech_segment_call", "call_id", "start"),
)
