from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from switchboard import Address, Agent, Role
from switchboard.store import Store, address_t


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
    assert Store.head_revision() == "0003"


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
