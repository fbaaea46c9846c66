"""Outbound flow: queued interaction + outbox row in one transaction → worker → sent/failed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from switchboard import (
    Address,
    Contact,
    InboundMessage,
    Interaction,
    InteractionStatus,
    Invalid,
    NotFound,
    OutboundMessage,
    PermanentSendError,
    Queued,
    TransientSendError,
    hookimpl,
)
from switchboard.backoff import Backoff
from switchboard.store import interaction_t, outbox_t
from switchboard.testing import LoopbackChannel, LoopbackPlugin

FAST = {
    "switchboard": {
        "outbox": {
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
            "max_attempts": 3,
            "poll_interval": 0.02,
        }
    }
}


class Outcomes:
    plugin_name = "outcomes"

    def __init__(self) -> None:
        self.sent: list[Interaction] = []
        self.failed: list[tuple[Interaction, str]] = []

    @hookimpl
    def message_sent(self, interaction: Interaction, contact: Contact) -> None:
        assert contact.id == interaction.contact_id
        self.sent.append(interaction)

    @hookimpl
    def message_failed(self, interaction: Interaction, error: str) -> None:
        self.failed.append((interaction, error))


async def drain(sb: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while sb.outbox.depth():
        assert time.monotonic() < deadline, "outbox did not drain"
        if not await sb.outbox.process_due():
            await asyncio.sleep(0.02)


async def test_enqueue_then_send(open_sb: Any) -> None:
    ch, out = LoopbackChannel("sms"), Outcomes()
    sb = await open_sb(LoopbackPlugin(ch), out)
    queued = await sb.outbox.enqueue("sms", address="+1 202 555 0143", text="Your order shipped")
    assert queued.status is InteractionStatus.QUEUED
    assert sb.outbox.depth() == 1
    await drain(sb)
    [msg] = ch.sent
    assert (msg.address, msg.text, msg.attempt) == (
        Address("phone", "+12025550143"),
        "Your order shipped",
        1,
    )
    stored = sb.store.get_interaction(queued.id)
    assert stored is not None
    assert stored.status is InteractionStatus.SENT and stored.external_id == "sms-out-1"
    assert [i.id for i in out.sent] == [queued.id]
    assert sb.store.count(outbox_t) == 0


async def test_a_receipt_id_another_message_holds_is_kept_in_meta_not_a_failed_batch(
    open_sb: Any,
) -> None:
    ch, out = LoopbackChannel("sms"), Outcomes()
    sb = await open_sb(LoopbackPlugin(ch), out)
    # an inbound message already holds the id the channel will give the first send
    await ch.inject(InboundMessage(external_id="sms-out-1", sender="+12025550143", text="hi"))
    first = await sb.outbox.enqueue("sms", address="+12025550143", text="one")
    second = await sb.outbox.enqueue("sms", address="+12025550143", text="two")
    await drain(sb)
    assert len(ch.sent) == 2  # each sent once: no failed batch sent again
    clashed, fine = sb.store.get_interaction(first.id), sb.store.get_interaction(second.id)
    assert clashed is not None and clashed.status is InteractionStatus.SENT
    assert clashed.external_id is None and clashed.meta["receipt_id"] == "sms-out-1"
    assert fine is not None and fine.external_id == "sms-out-2"
    assert [i.id for i in out.sent] == [first.id, second.id]


@pytest.mark.parametrize("limit", [1, 4])
async def test_sends_run_up_to_the_channels_max_concurrency(open_sb: Any, limit: int) -> None:
    ch, out = LoopbackChannel("sms"), Outcomes()
    ch.max_concurrency = limit  # type: ignore[attr-defined]
    running = peak = 0

    async def slow(message: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    ch.on_send = slow
    sb = await open_sb(LoopbackPlugin(ch), out)
    queued = [
        await sb.outbox.enqueue("sms", address="+1 202 555 0143", text=f"m{i}") for i in range(30)
    ]
    await drain(sb)
    assert peak == limit
    assert sorted(i.id for i in out.sent) == [q.id for q in queued]
    if limit == 1:  # one at a time: in order
        assert [m.text for m in ch.sent] == [f"m{i}" for i in range(30)]


async def test_contact_id_uses_the_channels_address_kind(open_sb: Any) -> None:
    ch = LoopbackChannel("mail", "email")
    sb = await open_sb(LoopbackPlugin(ch))
    anna = sb.store.create_contact(
        "Anna", [Address("phone", "+12025550143"), Address("email", "anna@example.com")]
    )
    queued = await sb.outbox.enqueue("mail", contact_id=anna.id, subject="Offer", text="Hello")
    assert queued.address == Address("email", "anna@example.com")
    nomail = sb.store.create_contact("Phone only", [Address("phone", "+12025550144")])
    with pytest.raises(Invalid, match=f"contact {nomail.id} has no email address"):
        await sb.outbox.enqueue("mail", contact_id=nomail.id, text="x")
    with pytest.raises(NotFound, match="no contact with id 999999"):
        await sb.outbox.enqueue("mail", contact_id=999999, text="x")
    with pytest.raises(Invalid, match=r"unknown channel 'fax' \(channels: mail\)"):
        await sb.outbox.enqueue("fax", contact_id=anna.id, text="x")
    with pytest.raises(Invalid, match="sends to email addresses, not phone"):
        await sb.outbox.enqueue("mail", address="+12025550143", text="x")
    assert sb.store.count(interaction_t) == 1  # refused messages leave nothing behind


async def test_transient_errors_retry_with_backoff(open_sb: Any) -> None:
    ch, out = LoopbackChannel("sms"), Outcomes()
    sb = await open_sb(LoopbackPlugin(ch), out, config=FAST)
    ch.fail_next = [TransientSendError("timeout"), TransientSendError("429", retry_after=0.3)]
    queued = await sb.outbox.enqueue("sms", address="+12025550143", text="retry me")
    started = time.monotonic()
    assert await sb.outbox.process_due() == 1  # attempt 1 fails
    assert await sb.outbox.process_due() == 0  # not due yet: backoff
    await drain(sb)
    assert time.monotonic() - started >= 0.3  # retry_after was honoured
    assert [m.attempt for m in ch.sent] == [3]
    stored = sb.store.get_interaction(queued.id)
    assert stored is not None and stored.status is InteractionStatus.SENT
    assert out.failed == []


async def test_permanent_error_fails_at_once(open_sb: Any) -> None:
    ch, out = LoopbackChannel("sms"), Outcomes()
    sb = await open_sb(LoopbackPlugin(ch), out, config=FAST)
    ch.fail_next = [PermanentSendError("user blocked the bot")]
    queued = await sb.outbox.enqueue("sms", address="+12025550143", text="x")
    await drain(sb)
    stored = sb.store.get_interaction(queued.id)
    assert stored is not None
    assert (stored.status, stored.error) == (InteractionStatus.FAILED, "user blocked the bot")
    assert [(i.id, e) for i, e in out.failed] == [(queued.id, "user blocked the bot")]


class Refuser:
    """Refuses messages whose text says "stop", and sees every batch it is asked about."""

    plugin_name = "refuser"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    @hookimpl
    async def refuse_outbound(self, messages: list[OutboundMessage]) -> dict[int, str]:
        self.batches.append([m.interaction_id for m in messages])
        return {m.interaction_id: "on the stop list" for m in messages if m.text == "stop"}


class BrokenRefuser:
    plugin_name = "broken"

    @hookimpl
    def refuse_outbound(self) -> None:
        raise RuntimeError("the stop list is down")


async def test_a_plugin_refuses_due_messages_and_a_broken_one_refuses_none(
    open_sb: Any,
) -> None:
    ch, out, refuser = LoopbackChannel("sms"), Outcomes(), Refuser()
    sb = await open_sb(LoopbackPlugin(ch), out, refuser, BrokenRefuser())
    queued = [
        await sb.outbox.enqueue("sms", address="+12025550143", text=t)
        for t in ("hello", "stop", "bye")
    ]
    await drain(sb)
    assert [m.text for m in ch.sent] == ["hello", "bye"]
    assert [(i.id, e) for i, e in out.failed] == [(queued[1].id, "on the stop list")]
    stored = sb.store.get_interaction(queued[1].id)
    assert stored is not None and stored.status is InteractionStatus.FAILED
    assert refuser.batches == [[q.id for q in queued]]  # asked once for the batch
    assert [e.plugin for e in sb.plugins.hook_errors] == ["broken"]


async def test_a_plugin_queues_messages_in_its_own_transaction(open_sb: Any) -> None:
    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch))
    contact = await sb.create_contact("Olga", [Address("phone", "+12025550143")])

    def work(conn: Any) -> list[int]:
        phones = sb.addresses_in(conn, [contact.id], "phone")
        return sb.outbox.queue_in(
            conn,
            [
                Queued(
                    contact_id=contact.id,
                    channel="sms",
                    address=phones[contact.id],
                    text=f"n{n}",
                    payload=lambda i: {"ref": f"message {i}"},
                )
                for n in range(3)
            ],
        )

    ids = await sb.transaction(work)
    assert await sb.transaction(lambda conn: sb.message_statuses(conn, ids)) == {"queued": 3}

    def rolled_back(conn: Any) -> None:
        sb.outbox.queue_in(conn, [Queued(contact_id=contact.id, channel="sms", address="x:y")])
        raise RuntimeError("the plugin's own write failed")

    with pytest.raises(RuntimeError):
        await sb.transaction(rolled_back)
    with pytest.raises(Invalid):
        await sb.transaction(
            lambda conn: sb.outbox.queue_in(
                conn, [Queued(contact_id=1, channel="fax", address="x")]
            )
        )
    await drain(sb)
    assert [(m.text, m.payload) for m in ch.sent] == [
        (f"n{n}", {"ref": f"message {i}"}) for n, i in enumerate(ids)
    ]
    assert await sb.transaction(lambda conn: sb.message_statuses(conn, ids)) == {"sent": 3}


async def test_gives_up_after_max_attempts(open_sb: Any) -> None:
    ch, out = LoopbackChannel("sms"), Outcomes()
    sb = await open_sb(LoopbackPlugin(ch), out, config=FAST)
    ch.fail_next = [ConnectionResetError("reset")] * 5
    queued = await sb.outbox.enqueue("sms", address="+12025550143", text="x")
    await drain(sb)
    stored = sb.store.get_interaction(queued.id)
    assert stored is not None and stored.status is InteractionStatus.FAILED
    assert stored.error == "gave up after 3 attempts: ConnectionResetError: reset"
    assert len(ch.fail_next) == 2 and ch.sent == []


async def test_worker_wakes_on_enqueue_and_stops_cleanly(open_sb: Any) -> None:
    ch = LoopbackChannel("sms")
    sb = await open_sb(
        LoopbackPlugin(ch), config={"switchboard": {"outbox": {"poll_interval": 30.0}}}
    )
    worker = asyncio.create_task(sb.outbox.run())
    await asyncio.sleep(0.05)
    await sb.outbox.enqueue("sms", address="+12025550143", text="now")
    for _ in range(100):
        if ch.sent:
            break
        await asyncio.sleep(0.01)
    assert [m.text for m in ch.sent] == ["now"]  # long before the 30 s poll
    sb.outbox.stop()
    await asyncio.wait_for(worker, 2)


async def test_only_running_channels_are_sent(open_sb: Any) -> None:
    up, down = LoopbackChannel("up"), LoopbackChannel("down")
    sb = await open_sb(LoopbackPlugin(up, down), start=False)
    await sb.start_channels(["up"])
    await sb.outbox.enqueue("up", address="+12025550143", text="a")
    await sb.outbox.enqueue("down", address="+12025550143", text="b")
    assert await sb.outbox.process_due() == 1
    assert sb.outbox.depth() == 1  # waits for a runner that has the channel


def test_backoff_is_exponential_capped_and_spread() -> None:
    backoff = Backoff(initial=1.0, cap=60.0)
    delays = [backoff.delay(n) for n in range(1, 10)]
    for n, d in enumerate(delays[:6], start=1):
        assert 0.9 * 2 ** (n - 1) <= d <= 1.1 * 2 ** (n - 1)
    assert all(54 <= d <= 66 for d in delays[6:])
    assert len({round(backoff.delay(3), 9) for _ in range(20)}) > 1  # jittered
    assert 54 <= backoff.delay(10**9) <= 66  # no overflow for a huge attempt count
    exact = Backoff(initial=0.5, cap=4.0, jitter=0)
    assert [exact.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    exact.succeeded()
    assert exact.failed() == 0.5
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)


def _run(*args: str, stdout: int = subprocess.PIPE) -> subprocess.Popen[str]:
    script = Path(__file__).with_name("outbox_process.py")
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=stdout,
        text=True,
        env={**os.environ, "SWITCHBOARD_PLUGINS": ""},
    )


def test_killed_processes_lose_no_accepted_message(db_url: str, tmp_path: Path) -> None:
    # 1. A process accepting messages is killed mid-way: every id it reported is stored.
    proc = _run("enqueue", db_url, "100000")
    accepted = []
    assert proc.stdout is not None
    for line in proc.stdout:
        accepted.append(int(line))
        if len(accepted) == 150:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(10)
    accepted += [int(x) for x in proc.stdout.read().split()]  # reported before the kill
    proc.stdout.close()

    # 2. A worker is killed mid-send; 3. a new one finishes the queue.
    sink = tmp_path / "sink.txt"
    worker = _run("send", db_url, str(sink), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (sink.exists() and len(sink.read_text().splitlines()) >= 40):
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("outbox_process.py")),
            "send",
            db_url,
            str(sink),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SWITCHBOARD_PLUGINS": ""},
    )
    assert done.returncode == 0, done.stderr

    from switchboard.store import Store

    store = Store(db_url)
    try:
        for interaction_id in accepted:
            stored = store.get_interaction(interaction_id)
            assert stored is not None, f"accepted interaction {interaction_id} lost"
            assert stored.status is InteractionStatus.SENT
        assert store.count(outbox_t) == 0
        total = store.count(interaction_t)
    finally:
        store.close()
    delivered = {int(line.split()[0]) for line in sink.read_text().splitlines()}
    assert set(accepted) <= delivered
    assert len(delivered) == total  # everything committed was delivered (at least once)


async def test_a_paced_batch_keeps_its_lease_so_no_other_runner_resends_it(
    open_sb: Any,
) -> None:
    """A channel slower than the lease (a batch paced one message at a time): the worker
    extends its lease while it sends, so a second runner on the same store claims none of
    the rows still waiting their turn, and every message is sent once."""
    config = {"switchboard": {"outbox": {"lease_seconds": 0.4, "poll_interval": 0.02}}}
    first, second = LoopbackChannel("paced"), LoopbackChannel("paced")

    async def paced(message: Any) -> None:
        await asyncio.sleep(0.15)  # five messages: 0.75 s, almost twice the lease

    first.on_send = second.on_send = paced
    a = await open_sb(LoopbackPlugin(first), config=config)
    b = await open_sb(LoopbackPlugin(second), config=config)
    for n in range(5):
        await a.outbox.enqueue("paced", address="+12025550143", text=f"m{n}")
    sending = asyncio.create_task(a.outbox.process_due())
    await asyncio.sleep(0.05)
    while not sending.done():  # the second runner polls all the while
        await b.outbox.process_due()
        await asyncio.sleep(0.02)
    assert await sending == 5
    assert [m.text for m in first.sent] == [f"m{n}" for n in range(5)]
    assert second.sent == []
    assert a.outbox.depth() == 0


async def test_delivery_receipts_move_a_sent_message_forward_only(open_sb: Any) -> None:
    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch))
    queued = await sb.outbox.enqueue("sms", address="+12025550143", text="hello")
    assert ch.ctx is not None
    assert await ch.ctx.delivered("sms-out-1") is None  # not recorded as sent yet
    await drain(sb)
    delivered = await ch.ctx.delivered("sms-out-1")
    assert delivered is not None and delivered.status is InteractionStatus.DELIVERED
    read = await ch.ctx.delivered("sms-out-1", read=True)
    assert read is not None and read.status is InteractionStatus.READ
    assert await ch.ctx.delivered("sms-out-1") is None  # a late receipt: no step back
    stored = sb.store.get_interaction(queued.id)
    assert stored is not None and stored.status is InteractionStatus.READ
    assert await ch.ctx.delivered("sms-out-999") is None
    types = [e.type for e in sb.events.read_since(0)]
    assert types.count("message.delivered") == 1 and types.count("message.read") == 1
    with pytest.raises(Invalid):
        await sb.outbox.delivery("sms", "sms-out-1", InteractionStatus.FAILED)


async def test_a_watermark_receipt_moves_what_was_sent_to_that_address_by_then(
    open_sb: Any,
) -> None:
    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch))
    assert ch.ctx is not None
    first = await sb.outbox.enqueue("sms", address="+12025550143", text="one")
    other = await sb.outbox.enqueue("sms", address="+12025550144", text="to someone else")
    await drain(sb)
    watermark = datetime.now(UTC)
    await asyncio.sleep(0.01)
    later = await sb.outbox.enqueue("sms", address="+12025550143", text="after the mark")
    await drain(sb)
    moved = await ch.ctx.delivered_until("+1 202 555 0143", watermark)
    assert [i.id for i in moved] == [first.id]
    status = {i: sb.store.get_interaction(i).status for i in (first.id, other.id, later.id)}
    assert status == {
        first.id: InteractionStatus.DELIVERED,
        other.id: InteractionStatus.SENT,  # another address
        later.id: InteractionStatus.SENT,  # recorded as sent after the watermark
    }
    read = await ch.ctx.delivered_until("+12025550143", datetime.now(UTC), read=True)
    assert {i.id for i in read} == {first.id, later.id}
    assert await ch.ctx.delivered_until("+12025550143", datetime.now(UTC)) == []  # no step back
    assert await ch.ctx.delivered_until("+12025550199", datetime.now(UTC)) == []  # no contact
    types = [e.type for e in sb.events.read_since(0)]
    assert types.count("message.delivered") == 1 and types.count("message.read") == 2


class WindowChannel(LoopbackChannel):
    """Refuses free text to contacts who have not written in the last hour."""

    async def admit(self, contact_id: int | None, address: Any, payload: dict[str, Any]) -> None:
        assert self.ctx is not None
        if payload.get("template_ok"):
            return
        last = await self.ctx.last_inbound(contact_id=contact_id, address=address)
        if last is None or datetime.now(UTC) - last > timedelta(hours=1):
            raise Invalid("outside the window: send a template")


async def test_a_channel_refuses_a_message_before_it_is_queued(open_sb: Any) -> None:
    ch = WindowChannel("chat")
    sb = await open_sb(LoopbackPlugin(ch))
    with pytest.raises(Invalid, match="outside the window"):
        await sb.outbox.enqueue("chat", address="+12025550143", text="hi")
    assert sb.outbox.depth() == 0  # refused, not queued to fail later
    ok = await sb.outbox.enqueue(
        "chat", address="+12025550143", text="hi", payload={"template_ok": True}
    )
    await ch.inject(InboundMessage(external_id="in-1", sender="+12025550143", text="hello"))
    assert await sb.last_inbound("chat", contact_id=ok.contact_id) is not None
    assert await sb.last_inbound("chat", address="+1 202 555 0143") is not None
    assert await sb.last_inbound("sms", contact_id=ok.contact_id) is None
    await sb.outbox.enqueue("chat", contact_id=ok.contact_id, text="now in the window")
    assert sb.outbox.depth() == 2
