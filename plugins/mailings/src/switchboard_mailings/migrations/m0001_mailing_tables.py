"""mailings: lists, unsubscribes, mailings and their recipients (adopted from the core)

Revision ID: mailings_0001
Revises:
Create Date: 2026-11-30 22:30:00

The core made these tables until its migration 0008, which kept them where they held
rows. Here they are made where missing (a new database, or the core dropped them empty)
and adopted as they are otherwise: same names, same columns, nothing copied.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from switchboard import UTCDateTime

revision: str = "mailings_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "mailing" not in present:
        op.create_table(
            "mailing",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("channel", sa.String(length=64), nullable=False),
            sa.Column("template", sa.String(length=200), nullable=False),
            sa.Column("audience", sa.String(length=100), nullable=False),
            sa.Column("scheduled_at", UTCDateTime(timezone=True), nullable=False),
            sa.Column("rate_per_minute", sa.Float(), nullable=True),
            sa.Column("total", sa.Integer(), nullable=False),
            sa.Column("skipped", sa.Integer(), nullable=False),
            sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
    if "list_member" not in present:
        op.create_table(
            "list_member",
            sa.Column("list", sa.String(length=100), nullable=False),
            sa.Column("contact_id", sa.Integer(), nullable=False),
            sa.Column("added_at", UTCDateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["contact_id"], ["contact.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("list", "contact_id"),
        )
        op.create_index("ix_list_member_contact", "list_member", ["contact_id"])
    if "unsubscribe" not in present:
        op.create_table(
            "unsubscribe",
            sa.Column("contact_id", sa.Integer(), nullable=False),
            sa.Column("channel", sa.String(length=64), nullable=False),
            sa.Column("at", UTCDateTime(timezone=True), nullable=False),
            sa.Column("source", sa.String(length=200), nullable=True),
            sa.ForeignKeyConstraint(["contact_id"], ["contact.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("contact_id", "channel"),
        )
    if "mailing_recipient" not in present:
        op.create_table(
            "mailing_recipient",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("mailing_id", sa.Integer(), nullable=False),
            sa.Column("interaction_id", sa.Integer(), nullable=False),
            sa.Column("contact_id", sa.Integer(), nullable=False),
            sa.Column("opened_at", UTCDateTime(timezone=True), nullable=True),
            sa.Column("clicked_at", UTCDateTime(timezone=True), nullable=True),
            sa.Column("replied_at", UTCDateTime(timezone=True), nullable=True),
            sa.Column("bounced_at", UTCDateTime(timezone=True), nullable=True),
            sa.Column("unsubscribed_at", UTCDateTime(timezone=True), nullable=True),
            sa.ForeignKeyConstraint(["contact_id"], ["contact.id"], ondelete="CASCADE"),
            sa.ForeignKeyConstraint(["interaction_id"], ["interaction.id"], ondelete="CASCADE"),
            sa.ForeignKeyConstraint(["mailing_id"], ["mailing.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("interaction_id"),
        )
        op.create_index("ix_mailing_recipient_mailing", "mailing_recipient", ["mailing_id"])


def downgrade() -> None:
    # a plugin's tables outlive it (docs/writing-a-plugin.md): nothing is dropped
    pass
