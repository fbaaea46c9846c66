"""call_record.node: the runner that handles a call, so another can end it if that one dies

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 19:30:00

With several runners on one PostgreSQL, a runner that dies leaves its calls in flight
``ringing`` or ``answered`` for ever. Each record now names its runner (``host:pid``); a
partial index over the calls not yet ended lets the sweeper find a dead runner's calls
without reading the whole call log.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_record") as batch:
        batch.add_column(sa.Column("node", sa.String(length=100), nullable=True))
    op.create_index(
        "ix_call_record_open_node",
        "call_record",
        ["node"],
        postgresql_where=sa.text("ended_at IS NULL"),
        sqlite_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_call_record_open_node", table_name="call_record")
    with op.batch_alter_table("call_record") as batch:
        batch.drop_column("node")
