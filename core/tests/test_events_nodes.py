"""Several runners on one PostgreSQL: an event one of them commits wakes every other's
event hub through LISTEN/NOTIFY, long before the next poll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
