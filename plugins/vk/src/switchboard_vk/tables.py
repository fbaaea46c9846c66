"""The VK plugin's own tables (migrations in ``migrations/``)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: A Callback API body, secret checked, kept before VK gets its ``ok``; deleted once read
#: (:class:`switchboard.KeptBodies`).
callback_t = sa.Table(
    "vk_callback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)

#: Where Bots Long Poll stands (``ts``), saved only after the updates before it were stored:
#: a restart goes on from there, losing nothing.
state_t = sa.Table(
    "vk_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)
