"""the call billing index moves to the console plugin's migrations

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Only the console's call-cost query reads it; the console's own migration
    # (console_0001) makes it again where the console is installed.
    op.drop_index("ix_call_record_billing", table_name="call_record")


def downgrade() -> None:
    op.create_index(
        "ix_call_record_billing",
        "call_record",
        ["direction", "ringing_at", "talk_s", "to_address", "from_address"],
        sqlite_where=sa.text("talk_s > 0"),
        postgresql_where=sa.text("talk_s > 0"),
    )
