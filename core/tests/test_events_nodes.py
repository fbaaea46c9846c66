"""Several runners on one PostgreSQL: an event one of them commits wakes every other's
event hub through LISTEN/NOTIFY, long before the next poll."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from switchboard import EventType
from switchboard.testing import open_switchboard

pytestmark = pytest.mark.postgres


async def test_an_event_written_on_one_runner_reaches_anothers_streams_at_once(
    tmp_path: Path, pg_url: str
) -> None:
    config = {"switchboard": {"database_url": pg_url, "default_region": "RU"}}
    a = await open_switchboard(tmp_path / "a", config=config, start=False)
    b = await open_switchboard(tmp_path / "b", config=config, start=False)
    b.events.poll_interval = 60.0  # only a NOTIFY can wake it within the test
    tasks = [asyncio.create_task(b.events.run()), asyncio.create_task(b.events.listen())]
    try:
        sub = b.events.subscribe(lambda e: e.type == EventType.CONTACT_CREATED)
        await asyncio.sleep(0.5)  # the hub has read up to now, the LISTEN holds
        latencies = []
        for i in range(5):
            started = time.monotonic()
            await a.create_contact(f"Olga {i}", [a.parse_address(f"+7495123456{i}")])
            event = await asyncio.wait_for(sub.queue.get(), 5)
            latencies.append(time.monotonic() - started)
            assert event.data["contact"]["name"] == f"Olga {i}"
        assert max(latencies) < 1.0, latencies
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await b.close()


async def test_a_consumer_runs_on_one_runner_and_another_takes_over_when_it_dies(
    tmp_path: Path, pg_url: str
) -> None:
    """An event consumer (a CRM connector, a webhook) on two runners: one holds it and
    handles every event once; when its lock's session is killed, the other takes over
    within ``takeover_seconds`` and goes on from the saved cursor, nothing handled twice."""
    import psycopg

    from switchboard.testing import PG_ADMIN_DSN

    config = {
        "switchboard": {
            "database_url": pg_url,
            "default_region": "RU",
            "nodes": {"takeover_seconds": 1.0},
        }
    }
    got: list[tuple[str, int]] = []
    nodes, tasks = [], []
    for name in ("a", "b"):
        sb = await open_switchboard(tmp_path / name, config=config, start=False)

        async def handle(event: Any, name: str = name) -> None:
            got.append((name, event.id))

        sb.consumers.add("crm", handle, types={"contact.created"})
        tasks += [asyncio.create_task(sb.events.run()), asyncio.create_task(sb.events.listen())]
        nodes.append(sb)
    a, b = nodes
    try:
        await a.consumers.start()
        await until(lambda: a.singletons.states.get("consumer:crm") == "held")
        await b.consumers.start()
        await until(lambda: b.singletons.states.get("consumer:crm") == "standby")
        for i in range(5):
            await a.create_contact(f"Olga {i}", [a.parse_address(f"+7495123450{i}")])
        await until(lambda: len(got) == 5)
        assert {node for node, _ in got} == {"a"}

        # the holder's lock session dies (as when its runner is killed)
        db = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{db}", autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            ).fetchall()
        assert killed == [(True,)]
        started = time.monotonic()
        await until(lambda: b.singletons.states.get("consumer:crm") == "held")
        assert time.monotonic() - started <= 1.5  # takeover_seconds, and a little
        await until(lambda: a.singletons.states.get("consumer:crm") == "standby")

        for i in range(5, 10):
            await a.create_contact(f"Olga {i}", [a.parse_address(f"+7495123450{i}")])
        await until(lambda: len(got) == 10)
        ids = [event_id for _, event_id in got]
        assert len(set(ids)) == 10  # none twice
        assert {node for node, _ in got[5:]} == {"b"}
        health = b.singletons.health()
        assert health["held"] == ["consumer:crm"] and health["node"].endswith(str(os.getpid()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sb in nodes:
            await sb.consumers.stop()
            await sb.close()


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.02)
