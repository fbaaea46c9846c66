"""Store backends for the core's tests: every test that takes ``db_url`` runs against a
SQLite file and against a throwaway database on the PostgreSQL server at 127.0.0.1:5432."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard import Switchboard
from switchboard.testing import open_switchboard

PG_ADMIN_DSN = os.environ.get(
    "SWITCHBOARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_unavailable(reason: str) -> None:
    message = (
        f"PostgreSQL not reachable at {PG_ADMIN_DSN} ({reason}); "
        "install it with: apt-get install postgresql"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _pg_unavailable(str(exc).strip())
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def open_sb(db_url: str, tmp_path: Path) -> Any:
    """``await open_sb(*plugins, config=...)``: a Switchboard on this test's backend."""
    opened: list[Switchboard] = []

    async def factory(
        *plugin_objects: object, config: dict[str, Any] | None = None, start: bool = True
    ) -> Switchboard:
        cfg = {k: dict(v) for k, v in (config or {}).items()}
        cfg.setdefault("switchboard", {}).setdefault("database_url", db_url)
        folder = tmp_path / f"sb{len(opened)}"
        folder.mkdir()
        sb = await open_switchboard(folder, *plugin_objects, config=cfg, start=start)
        opened.append(sb)
        return sb

    factory_t: Callable[..., Awaitable[Switchboard]] = factory
    yield factory_t
    for sb in opened:
        await sb.close()
