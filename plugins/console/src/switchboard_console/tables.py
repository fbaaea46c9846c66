"""The console's own tables (migrations in ``migrations/``, applied by the core through
the ``register_migrations`` hook; see docs/writing-a-plugin.md)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: Signed-out sessions: a session cookie whose id is here is refused by every runner
#: sharing the database until ``until`` (epoch seconds), when the cookie expires anyway.
signout_t = sa.Table(
    "console_signout",
    metadata,
    sa.Column("session", sa.String(64), primary_key=True),  # sha256 of the session id
    sa.Column("until", sa.Float, nullable=False, index=True),
)
