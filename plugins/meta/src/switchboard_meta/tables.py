"""The Meta plugin's own tables (migrations in ``migrations/``)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()


def _kept(name: str) -> sa.Table:
    """Signed webhook bodies of one channel, kept before Meta gets its 200 and deleted once
    read (:class:`switchboard.KeptBodies`)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),  # the bytes as received
        sa.Column("received_at", sa.Float, nullable=False),  # epoch seconds
    )


#: Webhook bodies per channel: ``object`` ``page`` (Messenger) and ``instagram``.
webhook_tables = {
    "messenger": _kept("meta_messenger_webhook"),
    "instagram": _kept("meta_instagram_webhook"),
}

#: Who wrote to which Page (or Instagram account): a PSID / IGSID is scoped to one, so a
#: reply must go out through it. Learned from inbound messages, with the profile's name.
peer_t = sa.Table(
    "meta_peer",
    metadata,
    sa.Column("channel", sa.String(16), primary_key=True),  # messenger or instagram
    sa.Column("user_id", sa.String(64), primary_key=True),  # PSID or IGSID
    sa.Column("page_id", sa.String(64), nullable=False),  # the Page (or Instagram account)
    sa.Column("name", sa.String(300), nullable=True),  # from the profile API, if it answered
)
