"""Browser legs (docs/softphone.md) with aiortc peers standing in for the browsers: real
SIPp callers through Kamailio, real WebRTC (ICE, DTLS-SRTP) to the peers. The console's
side, in Chromium, is tested in the console plugin's tests."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from sip_peers import CALLER, answering_phone, ended_call, phone, place_call, sip_plugin, until
from sip_peers import sip_settings as settings_for

from switchboard import Agent, Disposition, Principal, Role, Softphones
from switchboard.testing import open_switchboard
from switchboard_sip.media import FRAME_BYTES, MediaClock, tone
from switchboard_sip.testing import (
    BrowserPeer,
    Kamailio,
    Sipp,
    agent_scenario,
    caller_scenario,
    pcm_rms,
)
from switchboard_sip.webrtc import BrowserLeg, BrowserStream, dtmf_tones

AGENTS = [
    {"name": "alice", "ring": "browser"},
    {"name": "bob", "extension": "102", "ring": "both"},
]


async def open_sb(folder: Path, kam: Kamailio, **overrides: Any) -> Any:
    return await open_switchboard(
        folder,
        sip_plugin(),
        config={
            "switchboard": {"agents": AGENTS},
            "plugins": {"sip": settings_for(kam, **overrides)},
        },
    )


def agent_id(sb: Any, name: str) -> int:
    found = sb.store.get_agent(name)
    assert found is not None and found.id is not None
    return int(found.id)


async def test_a_browser_only_agent_takes_a_call_with_audio_both_ways(
    tmp_path: Path, kam: Kamailio
) -> None:
    sb = await open_sb(tmp_path, kam, ring_agents=["alice"])
    peer = BrowserPeer(sb.softphones, agent_id(sb, "alice"), tone=tone(1.0, 600))
    try:
        assert peer.connect()
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
    finally:
        await peer.close()
        await sb.close()


async def test_ringing_both_the_browser_answers_first_and_the_phone_stops_ringing(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sb(tmp_path, kam, ring_agents=["bob"])
    peer = BrowserPeer(sb.softphones, agent_id(sb, "bob"), tone=tone(1.0, 600))
    try:
        assert peer.connect()
        desk = await answering_phone(phones, tmp_path, "bob-desk", answer_after_ms=4000)
        kam.route("102", desk.port)
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=1500), timeout=30)
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == agent_id(sb, "bob")
        assert pcm_rms(record.recording.path, 1) > 1000  # the browser's tone, not the desk's
        result = await desk.wait(10)  # the desk phone was cancelled: its call failed
        assert not result.ok and "CANCEL" in result.errors
    finally:
        await peer.close()
        await sb.close()


async def test_a_browser_gone_mid_call_ends_it_within_seconds(
    tmp_path: Path, kam: Kamailio
) -> None:
    sb = await open_sb(tmp_path, kam, ring_agents=["alice"])
    peer = BrowserPeer(sb.softphones, agent_id(sb, "alice"), tone=tone(1.0, 600))
    try:
        assert peer.connect()
        call = asyncio.create_task(
            place_call(tmp_path, kam, caller_scenario(CALLER, hangup="callee"), timeout=40)
        )
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
    finally:
        await peer.close()
        await sb.close()


async def test_click_to_call_rings_the_browser_then_the_customer(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sb(tmp_path, kam)
    alice = agent_id(sb, "alice")
    peer = BrowserPeer(sb.softphones, alice, tone=tone(1.0, 600))
    try:
        assert peer.connect()
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
    finally:
        await peer.close()
        await sb.close()


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
