"""The IVR end to end: SIPp callers pressing RFC 2833 digits, through Kamailio, into the
SIP channel, which the IVR drives through its CallSession; agents' phones are SIPp too."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sip_peers import (
    AGENTS,
    answering_phone,
    ended_call,
    place_call,
    sip_plugin,
    sip_settings,
    until,
)

from switchboard import Disposition, Switchboard
from switchboard.testing import missing_tool, open_switchboard
from switchboard_ivr import IvrPlugin
from switchboard_sip.testing import Kamailio, Sipp, caller_scenario

FLOW = """
start = "{start}"
timezone = "UTC"

[nodes.hours]
type = "hours"
weekly = {{ {weekly} }}
open = "greeting"
closed = "closed"

[nodes.greeting]
type = "menu"
prompt = {{ text = "Press 1 or 2." }}
invalid = {{ text = "No." }}
timeout = 1.5
retries = 1
default = "operator"
options = {{ "1" = "alice", "2" = "bob" }}

[nodes.alice]
type = "agent"
agent = "alice"
ring_timeout = 5

[nodes.bob]
type = "agent"
agent = "bob"
ring_timeout = 5

[nodes.operator]
type = "agent"
agent = "bob"
ring_timeout = 5

[nodes.closed]
type = "play"
prompt = {{ text = "We are closed." }}
next = "voicemail"

[nodes.voicemail]
type = "voicemail"
max_seconds = 20
"""


@pytest.fixture(autouse=True)
def _needs_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        missing_tool("needs espeak-ng: scripts/system-deps (apt-get install espeak-ng)")


async def open_flow(
    folder: Path,
    kam: Kamailio,
    flow: Path,
    agents: list[dict[str, str]] = AGENTS,
    now: datetime | None = None,
) -> Switchboard:
    """The SIP channel driven by the IVR plugin running ``flow``."""
    return await open_switchboard(
        folder,
        sip_plugin(),
        IvrPlugin(now=(lambda: now) if now is not None else None),
        config={
            "switchboard": {"agents": agents},
            "plugins": {
                "sip": sip_settings(kam),
                "ivr": {"flow": str(flow), "tts_cache_dir": str(folder / "tts")},
            },
        },
    )


async def open_ivr(folder: Path, kam: Kamailio, *, closed: bool = False) -> Switchboard:
    flow = folder / "flow.toml"
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    weekly = "" if closed else ", ".join(f'{d} = "00:00-24:00"' for d in days)
    flow.write_text(FLOW.format(start="hours", weekly=weekly))
    return await open_flow(folder, kam, flow)


def path_of(record: Any) -> list[tuple[str, str]]:
    return [(s.node, s.digits) for s in record.ivr_path]


async def call(folder: Path, kam: Kamailio, **scenario: Any) -> None:
    await place_call(folder, kam, caller_scenario("12025550143", **scenario))


async def test_a_digit_routes_to_the_right_agents_extension(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_ivr(tmp_path, kam)
    try:
        alice = await answering_phone(
            phones, tmp_path, "alice", answer_after_ms=200, hangup_after_ms=1500
        )
        kam.route("101", alice.port)
        kam.route("102", 9)
        await call(tmp_path, kam, digits="1", digit_delay_ms=800, audio=False, hangup="callee")
        record = await until(lambda: ended_call(sb), within=20)
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == sb.store.get_agent("alice").id
        assert path_of(record) == [("hours", "open"), ("greeting", "1"), ("alice", "")]
        assert (await alice.wait(10)).ok
    finally:
        await sb.close()


async def test_an_invalid_digit_replays_the_menu(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_ivr(tmp_path, kam)
    try:
        bob = await answering_phone(
            phones, tmp_path, "bob", answer_after_ms=200, hangup_after_ms=1500
        )
        kam.route("102", bob.port)
        await call(
            tmp_path,
            kam,
            digits="72",
            digit_delay_ms=800,
            digit_gap_ms=2500,
            audio=False,
            hangup="callee",
        )
        record = await until(lambda: ended_call(sb), within=20)
        assert path_of(record)[1:] == [("greeting", "7"), ("greeting", "2"), ("bob", "")], path_of(
            record
        )
        assert record.disposition is Disposition.ANSWERED
    finally:
        await sb.close()


async def test_silence_times_out_to_the_default(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_ivr(tmp_path, kam)
    try:
        bob = await answering_phone(
            phones, tmp_path, "bob", answer_after_ms=200, hangup_after_ms=1500
        )
        kam.route("102", bob.port)
        await call(tmp_path, kam, audio=False, hangup="callee")
        record = await until(lambda: ended_call(sb), within=30)
        assert path_of(record)[1:] == [("greeting", ""), ("greeting", ""), ("operator", "")]
        assert record.agent_id == sb.store.get_agent("bob").id
    finally:
        await sb.close()


async def test_out_of_hours_goes_to_voicemail(tmp_path: Path, kam: Kamailio) -> None:
    sb = await open_ivr(tmp_path, kam, closed=True)
    try:
        await call(tmp_path, kam, talk_ms=6000, audio=True)
        record = await until(lambda: ended_call(sb), within=20)
        assert path_of(record) == [("hours", "closed"), ("closed", ""), ("voicemail", "")]
        assert record.disposition is Disposition.VOICEMAIL
        assert record.recording is not None and record.recording.duration > 1.0
        assert record.recording.path.endswith("-voicemail.wav")
        [task] = sb.store.list_tasks()  # a voicemail is work for someone
        assert task.meta["reason"] == "voicemail"
    finally:
        await sb.close()


async def test_hang_up_in_the_menu_is_abandoned_at_that_node(tmp_path: Path, kam: Kamailio) -> None:
    sb = await open_ivr(tmp_path, kam)
    try:
        await call(tmp_path, kam, talk_ms=1000, audio=False)
        record = await until(lambda: ended_call(sb), within=20)
        assert record.disposition is Disposition.ABANDONED
        assert path_of(record)[-1][0] == "greeting"
        assert record.hangup_cause == "caller hung up"
    finally:
        await sb.close()


RING_THEN_VOICEMAIL = """
start = "everyone"
consent = { text = "This call is recorded." }

