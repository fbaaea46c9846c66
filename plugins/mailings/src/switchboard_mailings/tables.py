"""The plugin's tables (migrations in ``migrations/``). Until 0.2 the core made them
(its migration 0003); ``mailings_0001`` adopts them where they hold data, with the same
names and columns, so existing databases keep their mailings."""

from __future__ import annotations

import sqlalchemy as sa

from switchboard import UTCDateTime

metadata = sa.MetaData()


def _ts(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


#: A contact on a named list (the audience of mailings).
list_member_t = sa.Table(
    "list_member",
    metadata,
    sa.Column("list", sa.String(100), primary_key=True),
    sa.Column(
        "contact_id",
        sa.Integer,
        sa.ForeignKey("contact.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    _ts("added_at", nullable=False),
    sa.Index("ix_list_member_contact", "contact_id"),
)

#: A contact who asked for no more mailings on a channel.
unsubscribe_t = sa.Table(
    "unsubscribe",
    metadata,
    sa.Column(
        "contact_id",
        sa.Integer,
        sa.ForeignKey("contact.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("channel", sa.String(64), primary_key=True),
    _ts("at", nullable=False),
    sa.Column("source", sa.String(200)),
)

#: A message from a template to every contact on a list.
mailing_t = sa.Table(
    "mailing",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("template", sa.String(200), nullable=False),
    sa.Column("audience", sa.String(100), nullable=False),
    _ts("scheduled_at", nullable=False),
    sa.Column("rate_per_minute", sa.Float),
    sa.Column("total", sa.Integer, nullable=False),
    sa.Column("skipped", sa.Integer, nullable=False),
    _ts("created_at", nullable=False),
)

#: One recipient of a mailing: its message (interaction) and what they did with it.
recipient_t = sa.Table(
    "mailing_recipient",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "mailing_id", sa.Integer, sa.ForeignKey("mailing.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "interaction_id",
        sa.Integer,
        sa.ForeignKey("interaction.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    sa.Column(
        "contact_id", sa.Integer, sa.ForeignKey("contact.id", ondelete="CASCADE"), nullable=False
    ),
    _ts("opened_at"),
    _ts("clicked_at"),
    _ts("replied_at"),
    _ts("bounced_at"),
    _ts("unsubscribed_at"),
    sa.Index("ix_mailing_recipient_mailing", "mailing_id"),
)
