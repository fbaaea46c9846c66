"""The MAX plugin's own tables (migrations in ``migrations/``)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: A webhook body, secret checked, kept before MAX gets its 200; deleted once read
#: (:class:`switchboard.KeptBodies`).
webhook_t = sa.Table(
    "max_webhook",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)

#: Where long polling stands (``marker``), saved only after the updates before it were
#: stored: a restart goes on from there, losing nothing.
state_t = sa.Table(
    "max_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)
