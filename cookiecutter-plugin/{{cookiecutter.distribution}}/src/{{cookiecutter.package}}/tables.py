"""The plugin's own tables. The core creates them through the plugin's migrations
(``migrations/``, registered by the ``register_migrations`` hook), each plugin with its
own Alembic history and version table; name tables after the plugin so that they never
clash with the core's or another plugin's."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: What the gateway answered to each send: the message's id at the gateway (or nothing)
#: and the HTTP status, for the plugin's own statistics and support questions.
gateway_reply_t = sa.Table(
    "{{ cookiecutter.package[12:] }}_gateway_reply",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),  # epoch seconds
)
