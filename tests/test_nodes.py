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

from switchboard import Direction
from switchboard.testing import open_switchboard, serve_in_thread


@pytest.mark.postgres
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


def test_calls_an_earlier_runner_left_unended_are_ended_when_serve_starts(tmp_path: Path) -> None:
    """SQLite: one runner. The calls a killed process left ringing or talking are ended
    when the next one starts ("runner lost"), so the call log and the agents' state do not
    show them for ever."""
    app, _ = start_service(tmp_path)
    with serve_in_thread(app) as running:
        sb = running.switchboard
        sb.singletons.node = "gone-host:4242"  # as if another process had written these

        async def calls() -> None:
            await sb.calls.ringing(
                "voice",
                "talking",
                direction=Direction.INBOUND,
                from_address="+74951110001",
                to_address="100",
            )
            anna = await sb.agent("anna")
            await sb.calls.answered("voice", "talking", anna)
            await sb.calls.ringing(
                "voice",
                "ringing",
                direction=Direction.INBOUND,
                from_address="+74951110002",
                to_address="100",
            )

        running.call(calls())
    app, _ = start_service(tmp_path)
    with serve_in_thread(app) as running:
        talking = running.switchboard.store.get_call("talking", "voice")
        ringing = running.switchboard.store.get_call("ringing", "voice")
    assert talking is not None and ringing is not None
    lost = "runner lost: gone-host:4242"
    assert (talking.disposition, talking.hangup_cause) == ("answered", lost)
    assert (ringing.disposition, ringing.hangup_cause) == ("missed", lost)
