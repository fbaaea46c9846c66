"""Browser legs (docs/softphone.md) with aiortc peers standing in for the browsers: real
SIPp callers through Kamailio, real WebRTC (ICE, DTLS-SRTP) to the peers. The console's
side, in Chromium, is tested in the console plugin's tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from sip_peers import CALLER, answering_phone, ended_call, phone, place_call, sip_plugin, until
from sip_peers import sip_settings as settings_for

from switchboard import Agent, Disposition, Forbidden, Principal, Role, Softphones
from switchboard.testing import open_switchboard
from switchboard_sip.media import FRAME_BYTES, MediaClock, tone
from switchboard_sip.testing import (
    BrowserPeer,
    Kamailio,
    Sipp,
    agent_scenario,
    caller_scenario,
    pcm_rms,
    tone_level,
    wav_part,
    write_alaw,
)
from switchboard_sip.webrtc import BrowserLeg, BrowserStream, dtmf_tones

AGENTS = [
    {"name": "alice", "ring": "browser"},
    {"name": "bob", "extension": "102", "ring": "both"},
]


@contextlib.asynccontextmanager
async def browsers(
    folder: Path,
    kam: Kamailio,
    pitches: dict[str, int],
    agents: list[dict[str, Any]] = AGENTS,
    **settings: Any,
) -> AsyncIterator[tuple[Any, dict[str, BrowserPeer]]]:
    """A runner with the SIP channel (``settings``), and for each agent ``pitches`` names an
    aiortc stand-in browser whose microphone plays that tone, connected as its softphone."""
    sb = await open_switchboard(
        folder,
        sip_plugin(),
        config={
            "switchboard": {"agents": agents},
            "plugins": {"sip": settings_for(kam, **settings)},
        },
    )
    peers = {
        name: BrowserPeer(sb.softphones, agent_id(sb, name), tone=tone(1.0, pitch))
        for name, pitch in pitches.items()
    }
    try:
        for peer in peers.values():
            assert peer.connect()
        yield sb, peers
    finally:
        for peer in peers.values():
            await peer.close()
        await sb.close()


def calling(folder: Path, kam: Kamailio, **scenario: Any) -> asyncio.Task[None]:
    """A SIPp caller (``caller_scenario`` options) to Switchboard, in the background."""
    return asyncio.create_task(
        place_call(folder, kam, caller_scenario(CALLER, **scenario), timeout=40)
    )


def agent_id(sb: Any, name: str) -> int:
    found = sb.store.get_agent(name)
    assert found is not None and found.id is not None
    return int(found.id)


async def test_a_browser_only_agent_takes_a_call_with_audio_both_ways(
    tmp_path: Path, kam: Kamailio
) -> None:
    async with browsers(tmp_path, kam, {"alice": 600}, ring_agents=["alice"]) as (sb, peers):
        peer = peers["alice"]
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=2500), timeout=30)
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == agent_id(sb, "alice")
        ring = next(m for m in peer.messages if m["type"] == "ring")
        assert ring["call"] == record.call_id and ring["kind"] == "call"
        assert ring["number"] == f"+{CALLER}"
        offer = next(m for m in peer.messages if m["type"] == "offer")
        assert peer.messages.index(ring) < peer.messages.index(offer)  # it rang at once
        # G.711 offered first, so the browser's codec needs no transcoding
        assert re.search(r"m=audio \d+ UDP/TLS/RTP/SAVPF 0 8 ", offer["sdp"])
        assert record.recording is not None
        assert pcm_rms(record.recording.path, 0) > 300  # the caller's capture
        assert pcm_rms(record.recording.path, 1) > 1000  # the browser's tone
        assert max(rms for _, rms in peer.heard_at) > 300  # the browser heard the caller
        assert sb.softphones.status() == {"connected": 1, "legs": 0}


async def test_ringing_both_the_browser_answers_first_and_the_phone_stops_ringing(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    async with browsers(tmp_path, kam, {"bob": 600}, ring_agents=["bob"]) as (sb, _):
        desk = await answering_phone(phones, tmp_path, "bob-desk", answer_after_ms=4000)
        kam.route("102", desk.port)
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=1500), timeout=30)
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == agent_id(sb, "bob")
        assert pcm_rms(record.recording.path, 1) > 1000  # the browser's tone, not the desk's
        result = await desk.wait(10)  # the desk phone was cancelled: its call failed
        assert not result.ok and "CANCEL" in result.errors


async def test_a_browser_gone_mid_call_ends_it_within_seconds(
    tmp_path: Path, kam: Kamailio
) -> None:
    async with browsers(tmp_path, kam, {"alice": 600}, ring_agents=["alice"]) as (sb, peers):
        peer = peers["alice"]
        call = calling(tmp_path, kam, hangup="callee")
        await asyncio.wait_for(peer.answered.wait(), 15)
        await asyncio.sleep(1.5)
        gone = time.monotonic()
        await peer.close()  # the tab closed: its socket and its peer connection
        await call  # the caller got our BYE
        ended = time.monotonic()
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert "browser" in (record.hangup_cause or ""), record.hangup_cause
        assert ended - gone < 6.0


async def test_click_to_call_rings_the_browser_then_the_customer(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    async with browsers(tmp_path, kam, {"alice": 600}) as (sb, peers):
        alice, peer = agent_id(sb, "alice"), peers["alice"]
        customer = await phone(
            phones,
            tmp_path,
            "customer",
            agent_scenario(answer_after_ms=300, hangup_after_ms=2000),
            "-m",
            "1",
        )
        kam.route("+12025550143", customer.port)
        agent = sb.store.get_agent("alice")
        who = Principal("alice", Role.AGENT, agent)
        await sb.place_call(who, agent, to="+1 202 555 0143")
        assert (await customer.wait(15)).ok
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED and record.agent_id == alice
        assert [m["kind"] for m in peer.messages if m["type"] == "ring"] == ["dial"]
        assert pcm_rms(record.recording.path, 1) > 1000


async def test_an_answer_without_a_usable_codec_is_declined_with_the_reason() -> None:
    phones = Softphones()
    clock = MediaClock()
    clock.start()
    peer = BrowserPeer(phones, 1, auto_answer=False)
    try:
        assert peer.connect()
        leg = BrowserLeg(phones, Agent(id=1, name="alice"), "c1", clock, [])
        await leg.ring({"caller": "Olga"})
        browser = RTCPeerConnection()  # a browser's answer, made to offer G.722 alone
        await browser.setRemoteDescription(
            RTCSessionDescription(sdp=peer.messages[-1]["sdp"], type="offer")  # the offer
        )
        await browser.setLocalDescription(await browser.createAnswer())
        sdp = re.sub(r"(m=audio \d+ \S+)( \d+)+", r"\1 9", browser.localDescription.sdp)
        sdp = re.sub(r"a=(rtpmap|fmtp|rtcp-fb):\d+ [^\r]*\r\n", "", sdp)
        sdp += "a=rtpmap:9 G722/8000\r\n"
        await browser.close()
        with pytest.raises(ValueError, match="no usable audio codec"):
            await phones.received(1, {"type": "answer", "leg": leg.leg_id, "sdp": sdp})
        assert leg.ended.is_set()
        ended = peer.messages[-1]
        assert ended["type"] == "ended" and "codec" in ended["reason"]
    finally:
        await peer.close()
        await clock.stop()


async def test_signalling_is_only_taken_from_the_agent_the_leg_rings() -> None:
    phones = Softphones()
    clock = MediaClock()
    alice = BrowserPeer(phones, 1, auto_answer=False)
    mallory = BrowserPeer(phones, 2, auto_answer=False)
    try:
        assert alice.connect() and mallory.connect()
        assert not BrowserPeer(phones, 1).connect()  # a second tab: not the softphone
        leg = BrowserLeg(phones, Agent(id=1, name="alice"), "c1", clock, [])
        await leg.ring({"caller": "Olga"})
        with pytest.raises(PermissionError):
            await phones.received(2, {"type": "decline", "leg": leg.leg_id})
        with pytest.raises(LookupError):
            await phones.received(1, {"type": "decline", "leg": "no-such-leg"})
        for bad in ({"type": "dtmf", "digits": "1; rm -rf"}, {"type": "shout"}):
            with pytest.raises(ValueError, match=r"digits|unknown message"):
                await phones.received(1, {**bad, "leg": leg.leg_id})
        with pytest.raises(ValueError, match="at most"):
            await phones.received(1, {"type": "answer", "leg": leg.leg_id, "sdp": "v" * 70_000})
        assert leg.state.value == "ringing"  # refused messages leave the call ringing
        assert not mallory.messages
        await leg.hangup()
        assert alice.messages[-1] == {"type": "ended", "leg": leg.leg_id, "reason": "hung up"}
    finally:
        await alice.close()
        await mallory.close()


def test_keypad_presses_reach_the_call_as_tones_in_band() -> None:
    stream = BrowserStream()
    stream.received(b"\x01\x00" * 800)  # the microphone meanwhile
    stream.dtmf("5#")
    frames = []
    while (frame := stream.take_frame()) is not None:
        frames.append(frame)
    tones = dtmf_tones("5#")
    whole = len(tones) // FRAME_BYTES
    assert b"".join(frames[:whole]) == tones[: whole * FRAME_BYTES]  # the tones, not the mic


async def test_a_supervisor_listens_whispers_and_barges_in(tmp_path: Path, kam: Kamailio) -> None:
    """The caller plays 350 Hz, the agent's browser 600 Hz, the supervisor's 900 Hz: who
    hears what is told apart by pitch in what each browser heard and in the recording."""
    agents = [
        {"name": "alice", "ring": "browser"},
        {"name": "sue", "ring": "browser", "role": "supervisor"},
    ]
    voice = write_alaw(tmp_path / "caller.alaw", 2.0, freq=350)
    async with browsers(
        tmp_path, kam, {"alice": 600, "sue": 900}, agents, ring_agents=["alice"]
    ) as (sb, peers):
        alice, sue = peers["alice"], peers["sue"]
        sue_id = agent_id(sb, "sue")
        call = calling(tmp_path, kam, hangup="callee", stream=voice)
        sip = sb.channels["sip"].channel
        await until(lambda: sip.bridges, within=15)  # answered: talking, recorded
        talking = time.monotonic()
        record = sb.store.list_calls()[0]
        as_agent = Principal("alice", Role.AGENT, sb.store.get_agent("alice"))
        with pytest.raises(Forbidden):
            await sb.supervise_call(as_agent, record.call_id, "listen")
        boss = Principal("sue", Role.SUPERVISOR, sb.store.get_agent("sue"))
        marks = {}
        for mode in ("listen", "whisper", "barge"):
            await sb.supervise_call(boss, record.call_id, mode)
            marks[mode] = time.monotonic()
            await asyncio.sleep(2.0)
        await alice.hangup(next(iter(alice.pcs)))
        await call
        ended = await until(lambda: ended_call(sb))
        assert [(s.agent_id, str(s.mode)) for s in ended.supervision] == [
            (sue_id, "listen"),
            (sue_id, "whisper"),
            (sue_id, "barge"),
        ]
        assert ended.recording is not None

        def heard(peer: BrowserPeer, mode: str, pitch: int) -> float:
            start = marks[mode] + 0.5
            return tone_level(peer.heard_between(start, start + 1.2), pitch)

        def recorded(mode: str, pitch: int) -> float:
            start = marks[mode] + 0.5 - talking
            return tone_level(wav_part(ended.recording.path, 1, start, start + 1.2), pitch)

        loud, quiet = 1500, 300  # the tones' amplitude is 8000
        # listening: sue hears the caller and alice; nobody hears sue
        assert heard(sue, "listen", 350) > loud and heard(sue, "listen", 600) > loud
        assert heard(alice, "listen", 900) < quiet and recorded("listen", 900) < quiet
        # whispering: alice hears sue; the customer (and the recording) does not
        assert heard(alice, "whisper", 900) > loud and recorded("whisper", 900) < quiet
        # barging in: the customer hears sue too, and so does the recording
        assert heard(alice, "barge", 900) > loud and recorded("barge", 900) > loud
        assert recorded("barge", 600) > loud  # alice still heard


async def test_a_lost_browser_can_hand_the_call_to_the_agents_desk_phone(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    """``browser_lost = "phone"``: the customer hears music for a moment, then talks to
    the same agent on their desk phone; the same recording goes on."""
    agents = [{"name": "alice", "extension": "101", "ring": "browser"}]
    async with browsers(
        tmp_path, kam, {"alice": 600}, agents, browser_lost="phone", ring_timeout=8.0
    ) as (sb, peers):
        peer = peers["alice"]
        desk = await answering_phone(
            phones, tmp_path, "alice-desk", answer_after_ms=300, hangup_after_ms=2500
        )
        kam.route("101", desk.port)
        call = calling(tmp_path, kam, hangup="callee")
        sip = sb.channels["sip"].channel
        await until(lambda: sip.bridges, within=15)
        await asyncio.sleep(1.5)
        await peer.close()  # the tab closed mid-call
        assert (await desk.wait(20)).ok  # rang, answered, talked, hung up
        await call
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == agent_id(sb, "alice")
        assert record.hangup_cause == "agent hung up"
        assert record.recording is not None and record.recording.duration > 4.0
        assert pcm_rms(record.recording.path, 1, 0.2, 1.4) > 1000  # the browser's tone
        assert pcm_rms(record.recording.path, 1, record.recording.duration - 2.0) > 100  # desk


async def test_a_signalling_blip_leaves_a_call_whose_media_survived(
    tmp_path: Path, kam: Kamailio
) -> None:
    async with browsers(tmp_path, kam, {"alice": 600}, ring_agents=["alice"]) as (sb, peers):
        peer = peers["alice"]
        call = calling(tmp_path, kam, hangup="callee")
        sip = sb.channels["sip"].channel
        await until(lambda: sip.bridges, within=15)
        sb.softphones.disconnect(agent_id(sb, "alice"), peer)  # the WebSocket dropped
        await asyncio.sleep(4.0)  # longer than the grace for a browser gone silent
        assert sip.bridges and not call.done()  # its audio still flows: the call goes on
        assert peer.connect()  # back (the console reconnects by itself)
        await peer.hangup(next(iter(peer.pcs)))  # and its messages count again
        await call
        record = await until(lambda: ended_call(sb))
        assert record.hangup_cause == "agent hung up"
        assert record.recording is not None and record.recording.duration > 3.5


async def test_a_warm_transfer_between_two_browsers(tmp_path: Path, kam: Kamailio) -> None:
    """Alice talks to bob first (the customer on hold music), then hands the call over."""
    agents = [{"name": "alice", "ring": "browser"}, {"name": "bob", "ring": "browser"}]
    voice = write_alaw(tmp_path / "caller.alaw", 2.0, freq=350)
    async with browsers(
        tmp_path, kam, {"alice": 600, "bob": 900}, agents, ring_agents=["alice"]
    ) as (sb, peers):
        alice, bob = peers["alice"], peers["bob"]
        call = calling(tmp_path, kam, hangup="callee", stream=voice)
        sip = sb.channels["sip"].channel
        await until(lambda: sip.bridges, within=15)
        record = sb.store.list_calls()[0]
        who = Principal("alice", Role.AGENT, sb.store.get_agent("alice"))
        bob_agent = sb.store.get_agent("bob")
        await sb.control_call(who, record.call_id, "consult", bob_agent)  # bob answered
        consulting = time.monotonic()
        await asyncio.sleep(1.5)
        moved = await sb.control_call(who, record.call_id, "transfer", bob_agent)
        assert moved.agent_id == bob_agent.id
        handed = time.monotonic()
        await until(lambda: not alice.pcs, within=5)  # alice's leg ended
        await asyncio.sleep(1.5)
        await bob.hangup(next(iter(bob.pcs)))
        await call
        ended = await until(lambda: ended_call(sb))
        assert ended.agent_id == bob_agent.id and ended.hangup_cause == "agent hung up"
        kinds = [m["kind"] for m in bob.messages if m["type"] == "ring"]
        assert kinds == ["consult"]  # the consultation leg became the call's
        # consulting, bob and alice heard each other and not the customer
        assert tone_level(bob.heard_between(consulting + 0.4, consulting + 1.4), 600) > 1500
        assert tone_level(bob.heard_between(consulting + 0.4, consulting + 1.4), 350) < 300
        # handed over, bob hears the customer
        assert tone_level(bob.heard_between(handed + 0.4, handed + 1.4), 350) > 1500
