"""A runner on PostgreSQL beside others: ``events:listen`` runs, and an event another
runner commits reaches this runner's SSE clients at once (LISTEN/NOTIFY), not at the
hub's next poll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sbservice import TOKENS, SseClient, start_service

from switchboard.testing import open_switchboard, serve_in_thread

pytestmark = pytest.mark.postgres


def test_an_event_another_runner_commits_reaches_this_runners_stream(
    tmp_path: Path, pg_url: str
) -> None:
    app, _ = start_service(tmp_path / "b", database_url=pg_url)
    with serve_in_thread(app) as running:
        running.switchboard.events.poll_interval = 60.0  # only a NOTIFY wakes it in time
        health = httpx.get(
            running.url + "/api/health",
            headers={"Authorization": f"Bearer {TOKENS['admin']}"},
            timeout=5,
        ).json()
        assert health["loops"]["events:listen"]["state"] == "running"
        stream = SseClient(running.url, TOKENS["admin"])
        try:
            time.sleep(1.5)  # the hub's wait with the old poll interval has ended

            async def other_runner() -> None:
                config = {"switchboard": {"database_url": pg_url, "default_region": "RU"}}
                a = await open_switchboard(tmp_path / "a", config=config, start=False)
                try:
                    await a.create_contact("Olga", [a.parse_address("+74951234567")])
                finally:
                    await a.close()

            started = time.monotonic()
            asyncio.run(other_runner())
            [event] = stream.take(1, timeout=5)
            assert event["event"] == "contact.created", event
            assert time.monotonic() - started < 2.0
        finally:
            stream.close()
