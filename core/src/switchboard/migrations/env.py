"""Alembic environment: run against the connection the store hands over."""

from alembic import context
from sqlmodel import SQLModel

import switchboard.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "switchboard migrations run through `switchboard db upgrade` (or Store.upgrade()), "
        "which passes the database connection"
    )

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
