"""Plugins' own tables and migrations (register_migrations), on SQLite and PostgreSQL:
a fresh install, a plugin added later, one whose migration fails or whose tables clash,
one uninstalled."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from switchboard import Address, hookimpl
from switchboard.schema import PluginSchema, SchemaError, plugin_schema
from switchboard.store import Store
from switchboard.testing import open_switchboard

MIGRATION = """
import sqlalchemy as sa
from alembic import op

revision = "{name}_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "{table}",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("note", sa.String(100), nullable=False),
    )
    op.execute("INSERT INTO {table} (note) VALUES ('first row')")
    {fail}


def downgrade():
    op.drop_table("{table}")
"""


def plugin(
    folder: Path, name: str, *, fail: bool = False, table: str | None = None
) -> PluginSchema:
    """A plugin's schema: one table (``<name>_note`` unless given) made by one migration,
    which raises after making it when ``fail``."""
    table = table or f"{name.replace('-', '_')}_note"
    versions = folder / name / "migrations"
    versions.mkdir(parents=True)
    (versions / "p0001_notes.py").write_text(
        textwrap.dedent(MIGRATION).format(
            name=name.replace("-", "_"),
            table=table,
            fail="op.execute('SELECT no_such_column FROM no_such_table')" if fail else "",
        )
    )
    metadata = sa.MetaData()
    sa.Table(table, metadata, sa.Column("id", sa.Integer, primary_key=True))
    return PluginSchema(name, versions, metadata)


def tables(store: Store) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names())


@pytest.fixture
def store(db_url: str) -> Any:
    s = Store(db_url)
    yield s
    s.close()


def test_a_fresh_install_makes_the_core_and_each_plugin_table(store: Store, tmp_path: Path) -> None:
    crm, sms = plugin(tmp_path, "crm"), plugin(tmp_path, "acme-sms")
    store.upgrade(plugins=[crm, sms])
    assert {"contact", "crm_note", "acme_sms_note"} <= tables(store)
    assert {"alembic_version_crm", "alembic_version_acme_sms"} <= tables(store)
    assert store.current_revision() == Store.head_revision()
    assert store.plugin_revisions([crm, sms]) == {"crm": "crm_0001", "acme-sms": "acme_sms_0001"}
    store.upgrade(plugins=[crm, sms])  # twice is a no-op
    with store.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM crm_note")).scalar() == 1


def test_a_plugin_installed_later_gets_its_tables_and_an_uninstalled_one_keeps_them(
    store: Store, tmp_path: Path
) -> None:
    store.upgrade()
    crm = plugin(tmp_path, "crm")
    assert store.plugin_revisions([crm]) == {"crm": None}
    store.upgrade(plugins=[crm])
    assert "crm_note" in tables(store)
    store.upgrade()  # the plugin is gone: the core upgrades, its table stays as it was
    assert "crm_note" in tables(store)
    assert store.plugin_revisions([crm]) == {"crm": "crm_0001"}


def test_a_failing_migration_names_the_plugin_and_leaves_nothing_of_it(
    store: Store, tmp_path: Path
) -> None:
    good, bad = plugin(tmp_path, "crm"), plugin(tmp_path, "broken", fail=True)
    with pytest.raises(SchemaError) as caught:
        store.upgrade(plugins=[good, bad])
    assert caught.value.plugin == "broken"
    assert "migration failed" in str(caught.value) and "no_such" in str(caught.value)
    # the core and the plugin before it are upgraded; nothing of the broken one is there
    assert store.current_revision() == Store.head_revision()
    assert "crm_note" in tables(store)
    assert "broken_note" not in tables(store)
    assert store.plugin_revisions([bad]) == {"broken": None}
    # the rest is usable, and starts once the plugin is removed (or fixed)
    assert store.create_contact("Anna", [Address("phone", "+12025550143")]).id is not None
    store.upgrade(plugins=[good])


def test_tables_that_clash_are_refused_before_anything_runs(store: Store, tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="'contact' clashes with the core's") as caught:
        store.upgrade(plugins=[plugin(tmp_path, "impostor", table="contact")])
    assert caught.value.plugin == "impostor"
    first = plugin(tmp_path, "crm")
    second = plugin(tmp_path, "crm2", table="crm_note")
    with pytest.raises(SchemaError, match="'crm_note' clashes with plugin 'crm''s"):
        store.upgrade(plugins=[first, second])
    assert tables(store) == set()  # refused before the core's migrations ran, too


def test_registrations_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="does not exist"):
        plugin_schema("crm", (tmp_path / "nowhere",))
    with pytest.raises(SchemaError, match="MetaData"):
        plugin_schema("crm", (tmp_path, {"crm_note": 1}))
    with pytest.raises(SchemaError, match="name of"):
        plugin_schema("CRM; DROP", (tmp_path,))
    assert plugin_schema("crm", (str(tmp_path),)) == PluginSchema("crm", tmp_path)


class NotesPlugin:
    def __init__(self, schema: PluginSchema) -> None:
        self.schema = schema
        self.plugin_name = schema.plugin

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(self.schema.versions, self.schema.metadata)


async def test_start_up_upgrades_the_plugins_and_stops_on_a_failing_one(
    tmp_path: Path,
) -> None:
    crm = plugin(tmp_path, "crm")
    sb = await open_switchboard(tmp_path / "ok", NotesPlugin(crm))
    try:
        assert sb.store.plugin_revisions(sb.schemas) == {"crm": "crm_0001"}

        def notes(conn: Any) -> list[str]:
            return list(conn.execute(sa.text("SELECT note FROM crm_note")).scalars())

        assert await sb.transaction(notes, write=False) == ["first row"]
    finally:
        await sb.close()
    broken = plugin(tmp_path, "broken", fail=True)
    with pytest.raises(SchemaError, match="plugin 'broken': migration failed"):
        await open_switchboard(tmp_path / "bad", NotesPlugin(broken))
