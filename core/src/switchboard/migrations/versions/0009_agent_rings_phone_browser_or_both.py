"""agent.ring: where an agent's calls ring (phone, browser or both)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agent") as batch:
        batch.add_column(
            sa.Column("ring", sa.String(length=16), nullable=False, server_default="phone")
        )


def downgrade() -> None:
    with op.batch_alter_table("agent") as batch:
        batch.drop_column("ring")
