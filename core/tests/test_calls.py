"""Call-record lifecycle: ringing → answered → ended, IVR path, recording; hooks fire."""

from __future__ import annotations

import asyncio
import hashlib
import time
import wave
from pathlib import Path
from typing import Any

import pytest

from switchboard import (
    Address,
    Agent,
    CallRecord,
    Contact,
    Direction,
    Disposition,
    InteractionKind,
    InteractionStatus,
    hookimpl,
)
from switchboard.calls import CallStateError

AGENTS = {
    "switchboard": {
        "default_region": "RU",
        "agents": [{"name": "anna", "extension": "101"}, {"name": "boris", "extension": "102"}],
    }
}


class CallHooks:
    plugin_name = "callhooks"

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def call_ringing(self, call: CallRecord, contact: Contact) -> None:
        self.events.append(("ringing", (call.status, contact.name)))

    @hookimpl
    def route_call(self, call: CallRecord) -> str:
        return f"ivr-for-{call.call_id}"

    @hookimpl
    def call_answered(self, call: CallRecord, agent: Agent | None) -> None:
        self.events.append(("answered", agent.name if agent else None))

    @hookimpl
    def call_ended(self, record: CallRecord) -> None:
        self.events.append(("ended", record.disposition))

    @hookimpl
    def recording_saved(self, record: CallRecord) -> None:
        self.events.append(("recording", record.recording))


def make_wav(path: Path, seconds: float) -> bytes:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * int(8000 * seconds))
    return path.read_bytes()


async def test_inbound_call_answered_and_recorded(open_sb: Any, tmp_path: Path) -> None:
    hooks = CallHooks()
    sb = await open_sb(hooks, config=AGENTS)
    anna = sb.store.get_agent("anna")
    known = sb.store.create_contact("Acme buyer", [Address("phone", "+74951234567")])
    record, contact = await sb.calls.ringing(
        "sip",
        "call-1",
        direction=Direction.INBOUND,
        from_address="8 495 123-45-67",
        to_address="+74950000000",
        agents=[anna.id],
    )
    assert contact.id == known.id
    assert (record.status, record.agents_notified) == (InteractionStatus.RINGING, (anna.id,))
    assert record.ringing_at is not None
    assert await sb.calls.route(record, contact) == "ivr-for-call-1"
    await sb.calls.ivr_step("sip", "call-1", "greeting")
    await sb.calls.ivr_step("sip", "call-1", "main", digits="1")
    answered = await sb.calls.answered("sip", "call-1", anna)
    assert answered.agent_id == anna.id and answered.answered_at is not None
    ended = await sb.calls.ended("sip", "call-1", hangup_cause="BYE from caller")
    assert ended.disposition is Disposition.ANSWERED
    assert [(s.node, s.digits) for s in ended.ivr_path] == [("greeting", ""), ("main", "1")]
    data = make_wav(tmp_path / "call-1.wav", 2.5)
    saved = await sb.calls.recording_saved("sip", "call-1", tmp_path / "call-1.wav")
    assert saved.recording is not None
    assert saved.recording.duration == 2.5
    assert saved.recording.sha256 == hashlib.sha256(data).hexdigest()
    assert [e for e, _ in hooks.events] == ["ringing", "answered", "ended", "recording"]
    assert hooks.events[0][1] == (InteractionStatus.RINGING, "Acme buyer")
    assert sb.store.get_call("call-1") == saved
    [item] = sb.store.timeline(known.id)
    assert (item.kind, item.status, item.external_id) == (
        InteractionKind.CALL,
        InteractionStatus.ENDED,
        "call-1",
    )


async def test_unanswered_call_is_missed_and_unknown_caller_gets_a_contact(
    open_sb: Any,
) -> None:
    hooks = CallHooks()
    sb = await open_sb(hooks, config=AGENTS)
    _record, contact = await sb.calls.ringing(
        "sip",
        "c2",
        direction=Direction.INBOUND,
        from_address="+74951112233",
        to_address="100",
        caller_name="Ivan",
    )
    assert contact.name == "Ivan" and contact.addresses == (Address("phone", "+74951112233"),)
    ended = await sb.calls.ended("sip", "c2")
    assert ended.disposition is Disposition.MISSED and ended.answered_at is None


async def test_withheld_number_still_gets_a_record(open_sb: Any) -> None:
    sb = await open_sb()
    record, contact = await sb.calls.ringing(
        "sip",
        "c3",
        direction=Direction.INBOUND,
        from_address="anonymous",
        to_address="+74950000000",
    )
    assert contact.name == "anonymous" and contact.addresses == ()
    assert record.from_address == "anonymous"


async def test_outbound_call_resolves_the_callee(open_sb: Any) -> None:
    sb = await open_sb(config=AGENTS)
    record, contact = await sb.calls.ringing(
        "sip", "c4", direction=Direction.OUTBOUND, from_address="101", to_address="+7 495 765-43-21"
    )
    assert contact.addresses == (Address("phone", "+74957654321"),)
    assert record.direction is Direction.OUTBOUND
    ended = await sb.calls.ended("sip", "c4", Disposition.BUSY, "486 Busy Here")
    assert (ended.disposition, ended.hangup_cause) == (Disposition.BUSY, "486 Busy Here")


