"""console: signed-out sessions; the call billing index (was core migration 0005)

Revision ID: console_0001
Revises:
Create Date: 2026-11-30 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "console_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_signout",
        sa.Column("session", sa.String(length=64), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("session"),
    )
    op.create_index("ix_console_signout_until", "console_signout", ["until"])
    # answered calls by direction and period with their numbers: what call costs read
    # (tariff.py). The core's 0007 dropped the index it had made for the console.
    op.create_index(
        "ix_call_record_billing",
        "call_record",
        ["direction", "ringing_at", "talk_s", "to_address", "from_address"],
        sqlite_where=sa.text("talk_s > 0"),
        postgresql_where=sa.text("talk_s > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_call_record_billing", table_name="call_record")
    op.drop_index("ix_console_signout_until", table_name="console_signout")
    op.drop_table("console_signout")
