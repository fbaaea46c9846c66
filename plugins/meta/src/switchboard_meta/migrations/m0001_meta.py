"""meta: webhook bodies kept until read (per channel); who wrote to which Page

Revision ID: meta_0001
Revises:
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "meta_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for name in ("meta_messenger_webhook", "meta_instagram_webhook"):
        op.create_table(
            name,
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("body", sa.LargeBinary(), nullable=False),
            sa.Column("received_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    op.create_table(
        "meta_peer",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("page_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("channel", "user_id"),
    )


def downgrade() -> None:
    op.drop_table("meta_peer")
    op.drop_table("meta_instagram_webhook")
    op.drop_table("meta_messenger_webhook")
