"""Calls end to end: SIPp callers and agent phones, through Kamailio, to the SIP channel."""

from __future__ import annotations

from pathlib import Path

from sip_peers import CALLER, kam, open_sip, phone, phones, until  # noqa: F401

from switchboard import Disposition, InteractionStatus
from switchboard_sip.testing import Kamailio, Sipp, agent_scenario, caller_scenario, pcm_rms


async def test_inbound_call_is_answered_by_an_agent_and_recorded(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sip(tmp_path, kam)
    try:
        alice = await phone(phones, tmp_path, "alice", agent_scenario(answer_after_ms=300), "-m", "1")
        kam.route("101", alice.port)
        kam.route("102", 9)  # bob's phone is off: the INVITE to him goes nowhere
        caller = Sipp(tmp_path / "sipp", "caller", caller_scenario(CALLER, talk_ms=3000))
        result = await caller.run(f"127.0.0.1:{kam.port}", "-s", kam.user, "-m", "1", timeout=40)
        assert result.ok, result.errors
        record = await until(lambda: _ended(sb))
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


def _ended(sb):  # type: ignore[no-untyped-def]
    calls = sb.store.list_calls()
    if calls and calls[0].status is InteractionStatus.ENDED:
        return calls[0]
    return None
