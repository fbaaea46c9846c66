from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from switchboard import Address, Agent, Role
from switchboard.store import Store, address_t
from switchboard.tables import UTCDateTime


@pytest.fixture
def store(db_url: str):  # type: ignore[no-untyped-def]
    s = Store(db_url)
    s.upgrade()
    yield s
    s.close()


def test_migrations_match_the_tables(store: Store) -> None:
    assert store.current_revision() == Store.head_revision()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_head_is_the_newest_migration() -> None:
    assert Store.head_revision() == "0012"


def test_upgrade_twice_is_a_no_op(store: Store) -> None:
    store.upgrade()
    assert store.current_revision() == Store.head_revision()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Store(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    s.close()


def test_address_belongs_to_one_contact(store: Store) -> None:
    phone = Address("phone", "+74951234567")
    anna = store.create_contact(
        "Anna", [phone, Address("email", "anna@example.com")], company="Acme"
    )
    assert store.find_contact_id(phone) == anna.id
    found = store.find_contact(Address("email", "anna@example.com"))
    assert found is not None
    assert (found.name, found.company, found.addresses) == ("Anna", "Acme", anna.addresses)
    with pytest.raises(IntegrityError):
        store.create_contact("Impostor", [phone])
    assert store.count(address_t) == 2  # the failed insert left nothing behind
    assert store.find_contact(Address("phone", "+10000000000")) is None


def test_lookup_uses_the_unique_index(store: Store) -> None:
    insp = sa.inspect(store.engine)
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("address")}
    assert ("kind", "value") in uniques


def test_agents_sync_by_name(store: Store) -> None:
    store.sync_agents([Agent(None, "anna", "101"), Agent(None, "bob", "102", role=Role.ADMIN)])
    store.sync_agents([Agent(None, "anna", "201", "anna@example.com")])
    agents = {a.name: a for a in store.list_agents()}
    assert agents["anna"].extension == "201"
    assert agents["anna"].email == "anna@example.com"
    assert agents["bob"].role is Role.ADMIN  # kept: not in config any more, but has history
    assert store.get_agent("201") == agents["anna"]
    assert store.get_agent(agents["bob"].id or 0) == agents["bob"]


def test_migration_0004_fills_analytics_columns_of_stored_calls(db_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    s = Store(db_url)
    try:
        s.upgrade("0003")
        t0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
        with s.engine.begin() as conn:
            contact = conn.execute(
                sa.text("INSERT INTO contact (name, created_at) VALUES ('x', :t) RETURNING id"),
                {"t": t0},
            ).scalar_one()
            interaction = conn.execute(
                sa.text(
                    "INSERT INTO interaction (contact_id, channel, direction, kind, status, "
                    "created_at) VALUES (:c, 'sip', 'inbound', 'call', 'ended', :t) RETURNING id"
                ),
                {"c": contact, "t": t0},
            ).scalar_one()
            calls = sa.table(
                "call_record",
                *(
                    sa.column(n)
                    for n in (
                        "interaction_id",
                        "call_id",
                        "channel",
                        "direction",
                        "from_address",
                        "to_address",
                        "disposition",
                    )
                ),
                sa.column("ringing_at", UTCDateTime()),
                sa.column("answered_at", UTCDateTime()),
                sa.column("ended_at", UTCDateTime()),
                sa.column("ivr_path", sa.JSON()),
            )
            conn.execute(
                sa.insert(calls).values(
                    interaction_id=interaction,
                    call_id="old",
                    channel="sip",
                    direction="inbound",
                    from_address="a",
                    to_address="b",
                    disposition="answered",
                    ringing_at=t0,
                    answered_at=t0 + timedelta(seconds=7),
                    ended_at=t0 + timedelta(seconds=67),
                    ivr_path=[{"node": "menu", "digits": "2", "at": t0.isoformat()}],
                )
            )
        s.upgrade()
        with s.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT wait_s, talk_s, ivr_last_node FROM call_record")
            ).one()
            step = conn.execute(sa.text("SELECT node, digits FROM call_ivr_step")).one()
        assert (row[0], row[1], row[2]) == (7.0, 60.0, "menu")
        assert tuple(step) == ("menu", "2")
    finally:
        s.close()
