"""Calls end to end: SIPp callers and agent phones, through Kamailio, to the SIP channel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sip_peers import CALLER, answering_phone, ended_call, open_sip, phone, place_call, until

from switchboard import Direction, Disposition, hookimpl
from switchboard_sip.testing import (
    Kamailio,
    Sipp,
    busy_agent_scenario,
    caller_scenario,
    pcm_rms,
    ringing_agent_scenario,
    unanswered_caller_scenario,
)


@pytest.mark.parametrize("delayed_offer", [False, True], ids=["offer", "delayed-offer"])
async def test_inbound_call_is_answered_by_an_agent_and_recorded(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp], delayed_offer: bool
) -> None:
    """The agent's phone shows the caller's number (From, P-Asserted-Identity); a caller
    whose INVITE has no SDP gets our offer in the 200 and answers in the ACK."""
    sb = await open_sip(tmp_path, kam)
    try:
        alice = await answering_phone(
            phones,
            tmp_path,
            "alice",
            answer_after_ms=300,
            expect_caller="+12025550143",
            expect_from="+12025550143",
        )
        kam.route("101", alice.port)
        kam.route("102", 9)  # bob's phone is off: the INVITE to him goes nowhere
        scenario = caller_scenario(CALLER, talk_ms=3000, delayed_offer=delayed_offer)
        await place_call(tmp_path, kam, scenario, timeout=40)
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == sb.store.get_agent("alice").id
        assert record.from_address == "phone:+12025550143"
        assert record.recording is not None
        assert record.recording.duration > 2.5
        assert pcm_rms(record.recording.path, 0) > 100  # the caller's audio
        assert pcm_rms(record.recording.path, 1) > 100  # the agent's audio
        assert (await alice.wait(10)).ok
    finally:
        await sb.close()


async def test_a_delayed_offer_whose_ack_has_no_answer_is_hung_up(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    """RFC 3261 13.2.1: no media without an answer, so the call ends with a BYE."""
    sb = await open_sip(tmp_path, kam)
    try:
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=100)
        kam.route("101", alice.port)
        kam.route("102", 9)
        scenario = caller_scenario(
            CALLER, delayed_offer=True, answer_in_ack=False, hangup="callee", audio=False
        )
        await place_call(tmp_path, kam, scenario, timeout=30)  # it got our BYE
        record = await until(lambda: ended_call(sb))
        assert record.hangup_cause.startswith("no SDP answer in the ACK")
        assert (await alice.wait(10)).ok  # the agent's leg was hung up too
    finally:
        await sb.close()


async def test_the_caller_number_only_asserted_for_a_proxy_that_checks_from(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sip(tmp_path, kam, agent_caller_id="asserted")
    try:
        alice = await answering_phone(
            phones,
            tmp_path,
            "alice",
            answer_after_ms=100,
            expect_caller="+12025550143",
            expect_from=kam.user,
        )
        kam.route("101", alice.port)
        kam.route("102", 9)
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=500), timeout=30)
        assert (await until(lambda: ended_call(sb))).disposition is Disposition.ANSWERED
        assert (await alice.wait(10)).ok
    finally:
        await sb.close()


async def test_inbound_call_nobody_answers_is_missed_and_the_screen_pop_came_first(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sip(tmp_path, kam, ring_timeout=2.0)
    pops: list[float] = []
    sb.plugins.register(_PopWatcher(pops), "pop-watcher")
    try:
        ringing = await phone(phones, tmp_path, "alice", ringing_agent_scenario(), "-m", "1")
        kam.route("101", ringing.port)
        kam.route("102", 9)
        await place_call(
            tmp_path, kam, unanswered_caller_scenario("12025550177", expect=480), timeout=30
        )
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.MISSED
        assert record.answered_at is None
        assert len(pops) == 1
        contact = sb.store.get_contact(record.contact_id)
        assert contact is not None and "+12025550177" in [a.value for a in contact.addresses]
        assert (await ringing.wait(10)).ok  # alice's phone was cancelled properly
    finally:
        await sb.close()


async def test_caller_who_hangs_up_while_ringing_is_missed(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sip(tmp_path, kam, ring_timeout=10.0)
    try:
        ringing = await phone(phones, tmp_path, "alice", ringing_agent_scenario(), "-m", "1")
        kam.route("101", ringing.port)
        kam.route("102", 9)
        await place_call(
            tmp_path, kam, unanswered_caller_scenario(cancel_after_ms=1000), timeout=30
        )
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.MISSED
        assert record.hangup_cause == "caller hung up"
        assert (await ringing.wait(10)).ok
    finally:
        await sb.close()


async def test_click_to_call_rings_the_agent_then_the_customer_and_records(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sip(tmp_path, kam)
    try:
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=200)
        customer = await answering_phone(
            phones, tmp_path, "customer", answer_after_ms=500, hangup_after_ms=2500
        )
        kam.route("101", alice.port)
        kam.route("+12025550143", customer.port)
        channel = sb.channels["sip"].channel
        agent = sb.store.get_agent("alice")
        call_id = await channel.dial(agent, sb.addresses.parse("+1 (202) 555-0143"))
        record = await until(lambda: ended_call(sb), within=20)
        assert record.call_id == call_id
        assert record.direction is Direction.OUTBOUND
        assert record.disposition is Disposition.ANSWERED
        assert record.hangup_cause == "customer hung up"
        assert record.recording is not None and record.recording.duration > 1.5
        assert pcm_rms(record.recording.path, 0) > 100
        assert pcm_rms(record.recording.path, 1) > 100
        assert (await alice.wait(10)).ok and (await customer.wait(10)).ok
    finally:
        await sb.close()


@pytest.mark.parametrize(
    ("code", "reason", "disposition"),
    [
        (486, "Busy Here", Disposition.BUSY),
        (603, "Decline", Disposition.BUSY),
        (480, "Temporarily Unavailable", Disposition.MISSED),
    ],
)
async def test_click_to_call_customer_busy_or_rejecting(
    tmp_path: Path,
    kam: Kamailio,
    phones: list[Sipp],
    code: int,
    reason: str,
    disposition: Disposition,
) -> None:
    sb = await open_sip(tmp_path, kam)
    try:
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=100)
        customer = await phone(
            phones, tmp_path, "customer", busy_agent_scenario(code, reason), "-m", "1"
        )
        kam.route("101", alice.port)
        kam.route("+12025550143", customer.port)
        channel = sb.channels["sip"].channel
        await channel.dial(sb.store.get_agent("alice"), sb.addresses.parse("+12025550143"))
        record = await until(lambda: ended_call(sb), within=20)
        assert record.disposition is disposition
        assert record.hangup_cause == f"{code} {reason}"  # once read "486 486 Busy Here"
        assert record.answered_at is None
        assert (await alice.wait(10)).ok  # the agent's leg was hung up
    finally:
        await sb.close()


async def test_click_to_call_agent_does_not_answer(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sip(tmp_path, kam, ring_timeout=1.5)
    try:
        alice = await phone(phones, tmp_path, "alice", ringing_agent_scenario(), "-m", "1")
        kam.route("101", alice.port)
        channel = sb.channels["sip"].channel
        await channel.dial(sb.store.get_agent("alice"), sb.addresses.parse("+12025550143"))
        record = await until(lambda: ended_call(sb), within=20)
        assert record.disposition is Disposition.FAILED
        assert "alice did not answer" in (record.hangup_cause or "")
        assert (await alice.wait(10)).ok
    finally:
        await sb.close()


class _PopWatcher:
    def __init__(self, pops: list[float]) -> None:
        self.pops = pops

    @hookimpl
    def call_ringing(self, call: object, contact: object) -> None:
        self.pops.append(time.monotonic())
