"""The WhatsApp plugin's own table (migrations in ``migrations/``): signed webhook bodies
kept as received until the channel has turned them into messages and statuses."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: A webhook body Meta sent, signature checked, kept before the 200: nothing acknowledged
#: is lost if the runner dies before it is read. Deleted once read.
webhook_t = sa.Table(
    "whatsapp_webhook",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),  # the bytes as received
    sa.Column("received_at", sa.Float, nullable=False),  # epoch seconds
)