async def test_steps_out_of_order_are_refused(open_sb: Any, tmp_path: Path) -> None:
    hooks = CallHooks()
    sb = await open_sb(hooks)
    with pytest.raises(CallStateError, match="no call 'nope' on channel 'sip'"):
        await sb.calls.answered("sip", "nope")
    await sb.calls.ringing(
        "sip",
        "c5",
        direction=Direction.INBOUND,
        from_address="+12025550143",
        to_address="+12025550100",
    )
    _again, _ = await sb.calls.ringing(
        "sip",
        "c5",
        direction=Direction.INBOUND,
        from_address="+12025550143",
        to_address="+12025550100",
    )
    assert [e for e, _ in hooks.events] == ["ringing"]  # a repeated INVITE pops once
    await sb.calls.ended("sip", "c5", Disposition.ABANDONED)
    with pytest.raises(CallStateError, match="is ended, cannot be answered"):
        await sb.calls.answered("sip", "c5")
    with pytest.raises(CallStateError, match="has already ended"):
        await sb.calls.ended("sip", "c5")
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(Exception, match="not a readable WAV file"):
        await sb.calls.recording_saved("sip", "c5", tmp_path / "bad.wav")


async def test_a_missed_call_becomes_a_callback_task_for_the_agent_it_rang_for(
    open_sb: Any,
) -> None:
    sb = await open_sb(config=AGENTS)
    boris = sb.store.get_agent("boris")
    await sb.calls.ringing(
        "sip",
        "c9",
        direction=Direction.INBOUND,
        from_address="+74951112299",
        to_address="100",
        agents=[boris.id],
    )
    ended = await sb.calls.ended("sip", "c9")
    assert ended.disposition is Disposition.MISSED
    tasks = sb.store.list_tasks()
    assert len(tasks) == 1
    task = tasks[0]
    assert task.kind is InteractionKind.TASK and task.status is InteractionStatus.OPEN
    assert task.contact_id == ended.contact_id
    assert task.meta["agent_id"] == boris.id and task.meta["call_id"] == "c9"
    assert task.meta["reason"] == "missed" and "+74951112299" in (task.text or "")
    assert sb.store.list_tasks(agent_id=boris.id) == tasks
    assert sb.store.list_tasks(agent_id=sb.store.get_agent("anna").id) == []
    assert next(t.id for t in sb.store.timeline(ended.contact_id)) == task.id
    done = sb.store.finish_task(task.id)
    assert done is not None and done.status is InteractionStatus.DONE
    assert sb.store.list_tasks() == [] and len(sb.store.list_tasks(status="all")) == 1
    assert sb.store.finish_task(999_999) is None


async def test_an_agents_tasks_are_not_cut_off_by_other_agents_tasks(open_sb: Any) -> None:
    sb = await open_sb(config=AGENTS)
    anna, boris = sb.store.get_agent("anna"), sb.store.get_agent("boris")
    for i, agent in enumerate([anna, anna, anna, boris, boris]):
        call_id = f"t{i}"
        await sb.calls.ringing(
            "sip",
            call_id,
            direction=Direction.INBOUND,
            from_address=f"+7495111{i:04d}",
            to_address="100",
            agents=[agent.id],
        )
        await sb.calls.ended("sip", call_id)
    # the limit counts the agent's own tasks, not the oldest of everyone's
    assert [t.meta["call_id"] for t in sb.store.list_tasks(agent_id=boris.id, limit=2)] == [
        "t3",
        "t4",
    ]
    assert len(sb.store.list_tasks(agent_id=anna.id, limit=2)) == 2
    assert len(sb.store.list_tasks(limit=4)) == 4


async def test_answered_calls_make_no_task_and_callbacks_can_be_switched_off(
    open_sb: Any,
) -> None:
    sb = await open_sb(
        config={"switchboard": {**AGENTS["switchboard"], "callbacks": {"enabled": False}}}
    )
    await sb.calls.ringing(
        "sip", "c10", direction=Direction.INBOUND, from_address="+74951112288", to_address="1"
    )
    await sb.calls.ended("sip", "c10")
    assert sb.store.list_tasks(status="all") == []


class SlowCrm:
    """A CRM lookup slower than the budget (2 s against 0.2 s)."""

    plugin_name = "slow-crm"

    def __init__(self) -> None:
        self.asked: list[Address] = []

    @hookimpl
    async def resolve_contact(self, address: Address) -> Contact | None:
        self.asked.append(address)
        await asyncio.sleep(2.0)
        return Contact(id=None, name="Too late", company=None, addresses=(address,))


async def test_a_slow_crm_lookup_never_holds_up_the_screen_pop(open_sb: Any) -> None:
    crm = SlowCrm()
    sb = await open_sb(crm, config={"switchboard": {"resolve_timeout": 0.2}})
    started = time.monotonic()
    _record, contact = await sb.calls.ringing(
        "sip",
        "slow-1",
        direction=Direction.INBOUND,
        from_address="+74951112299",
        to_address="100",
        caller_name="Ivan",
    )
    assert time.monotonic() - started < 1.0  # the budget, not the CRM's 2 s
    assert crm.asked == [Address("phone", "+74951112299")]
    assert contact.name == "Ivan"  # the store decided: a new contact from the call
    assert sb.inbox.resolver.timeouts == 1
