"""amocrm: the external-id map and the rotating OAuth pair

Revision ID: amocrm_0001
Revises:
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from switchboard import UTCDateTime
from switchboard.crm import links_columns

revision: str = "amocrm_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("amocrm_link", *links_columns())
    op.create_table(
        "amocrm_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("amocrm_token")
    op.drop_table("amocrm_link")
