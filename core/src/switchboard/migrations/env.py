"""Alembic environment: run against the connection the store hands over."""

from typing import Any

from alembic import context
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

import switchboard.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "switchboard migrations run through `switchboard db upgrade` (or Store.upgrade()), "
        "which passes the database connection"
    )


def render_item(type_: str, obj: Any, autogen_context: Any) -> Any:
    """Write SQLModel's AutoString as plain sa.String, so migrations need no sqlmodel."""
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})"
    return False


# a plugin's migrations (switchboard.schema) come with its own version table and tables
context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata", SQLModel.metadata),
    version_table=config.attributes.get("version_table", "alembic_version"),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
