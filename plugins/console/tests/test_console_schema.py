"""The console's own tables and migrations (register_migrations): the billing index the
core made for it (core migration 0005) is the console's now, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from switchboard.core import plugin_schemas
from switchboard.plugins import Plugins
from switchboard.store import Store
from switchboard_console import ConsolePlugin


def indexes(store: Store) -> set[str]:
    return {i["name"] for i in sa.inspect(store.engine).get_indexes("call_record")}


async def test_a_database_of_before_the_move_keeps_its_billing_index(db_url: str) -> None:
    plugins = Plugins()
    assert plugins.register(ConsolePlugin(), "console")
    schemas = await plugin_schemas(plugins)
    assert [s.plugin for s in schemas] == ["console"]
    store = Store(db_url)
    try:
        store.upgrade("0006")  # a database from before plugins had migrations
        assert "ix_call_record_billing" in indexes(store)
        store.upgrade(plugins=schemas)
        assert "ix_call_record_billing" in indexes(store)
        assert store.plugin_revisions(schemas) == {"console": "console_0001"}
        assert "console_signout" in sa.inspect(store.engine).get_table_names()
    finally:
        store.close()


def test_without_the_console_the_core_has_no_billing_index(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.upgrade()
        assert "ix_call_record_billing" not in indexes(store)
    finally:
        store.close()
