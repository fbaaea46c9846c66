"""speech: jobs, results, transcript segments and their full-text index

Revision ID: speech_0001
Revises:
Create Date: 2026-12-01 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from switchboard import UTCDateTime

revision: str = "speech_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "speech_job",
        sa.Column("call_id", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(length=100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_id"),
    )
    op.create_index("ix_speech_job_due", "speech_job", ["state", "due"])
    op.create_table(
        "speech_result",
        sa.Column("call_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("call_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("backend", sa.String(length=100), nullable=False),
        sa.Column("transcribed", sa.Boolean(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("analysed_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("call_id"),
    )
    op.create_index("ix_speech_result_agent", "speech_result", ["agent_id", "call_at"])
    op.create_index("ix_speech_result_contact", "speech_result", ["contact_id"])
    op.create_table(
        "speech_segment",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=200), nullable=False),
        sa.Column("speaker", sa.String(length=16), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("words", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_speech_segment_call", "speech_segment", ["call_id", "start"])
    if op.get_bind().dialect.name == "postgresql":
        # filled on insert with the segment's language's configuration (search.py)
        op.execute("ALTER TABLE speech_segment ADD COLUMN tsv tsvector")
        op.execute("CREATE INDEX ix_speech_segment_tsv ON speech_segment USING gin (tsv)")
    else:
        op.execute(
            "CREATE VIRTUAL TABLE speech_fts USING fts5(text, content='speech_segment', "
            "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
        )
        op.execute(
            "CREATE TRIGGER speech_segment_ai AFTER INSERT ON speech_segment BEGIN "
            "INSERT INTO speech_fts(rowid, text) VALUES (new.id, new.text); END"
        )
        op.execute(
            "CREATE TRIGGER speech_segment_ad AFTER DELETE ON speech_segment BEGIN "
            "INSERT INTO speech_fts(speech_fts, rowid, text) VALUES ('delete', old.id, old.text);"
            " END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE IF EXISTS speech_fts")
    op.drop_table("speech_segment")
    op.drop_table("speech_result")
    op.drop_table("speech_job")
