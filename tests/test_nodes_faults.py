"""Three runners on one PostgreSQL, and one of them killed (SIGKILL) mid-work: the
singleton work moves to a survivor within the bound, nothing is lost or handled twice,
and a live-event client that loses its runner resumes on another without a gap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from nodes_rig import ADMIN, TAKEOVER_SECONDS, Node, holder, start_nodes
from sbservice import SseClient

from switchboard_telegram.testing import BotApi, bot_api

pytestmark = pytest.mark.postgres

TOKEN = "4242:TEST-TOKEN"


@pytest.fixture
def telegram_api() -> Iterator[tuple[BotApi, str]]:
    with bot_api(TOKEN) as running:
        yield running


def telegram(url: str) -> str:
    return f"""
[plugins.telegram]
token = "{TOKEN}"
base_url = "{url}/bot"
base_file_url = "{url}/file/bot"
poll_timeout = 1
"""


def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        node.stop()


def test_the_telegram_poller_moves_when_its_node_is_killed_and_nothing_is_lost(
    tmp_path: Path, pg_url: str, telegram_api: tuple[BotApi, str]
) -> None:
    api, url = telegram_api
    nodes = start_nodes(tmp_path, pg_url, telegram(url), "telegram")
    try:
        first, _ = holder(nodes, "telegram:poll")
        assert api.conflicts == 0  # one bot instance polls, not three

        total, pushed = 600, []

        def push() -> None:  # 200 updates a second from 40 users, for 3 s
            for n in range(total):
                user = 1000 + n % 40
                pushed.append(api.push({"message": api.message(user, f"m{n}", message_id=n + 1)}))
                time.sleep(0.005)

        pusher = threading.Thread(target=push)
        pusher.start()
        time.sleep(1.0)
        first.kill()
        killed_at = time.monotonic()
        second, seen_at = holder(nodes, "telegram:poll")
        takeover = seen_at - killed_at
        assert second is not first
        # the lock is free once PostgreSQL sees the session end; the next ask is at most
        # takeover_seconds / 2 away, and health is polled every 50 ms
        assert takeover < TAKEOVER_SECONDS + 1.0, takeover
        pusher.join()

        engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
        try:

            def stored() -> tuple[int, int, int]:
                with engine.connect() as conn:
                    rows = conn.execute(
                        sa.text(
                            "SELECT count(*), count(DISTINCT external_id) FROM interaction "
                            "WHERE channel = 'telegram'"
                        )
                    ).one()
                    events = conn.execute(
                        sa.text("SELECT count(*) FROM event WHERE type = 'message.received'")
                    ).scalar_one()
                return int(rows[0]), int(rows[1]), int(events)

            deadline = time.monotonic() + 20
            while stored()[0] < total and time.monotonic() < deadline:
                time.sleep(0.2)
            rows, distinct, events = stored()
        finally:
            engine.dispose()
        assert len(pushed) == total
        assert (rows, distinct) == (total, total), "an update was lost"
        assert events == total, "an update was handled twice (two message.received events)"
        # the killed node's last getUpdates was still open at the stand-in: the new
        # holder's first poll ends it (one 409 at most); no two live nodes polled
        assert api.conflicts <= 1, api.conflicts
        print(f"telegram poller takeover after SIGKILL: {takeover:.2f} s")
    finally:
        stop_all(nodes)


def test_a_stream_client_that_loses_its_node_resumes_on_another_without_a_gap(
    tmp_path: Path, pg_url: str, telegram_api: tuple[BotApi, str]
) -> None:
    _, url = telegram_api
    a, b, c = nodes = start_nodes(tmp_path, pg_url, telegram(url), "telegram")
    auth = {"Authorization": f"Bearer {ADMIN}"}
    try:

        def add(node: Node, n: int) -> float:
            answer = httpx.post(
                f"{node.url}/api/contacts",
                json={"name": f"Caller {n}", "addresses": [f"+7495{n:07d}"]},
                headers=auth,
                timeout=10,
            )
            assert answer.status_code == 201, answer.text
            return time.monotonic()

        on_b = SseClient(b.url, ADMIN)
        try:
            lags = []
            for n in range(20):  # written on A, seen by a client of B
                written = add(a, n)
                [event] = on_b.take(1, timeout=5)
                lags.append(time.monotonic() - written)
                assert event["event"] == "contact.created"
                assert event["data"]["contact"]["name"] == f"Caller {n}"
            last_id = str(event["id"])
            b.kill()  # with the client's stream open
            deadline = time.monotonic() + 10
            while on_b.lost is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert on_b.lost is not None, "the stream outlived its runner"
        finally:
            on_b.close()
        assert sorted(lags)[-1] < 0.5, lags

        for n in range(20, 40):  # while the client has no runner
            add(a, n)

        on_c = SseClient(c.url, ADMIN, last_event_id=last_id)
        try:
            events = on_c.take(20, timeout=10)
        finally:
            on_c.close()
        names = [e["data"]["contact"]["name"] for e in events]
        assert names == [f"Caller {n}" for n in range(20, 40)]
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids) and ids[0] > int(last_id)
    finally:
        stop_all(nodes)