[groups.all]
agents = ["alice", "bob"]
ring_timeout = 1.5

[nodes.everyone]
type = "group"
group = "all"
no_answer = "voicemail"

[nodes.voicemail]
type = "voicemail"
max_seconds = 20
"""


async def test_consent_then_the_agents_then_voicemail_without_a_menu(
    tmp_path: Path, kam: Kamailio
) -> None:
    """What the SIP channel's own voicemail and consent settings did before 0.2: the IVR
    owns both, and this flow of two nodes is the same behaviour."""
    flow = tmp_path / "flow.toml"
    flow.write_text(RING_THEN_VOICEMAIL)
    sb = await open_flow(tmp_path, kam, flow)
    try:
        kam.route("101", 9)  # both phones unreachable: nobody answers
        kam.route("102", 9)
        await call(tmp_path, kam, talk_ms=9000, audio=True)
        record = await until(lambda: ended_call(sb), within=40)
        assert path_of(record) == [("everyone", ""), ("voicemail", "")]
        assert record.disposition is Disposition.VOICEMAIL
        assert record.recording is not None and record.recording.path.endswith("-voicemail.wav")
        assert record.recording.duration > 0.5  # the caller's message
    finally:
        await sb.close()


EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "ivr" / "sales-support.toml"
WEDNESDAY_NOON = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # 12:00 in Moscow
SATURDAY = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


async def open_example(folder: Path, kam: Kamailio, now: datetime) -> Switchboard:
    agents = [{"name": "anna", "extension": "101"}, {"name": "boris", "extension": "102"}]
    return await open_flow(folder, kam, EXAMPLE, agents, now)


async def test_the_example_flow_in_hours_sales_goes_to_the_round_robin_group(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_example(tmp_path, kam, WEDNESDAY_NOON)
    try:
        anna = await answering_phone(
            phones, tmp_path, "anna", answer_after_ms=200, hangup_after_ms=1500
        )
        kam.route("101", anna.port)
        kam.route("102", 9)
        await call(tmp_path, kam, digits="1", digit_delay_ms=1500, audio=False, hangup="callee")
        record = await until(lambda: ended_call(sb), within=40)
        assert path_of(record) == [
            ("hours", "open"),
            ("known", ""),
            ("greeting", "1"),
            ("sales", ""),
        ]
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == sb.store.get_agent("anna").id
        assert record.recording is not None  # recorded, after the consent announcement
    finally:
        await sb.close()


async def test_the_example_flow_out_of_hours_takes_a_voicemail(
    tmp_path: Path, kam: Kamailio
) -> None:
    sb = await open_example(tmp_path, kam, SATURDAY)
    try:
        await call(tmp_path, kam, talk_ms=12000, audio=True)
        record = await until(lambda: ended_call(sb), within=30)
        assert path_of(record) == [("hours", "closed"), ("closed", ""), ("voicemail", "")]
        assert record.disposition is Disposition.VOICEMAIL
        assert record.recording is not None and record.recording.duration > 0.5
    finally:
        await sb.close()
