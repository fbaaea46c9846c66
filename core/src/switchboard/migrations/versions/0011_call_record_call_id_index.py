"""call_record.call_id indexed on its own: a call is looked up by its id alone

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 16:40:00

The unique constraint is (channel, call_id), which does not serve a lookup by call_id
alone (``sb.call``, ``GET /api/calls/{id}``, the hits of a transcript search): without this
index each was a scan of the whole call log.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_call_record_call_id", "call_record", ["call_id"])


def downgrade() -> None:
    op.drop_index("ix_call_record_call_id", table_name="call_record")
