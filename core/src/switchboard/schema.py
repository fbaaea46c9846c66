"""The database schema: the core's Alembic migrations and each plugin's own.

A plugin that keeps data declares its tables and its migrations with the
``register_migrations`` hook (docs/hooks.md). Every plugin's migrations are a separate
Alembic history with a version table of its own (``alembic_version_<plugin>``), run with
the core's ``env.py`` after the core is at its head, each plugin in a transaction of its
own. So a plugin's migrations depend only on the core's; a plugin added later gets its
tables at the next start; an uninstalled plugin's tables and version table stay as they
are; and a plugin whose migration fails is rolled back and named, leaving the core and
the other plugins upgraded.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Sequence
from pathlib import Path

import attrs
import sqlalchemy as sa
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

CORE_VERSION_TABLE = "alembic_version"
_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_-]{0,40}")


class SchemaError(Exception):
    """A plugin's tables or migrations cannot be applied; ``plugin`` names it."""

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(f"plugin {plugin!r}: {reason}")
        self.plugin = plugin
        self.reason = reason


@attrs.frozen
class PluginSchema:
    """What a plugin registered: the folder of its Alembic revisions and the ``MetaData``
    holding its tables (for the clash check, and as the migrations' target metadata)."""

    plugin: str
    versions: Path
    metadata: sa.MetaData | None = None

    @property
    def version_table(self) -> str:
        return f"{CORE_VERSION_TABLE}_{self.plugin.replace('-', '_')}"

    def tables(self) -> set[str]:
        return set(self.metadata.tables) if self.metadata is not None else set()


def plugin_schema(plugin: str, args: tuple[object, ...]) -> PluginSchema:
    """Check one ``register(versions, metadata=None)`` call of ``plugin``."""
    if not _PLUGIN_NAME.fullmatch(plugin):
        raise SchemaError(plugin, "a plugin with tables needs a name of a-z, 0-9, - and _")
    if not 1 <= len(args) <= 2:
        raise SchemaError(plugin, f"register() takes (versions, metadata=None), got {args!r}")
    versions = args[0]
    metadata = args[1] if len(args) == 2 else None
    if not isinstance(versions, str | Path) or not Path(versions).is_dir():
        raise SchemaError(plugin, f"migrations folder {versions!r} does not exist")
    if metadata is not None and not isinstance(metadata, sa.MetaData):
        raise SchemaError(plugin, f"metadata must be a sqlalchemy MetaData, got {metadata!r}")
    return PluginSchema(plugin, Path(versions), metadata)


def check_clashes(schemas: Sequence[PluginSchema]) -> None:
    """A plugin's table may not share a name with the core's or another plugin's."""
    owners = {name: "the core" for name in SQLModel.metadata.tables}
    owners[CORE_VERSION_TABLE] = "the core"
    seen: set[str] = set()
    for schema in schemas:
        if schema.plugin in seen:
            raise SchemaError(schema.plugin, "registered its migrations twice")
        seen.add(schema.plugin)
        for table in sorted(schema.tables() | {schema.version_table}):
            if table in owners:
                raise SchemaError(schema.plugin, f"table {table!r} clashes with {owners[table]}'s")
            owners[table] = f"plugin {schema.plugin!r}"


def alembic_config(conn: Connection | None, schema: PluginSchema | None = None) -> AlembicConfig:
    """The Alembic configuration for the core (``schema`` None) or one plugin."""
    cfg = AlembicConfig()
    cfg.set_main_option(
        "script_location", str(importlib.resources.files("switchboard") / "migrations")
    )
    if schema is not None:
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_locations", str(schema.versions))
        cfg.attributes["version_table"] = schema.version_table
        cfg.attributes["target_metadata"] = schema.metadata or sa.MetaData()
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def revision_in(conn: Connection, version_table: str) -> str | None:
    """The revision recorded in ``version_table`` (None before the first upgrade)."""
    if not sa.inspect(conn).has_table(version_table):
        return None
    table = sa.table(version_table, sa.column("version_num"))
    return conn.execute(sa.select(table.c.version_num)).scalar()
