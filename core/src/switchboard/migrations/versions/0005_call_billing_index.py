"""call billing index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # answered calls by direction and period with their numbers: what call costs read
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.create_index(
            "ix_call_record_billing",
            ["direction", "ringing_at", "talk_s", "to_address", "from_address"],
            unique=False,
            sqlite_where=sa.text("talk_s > 0"),
            postgresql_where=sa.text("talk_s > 0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.drop_index("ix_call_record_billing")
