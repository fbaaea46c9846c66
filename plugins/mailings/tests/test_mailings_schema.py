"""The mailings plugin's tables: made by its own migration on a new database, adopted
with their rows from a database the core made before the move (core migration 0003), on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from switchboard.core import plugin_schemas
from switchboard.plugins import Plugins
from switchboard.schema import PluginSchema
from switchboard.store import Store
from switchboard.testing import open_switchboard
from switchboard_mailings import Links, MailingsPlugin

TABLES = {"mailing", "mailing_recipient", "list_member", "unsubscribe"}
SECRET = "a-secret-of-twenty-chars"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def schema() -> list[PluginSchema]:
    plugins = Plugins()
    assert plugins.register(MailingsPlugin(), "mailings")
    return await plugin_schemas(plugins)


def tables(store: Store) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names())


def counts(store: Store) -> dict[str, int]:
    with store.read() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def old_mailing(store: Store) -> None:
    """What a database at core revision 0007 held: contacts on a list, one unsubscribed,
    a mailing of two messages, one of them opened."""
    with store.write() as conn:
        for i, name in enumerate(("Olga", "Ivan", "Petr"), start=1):
            conn.execute(
                sa.text("INSERT INTO contact (id, name, created_at) VALUES (:i, :n, :t)"),
                {"i": i, "n": name, "t": NOW},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO list_member (list, contact_id, added_at) VALUES ('news', :i, :t)"
                ),
                {"i": i, "t": NOW},
            )
        conn.execute(
            sa.text("INSERT INTO unsubscribe (contact_id, channel, at) VALUES (3, 'email', :t)"),
            {"t": NOW},
        )
        conn.execute(
            sa.text(
                "INSERT INTO mailing (id, name, channel, template, audience, scheduled_at, total, "
                "skipped, created_at) VALUES (7, 'N1', 'email', 'news', 'news', :t, 2, 1, :t)"
            ),
            {"t": NOW},
        )
        for i in (1, 2):
            conn.execute(
                sa.text(
                    "INSERT INTO interaction (id, contact_id, channel, direction, kind, status, "
                    "created_at) VALUES (:i, :c, 'email', 'outbound', 'email', 'sent', :t)"
                ),
                {"i": 100 + i, "c": i, "t": NOW},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO mailing_recipient (id, mailing_id, interaction_id, contact_id, "
                    "opened_at) VALUES (:r, 7, :i, :c, :o)"
                ),
                {"r": i, "i": 100 + i, "c": i, "o": NOW if i == 1 else None},
            )


async def test_a_database_of_before_the_move_keeps_its_mailings(
    db_url: str, tmp_path: Path
) -> None:
    schemas = await schema()
    store = Store(db_url)
    try:
        store.upgrade("0007")  # the core made the mailing tables until here
        assert tables(store) >= TABLES
        old_mailing(store)
        before = counts(store)
        store.upgrade()  # the core alone: tables holding rows stay
        assert counts(store) == before
        store.upgrade(plugins=schemas)  # the plugin adopts them as they are
        assert (
            counts(store)
            == before
            == {
                "mailing": 1,
                "mailing_recipient": 2,
                "list_member": 3,
                "unsubscribe": 1,
            }
        )
        assert store.plugin_revisions(schemas) == {"mailings": "mailings_0001"}
    finally:
        store.close()

    # and the plugin reads them: figures, and a link of an email sent before the move
    plugin = MailingsPlugin()
    sb = await open_switchboard(
        tmp_path,
        plugin,
        config={
            "switchboard": {"database_url": db_url},
            "plugins": {
                "mailings": {"public_url": "https://crm.example.com", "link_secret": SECRET}
            },
        },
        start=False,
    )
    try:
        service = plugin.mailings
        assert service is not None
        stats = await service.stats(7)
        assert (stats["total"], stats["skipped"], stats["sent"], stats["opened"]) == (2, 1, 2, 1)
        assert await service.lists() == {"news": 3}
        links = Links("https://crm.example.com", SECRET)
        old_token = f"2.{links._sig('r2')}"  # recipient 2, as the core signed it
        assert links.parse(old_token) == ("id", 2)
        assert await service.opened(old_token)
        assert (await service.stats(7))["opened"] == 2
        assert not await service.opened(f"2.{links._sig('r1')}")  # forged
    finally:
        await sb.close()


async def test_a_new_database_has_mailing_tables_only_with_the_plugin(db_url: str) -> None:
    schemas = await schema()
    store = Store(db_url)
    try:
        store.upgrade()
        assert not TABLES & tables(store)  # the core's 0008 dropped 0003's empty tables
        store.upgrade(plugins=schemas)
        assert tables(store) >= TABLES
        assert counts(store) == dict.fromkeys(TABLES, 0)
    finally:
        store.close()
