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

#: A status that came before the send it is about was recorded as sent (Meta can be that
#: fast): applied when the outbox records the send (hook ``message_sent``).
early_status_t = sa.Table(
    "whatsapp_early_status",
    metadata,
    sa.Column("message_id", sa.String(255), primary_key=True),  # Meta's wamid
    sa.Column("status", sa.String(16), nullable=False),  # delivered, read or failed
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("at", sa.Float, nullable=False),  # epoch seconds
)
