"""Plugins' durable event consumers: their own cursor on the event log, in order, at least
once, retried with backoff, one event set aside for good with SkipEvent, resumed after a
restart, their lag and last error in health; retention keeps what they still lack."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from switchboard import Event, InboundMessage, SkipEvent, Switchboard, hookimpl
from switchboard.consumers import failure_t
from switchboard.events import cursor_t, event_t
from switchboard.models import utcnow
from switchboard.testing import LoopbackChannel, LoopbackPlugin, open_switchboard


class Crm(LoopbackPlugin):
    """A plugin with a consumer of message events: ``fail`` says how the next calls end."""

    def __init__(self, channel: LoopbackChannel) -> None:
        super().__init__(channel, plugin_name="crm")
        self.seen: list[tuple[int, str]] = []
        self.fail: list[BaseException] = []

    @hookimpl
    def configure(self, switchboard: Switchboard) -> None:
        switchboard.consumers.add(
            "crm",
            self.push,
            types={"message.received"},
            backoff_initial=0.01,
            backoff_max=0.05,
        )

    async def push(self, event: Event) -> None:
        self.seen.append((event.id, event.data["interaction"]["text"]))
        if self.fail:
            raise self.fail.pop(0)


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def running(folder: Path, crm: Crm) -> Switchboard:
    sb = await open_switchboard(folder, crm, config={"switchboard": {}})
    sb.loops.start("events", sb.events.run)
    await sb.consumers.start()
    return sb


async def test_a_consumer_gets_its_events_in_order_through_failures(tmp_path: Path) -> None:
    ch = LoopbackChannel("sms")
    crm = Crm(ch)
    crm.fail = [ConnectionError("the CRM is down"), ConnectionError("still down")]
    sb = await running(tmp_path, crm)
    try:
        for n in range(3):
            await ch.inject(InboundMessage(f"m{n}", f"+7495300000{n}", text=f"hello {n}"))
        await until(lambda: len(crm.seen) == 5)
        # the first event three times (two failures), then the next ones, in order; the
        # contact.created events were passed over, never handed to the plugin
        assert [text for _, text in crm.seen] == ["hello 0"] * 3 + ["hello 1", "hello 2"]
        consumer = sb.consumers.all["consumer:crm"][1]
        await until(lambda: consumer.delivered == 3)
        health = sb.consumers.health()["consumer:crm"]
        assert health["lag"] == 0 and health["failed"] == 0 and health["last_error"] is None
        assert sb.loops.health()["consumer:crm"]["state"] == "running"
    finally:
        await sb.close()


async def test_an_event_it_cannot_read_is_set_aside_and_the_next_goes(tmp_path: Path) -> None:
    ch = LoopbackChannel("sms")
    crm = Crm(ch)
    crm.fail = [SkipEvent("the CRM answered a list, not an object")]
    sb = await running(tmp_path, crm)
    try:
        await ch.inject(InboundMessage("m0", "+74953000000", text="odd"))
        await ch.inject(InboundMessage("m1", "+74953000001", text="fine"))
        await until(lambda: len(crm.seen) == 2)
        consumer = sb.consumers.all["consumer:crm"][1]
        await until(lambda: consumer.delivered == 1)
        assert consumer.failed == 1
        with sb.store.read() as conn:
            [row] = conn.execute(sa.select(failure_t)).all()
        assert row.name == "consumer:crm" and row.event_id == crm.seen[0][0]
        assert "answered a list" in row.error
    finally:
        await sb.close()


async def test_a_restart_resumes_after_the_last_handled_event(tmp_path: Path) -> None:
    ch = LoopbackChannel("sms")
    crm = Crm(ch)
    sb = await running(tmp_path, crm)
    await ch.inject(InboundMessage("m0", "+74953000000", text="before"))
    await until(lambda: len(crm.seen) == 1)
    consumer = sb.consumers.all["consumer:crm"][1]
    await until(lambda: consumer.delivered == 1)
    await sb.consumers.stop()
    await ch.inject(InboundMessage("m1", "+74953000001", text="while stopped"))
    await sb.close()
    again_channel = LoopbackChannel("sms")
    again = Crm(again_channel)
    sb = await running(tmp_path, again)
    try:
        await again_channel.inject(InboundMessage("m2", "+74953000002", text="after"))
        await until(lambda: len(again.seen) == 2)
        assert [text for _, text in again.seen] == ["while stopped", "after"]  # none twice
    finally:
        await sb.close()


async def test_a_failing_consumer_shows_its_lag_and_error_and_keeps_its_events(
    tmp_path: Path,
) -> None:
    ch = LoopbackChannel("sms")
    crm = Crm(ch)
    crm.fail = [ConnectionError("the CRM is down")] * 1000
    sb = await running(tmp_path, crm)
    try:
        await ch.inject(InboundMessage("m0", "+74953000000", text="waits"))
        await ch.inject(InboundMessage("m1", "+74953000001", text="waits too"))

        def cursor() -> Any:
            with sb.store.read() as conn:
                return conn.execute(
                    sa.select(cursor_t).where(cursor_t.c.name == "consumer:crm")
                ).one()

        # the attempts and the error are kept with the cursor (a restart goes on from there)
        await until(lambda: cursor().attempts >= 3 and sb.events.last_id >= 4)
        assert "the CRM is down" in cursor().last_error
        health = sb.consumers.health()["consumer:crm"]
        assert health["lag"] >= 3 and "the CRM is down" in health["last_error"]
        # retention keeps what the consumer still lacks, however old
        with sb.store.write() as conn:
            conn.execute(sa.update(event_t).values(created_at=utcnow() - timedelta(days=90)))
        assert sb.events.prune(30) == 0
        assert [text for _, text in crm.seen][:1] == ["waits"]
    finally:
        await sb.close()


async def test_save_every_writes_the_cursor_when_idle_not_per_event(tmp_path: Path) -> None:
    """A consumer whose pushes are idempotent saves its cursor at most every
    ``save_every`` seconds, and whenever it runs out of events."""
    ch = LoopbackChannel("sms")
    crm = Crm(ch)
    sb = await open_switchboard(tmp_path, crm, config={"switchboard": {}})
    consumer = sb.consumers.all["consumer:crm"][1]
    consumer.save_every = 3600.0
    writes = 0
    advance = consumer._advance

    def counted(event_id: int, failure: str | None = None) -> None:
        nonlocal writes
        writes += 1
        advance(event_id, failure)

    consumer._advance = counted  # type: ignore[method-assign]
    try:
        await asyncio.to_thread(consumer.cursor)
        for n in range(20):  # written before the consumer runs: one batch
            await ch.inject(InboundMessage(f"m{n}", f"+74953001{n:03d}", text=f"m {n}"))
        sb.loops.start("events", sb.events.run)
        await sb.consumers.start()
        await until(lambda: len(crm.seen) == 20)

        def saved() -> int:
            with sb.store.engine.connect() as conn:
                row = conn.execute(
                    sa.select(cursor_t.c.last_event_id).where(cursor_t.c.name == "consumer:crm")
                ).one()
            return int(row.last_event_id)

        await until(lambda: saved() == consumer.position)  # saved once idle
        assert consumer.position == sb.events.current_id()
        assert writes <= 3  # the first event's, the batch end's or the idle one: not 20
    finally:
        await sb.close()
