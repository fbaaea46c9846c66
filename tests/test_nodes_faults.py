"""Three runners on one PostgreSQL, each in a network namespace of its own (a host of
its own: tests/nodes_rig.py), and one of them killed (SIGKILL) mid-work: the singleton
work moves to a survivor within the bound, nothing is lost or handled twice, and a
live-event client that loses its runner resumes on another without a gap."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from nodes_rig import (
    ADMIN,
    SERVICES,
    TAKEOVER_SECONDS,
    TELEGRAM_TOKEN,
    Node,
    NodeNetwork,
    holder,
    start_nodes,
    telegram_table,
)
from sbservice import SseClient

from switchboard import Address
from switchboard.testing import LoopbackPlugin, free_port, open_switchboard
from switchboard_email import EmailChannel, EmailSettings
from switchboard_mailings import MailingsPlugin
from switchboard_telegram.testing import BotApi, bot_api

pytestmark = pytest.mark.postgres


@pytest.fixture
def net() -> Iterator[NodeNetwork]:
    network = NodeNetwork(3).start()
    try:
        yield network
    finally:
        network.stop()


@pytest.fixture
def telegram_api(net: NodeNetwork) -> Iterator[tuple[BotApi, str]]:
    with bot_api(TELEGRAM_TOKEN, host=SERVICES) as running:
        yield running


def stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        node.stop()


def test_the_telegram_poller_moves_when_its_node_is_killed_and_nothing_is_lost(
    tmp_path: Path, net: NodeNetwork, pg_url: str, telegram_api: tuple[BotApi, str]
) -> None:
    api, url = telegram_api
    nodes = start_nodes(tmp_path, net, pg_url, telegram_table(url), "telegram")
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
    tmp_path: Path, net: NodeNetwork, pg_url: str, telegram_api: tuple[BotApi, str]
) -> None:
    _, url = telegram_api
    a, b, c = nodes = start_nodes(tmp_path, net, pg_url, telegram_table(url), "telegram")
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


class Sink:
    """aiosmtpd counting what arrives per (subject tag, recipient)."""

    def __init__(self) -> None:
        self.got: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        subject = message_from_bytes(envelope.content).get("Subject", "")
        tag = subject.split(" ", 1)[0]
        with self._lock:
            for rcpt in envelope.rcpt_tos:
                self.got[(tag, rcpt)] += 1
        return "250 OK"

    def of(self, tag: str) -> tuple[int, int]:
        """(recipients reached, messages beyond one per recipient) for one mailing."""
        with self._lock:
            counts = [n for (t, _), n in self.got.items() if t == tag]
        return len(counts), sum(counts) - len(counts)


def test_a_mailing_of_10000_sent_by_three_runners_reaches_each_recipient_once(
    tmp_path: Path, net: NodeNetwork, pg_url: str
) -> None:
    from aiosmtpd.controller import Controller

    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname=SERVICES, port=port)
    controller.start()
    email = f"""
[plugins.email]
from_address = "news@example.com"
smtp_host = "{SERVICES}"
smtp_port = {port}
smtp_security = "none"
smtp_pool_size = 4

[plugins.mailings]
public_url = "https://crm.example.com"
link_secret = "nodes-test-secret-0123456789"
"""
    batch = 50
    outbox = f"batch_size = {batch}\nlease_seconds = 3"
    nodes = start_nodes(tmp_path, net, pg_url, email, "email", outbox=outbox)
    total = 10_000
    try:

        async def queue(tag: str, first: bool) -> None:
            plugin = MailingsPlugin()
            sb = await open_switchboard(
                tmp_path / "queuer",
                LoopbackPlugin(EmailChannel(), plugin_name="email", settings=EmailSettings),
                plugin,
                config={
                    "switchboard": {
                        "database_url": pg_url,
                        "templates": {
                            "offer": {"subject": "{{ tag }} for {{ contact.name }}", "text": "Hi"}
                        },
                    },
                    "plugins": {
                        "email": {"from_address": "news@example.com", "smtp_host": "127.0.0.1"},
                        "mailings": {
                            "public_url": "https://crm.example.com",
                            "link_secret": "nodes-test-secret-0123456789",
                        },
                    },
                },
                start=False,
            )
            try:
                assert plugin.mailings is not None
                if first:

                    def contacts() -> list[int]:
                        with sb.store.write() as conn:
                            return [
                                sb.store.create_contact(
                                    f"Customer {i}",
                                    [Address("email", f"c{i}@example.org")],
                                    conn=conn,
                                ).id
                                or 0
                                for i in range(total)
                            ]

                    ids = await asyncio.to_thread(contacts)
                    await plugin.mailings.change_list("all", ids, [])
                await plugin.mailings.create(
                    name=tag,
                    channel="email",
                    template="offer",
                    audience="all",
                    variables={"tag": tag},
                )
            finally:
                await sb.close()

        def wait_for(tag: str, within: float) -> tuple[int, int]:
            deadline = time.monotonic() + within
            while sink.of(tag)[0] < total and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # anything sent twice lands too
            return sink.of(tag)

        started = time.monotonic()
        asyncio.run(queue("First", first=True))
        reached, extra = wait_for("First", 180)
        took = time.monotonic() - started
        assert (reached, extra) == (total, 0), "without a kill, each recipient gets one message"

        # again, and one runner killed in the middle: what it had claimed and sent but not
        # yet recorded goes again once its lease runs out (at least once, bounded)
        asyncio.run(queue("Second", first=False))
        while sink.of("Second")[0] < total // 3:
            time.sleep(0.05)
        nodes[0].kill()
        reached, extra = wait_for("Second", 180)
        assert reached == total, "a message was lost with the killed runner"
        assert extra <= batch, f"{extra} sent twice, more than one claimed batch ({batch})"
        print(f"10,000 by three runners: {took:.0f} s, 0 twice; with a kill: {extra} twice")
    finally:
        stop_all(nodes)
        controller.stop()
