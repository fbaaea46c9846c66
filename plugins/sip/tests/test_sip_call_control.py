"""Call control in a bridged call: session timers (RFC 4028) with SIPp callers, hold and
resume with music on hold, and transfer, with baresip phones."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest
from sip_peers import (
    CALLER,
    answering_phone,
    baresip,
    ended_call,
    heard,
    open_sip,
    phone,
    place_call,
    until,
)

from switchboard import Disposition, NotFound, Role
from switchboard.auth import Principal
from switchboard_sip import dialog
from switchboard_sip.testing import (
    Baresip,
    Kamailio,
    Sipp,
    agent_scenario,
    caller_scenario,
    transferring_agent_scenario,
    write_tone,
)


@pytest.fixture
def short_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Session intervals of seconds, not RFC 4028's 90-second floor, so tests run fast."""
    monkeypatch.setattr(dialog, "MIN_SE", 2)


async def test_we_refresh_the_session_when_the_caller_asks_us_to(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp], short_timers: None
) -> None:
    sb = await open_sip(tmp_path, kam)
    try:
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=100)
        kam.route("101", alice.port)
        kam.route("102", 9)
        scenario = caller_scenario(
            CALLER, talk_ms=500, session_expires="4;refresher=uas", expect_reinvites=2
        )
        await place_call(tmp_path, kam, scenario, timeout=30)  # two re-INVITEs came
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.hangup_cause == "customer hung up"
    finally:
        await sb.close()


async def test_a_session_nobody_refreshes_is_hung_up(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp], short_timers: None
) -> None:
    """The caller said it would refresh (refresher=uac) and went silent: after the
    interval less a third (RFC 4028 §10) we send BYE."""
    sb = await open_sip(tmp_path, kam, rtp_timeout=0)
    try:
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=100)
        kam.route("101", alice.port)
        kam.route("102", 9)
        scenario = caller_scenario(
            CALLER, session_expires="4;refresher=uac", hangup="callee", audio=False
        )
        started = asyncio.get_running_loop().time()
        await place_call(tmp_path, kam, scenario, timeout=30)  # it got our BYE
        record = await until(lambda: ended_call(sb))
        assert record.hangup_cause == "session timer expired (no refresh within 4 s)"
        assert 2.5 < asyncio.get_running_loop().time() - started < 10
    finally:
        await sb.close()


def steady(levels: list[int], low: float, high: float) -> list[int]:
    """The windows whose level is in ``(low, high)`` with a neighbour in it too: a window
    that straddles a change (half one sound, half another) averages to a level of its own
    and is left out."""
    inside = [low < v < high for v in levels]
    return [
        i
        for i, ok in enumerate(inside)
        if ok and ((i > 0 and inside[i - 1]) or (i + 1 < len(inside) and inside[i + 1]))
    ]


def loudness_windows(path: Path | str, seconds: float = 0.5, channel: int = 0) -> list[int]:
    """Loudness (RMS) of each ``seconds`` of a WAV (of one ``channel`` of a stereo one)."""
    from switchboard_sip._compat import audioop

    with wave.open(str(path), "rb") as w:
        step = int(w.getframerate() * seconds)
        stereo = w.getnchannels() == 2
        out = []
        while frames := w.readframes(step):
            if stereo:
                frames = audioop.tomono(frames, 2, 1.0 - channel, float(channel))
            out.append(audioop.rms(frames, w.getsampwidth()))
    return out


async def test_an_agent_holds_and_resumes_and_the_customer_hears_music_meanwhile(
    tmp_path: Path, kam_tls: Kamailio, softphones: list[Baresip]
) -> None:
    music = write_tone(tmp_path / "music.wav", 2.0, 300.0, 1000)  # quieter than the phones
    sb = await open_sip(
        tmp_path,
        kam_tls,
        ring_agents=["alice"],
        dial_format="e164_digits",
        music_on_hold=str(music),
    )
    try:
        alice = await baresip(softphones, tmp_path, kam_tls, "101", "udp")
        customer = await baresip(softphones, tmp_path, kam_tls, "12025550143", "udp", freq=880)
        customer.command("dial", f"sip:switchboard@127.0.0.1:{kam_tls.port}")
        await until(lambda: any(c.agent_id for c in sb.store.list_calls()), within=20)
        await asyncio.sleep(2)
        assert '"ok":true' in alice.command("hold")  # a re-INVITE with a=sendonly
        legs = sb.channels["sip"].channel.ua.legs.values()
        await until(lambda: any(g.stream is not None and g.stream.on_hold for g in legs), 5)
        await asyncio.sleep(3)
        assert '"ok":true' in alice.command("resume")
        await asyncio.sleep(2)
        customer.command("hangup")
        record = await until(lambda: ended_call(sb), within=15)
        assert record.disposition is Disposition.ANSWERED
        # the customer heard alice, then the music (quieter), then alice again
        levels = loudness_windows(customer.recordings("dec")[-1])
        loud = [i for i, v in enumerate(levels) if v > 3000]
        music_heard = [i for i, v in enumerate(levels) if 300 < v < 1500]
        assert len(music_heard) >= 4, levels  # about 3 s of music on hold
        assert loud and min(loud) < min(music_heard) and max(loud) > max(music_heard)
        # while alice held (we answered recvonly) nothing was sent to her: her phone
        # decoded about 3 s less audio than the customer's
        got = loudness_windows(alice.recordings("dec")[-1])
        assert len(levels) - len(got) >= 4, (levels, got)
    finally:
        await sb.close()


async def test_an_agent_transfers_the_customer_to_another_agent(
    tmp_path: Path, kam_tls: Kamailio, softphones: list[Baresip]
) -> None:
    """Blind transfer: alice's phone sends REFER (Refer-To bob's extension); the customer
    waits with music, then talks to bob in the same call and the same recording; the
    record's agent becomes bob and ``call.transferred`` is published."""
    sb = await open_sip(tmp_path, kam_tls, ring_agents=["alice"], dial_format="e164_digits")
    try:
        alice = await baresip(softphones, tmp_path, kam_tls, "101", "udp")
        bob = await baresip(softphones, tmp_path, kam_tls, "102", "udp", freq=660, volume=3000)
        customer = await baresip(softphones, tmp_path, kam_tls, "12025550143", "udp", freq=880)
        customer.command("dial", f"sip:switchboard@127.0.0.1:{kam_tls.port}")
        await until(lambda: any(c.agent_id for c in sb.store.list_calls()), within=20)
        await asyncio.sleep(2)
        assert '"ok":true' in alice.command("transfer", f"sip:102@127.0.0.1:{kam_tls.port}")
        bob_id = sb.store.get_agent("bob").id
        await until(lambda: sb.store.list_calls()[0].agent_id == bob_id, within=15)
        await asyncio.sleep(2.5)
        customer.command("hangup")
        record = await until(lambda: ended_call(sb), within=15)
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == bob_id
        assert record.recording is not None and record.recording.duration > 4
        events = [e for e in sb.events.read_since(0) if e.type == "call.transferred"]
        assert len(events) == 1
        assert events[0].data["from_agent_id"] == sb.store.get_agent("alice").id
        # the customer heard alice (loud), then bob (quieter), never silence in between
        levels = loudness_windows(customer.recordings("dec")[-1])
        alice_heard = [i for i, v in enumerate(levels) if v > 4500]
        bob_heard = [i for i, v in enumerate(levels) if 1800 < v < 2600]
        assert alice_heard and len(bob_heard) >= 3, levels
        assert max(alice_heard) < min(bob_heard)
        assert heard(bob) > 3000  # and bob heard the customer
        assert "terminated" in alice.output() or "closed" in alice.output()
    finally:
        await sb.close()


async def test_an_agents_early_media_reaches_the_caller_before_the_answer(
    tmp_path: Path,
    kam_tls: Kamailio,
    softphones: list[Baresip],
) -> None:
    """The agent's side sends 183 with SDP and plays audio for 3 s before it answers (a
    PBX's announcement, a ringback): we send the caller a 183 of our own and relay that
    audio, so the caller hears it while the call is still unanswered."""
    sb = await open_sip(tmp_path, kam_tls, ring_agents=["alice"])
    agent = Sipp(tmp_path / "sipp", "agent", agent_scenario(answer_after_ms=3000, early_media=True))
    try:
        await agent.start(None, "-m", "1")
        kam_tls.route("101", agent.port)
        customer = await baresip(softphones, tmp_path, kam_tls, "12025550143", "udp", freq=880)
        customer.command("dial", f"sip:switchboard@127.0.0.1:{kam_tls.port}")
        await until(lambda: any(c.agent_id for c in sb.store.list_calls()), within=20)
        await asyncio.sleep(1)
        customer.command("hangup")
        record = await until(lambda: ended_call(sb), within=15)
        assert record.disposition is Disposition.ANSWERED
        assert "Session Progress" in customer.output() or "183" in customer.output()
        # the caller's phone decoded audio for the 3 s before the answer too: its
        # recording of what it heard is longer than the 1 s after the answer, and loud
        heard_seconds = loudness_windows(customer.recordings("dec")[-1], 1.0)
        assert len(heard_seconds) >= 3, heard_seconds
        assert sum(1 for v in heard_seconds[:3] if v > 100) >= 2, heard_seconds
        assert (await agent.wait(10)).ok
    finally:
        await agent.stop()
        await sb.close()


async def test_an_attended_transfer_replaces_the_consultation_call(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    """RFC 3891: alice consulted bob (a call of their own at the PBX), then her phone
    sends REFER with ``Refer-To: <sip:102@...?Replaces=...>``; our INVITE to bob carries
    that Replaces header (so bob's phone swaps the consultation for the customer) and the
    customer ends up talking to bob."""
    sb = await open_sip(tmp_path, kam, ring_agents=["alice"])
    try:
        replaces = "consult-1@pbx;to-tag=bt;from-tag=at"
        encoded = "consult-1%40pbx%3Bto-tag%3Dbt%3Bfrom-tag%3Dat"
        alice = await phone(
            phones,
            tmp_path,
            "alice",
            transferring_agent_scenario(f"<sip:102@127.0.0.1?Replaces={encoded}>"),
            "-m",
            "1",
        )
        bob = await answering_phone(
            phones, tmp_path, "bob", answer_after_ms=100, expect_replaces=replaces
        )
        kam.route("101", alice.port)
        kam.route("102", bob.port)
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=6000), timeout=40)
        record = await until(lambda: ended_call(sb), within=15)
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == sb.store.get_agent("bob").id
        assert (await alice.wait(10)).ok  # 202, two NOTIFYs, her BYE answered
        assert (await bob.wait(10)).ok  # the INVITE carried the Replaces header
    finally:
        await sb.close()


async def test_a_refer_that_could_send_the_call_elsewhere_is_refused(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    """A Replaces value that would break our INVITE's headers (a CR LF and a Via) is
    refused with 400; no transfer is tried and the call stays alice's."""
    sb = await open_sip(tmp_path, kam, ring_agents=["alice"])
    try:
        bad = "<sip:102@127.0.0.1?Replaces=x%0D%0AVia%3A%20evil>"
        alice = await phone(
            phones,
            tmp_path,
            "alice",
            transferring_agent_scenario(bad, expect=400),
            "-m",
            "1",
        )
        kam.route("101", alice.port)
        kam.route("102", 9)
        # alice hangs up after the refusal: the caller gets our BYE
        await place_call(tmp_path, kam, caller_scenario(CALLER, hangup="callee"), timeout=30)
        record = await until(lambda: ended_call(sb), within=15)
        assert record.agent_id == sb.store.get_agent("alice").id
        assert record.hangup_cause == "agent hung up"
        assert (await alice.wait(10)).ok
    finally:
        await sb.close()


async def test_the_service_api_holds_resumes_and_transfers_a_call(
    tmp_path: Path, kam_tls: Kamailio, softphones: list[Baresip]
) -> None:
    """What POST /api/calls/{id}/hold, /resume and /transfer do: Switchboard re-INVITEs
    the customer's phone (sendonly, then sendrecv) and plays it music meanwhile, then
    hands the call to bob in the same call and recording."""
    music = write_tone(tmp_path / "music.wav", 2.0, 300.0, 1000)
    sb = await open_sip(tmp_path, kam_tls, ring_agents=["alice"], music_on_hold=str(music))
    try:
        await baresip(softphones, tmp_path, kam_tls, "101", "udp")
        bob = await baresip(softphones, tmp_path, kam_tls, "102", "udp", freq=660, volume=3000)
        customer = await baresip(softphones, tmp_path, kam_tls, CALLER, "udp", freq=880)
        customer.command("dial", f"sip:switchboard@127.0.0.1:{kam_tls.port}")
        await until(lambda: any(c.agent_id for c in sb.store.list_calls()), within=20)
        call_id = sb.store.list_calls()[0].call_id
        admin = Principal(name="test", role=Role.ADMIN)
        await asyncio.sleep(1.5)
        await sb.control_call(admin, call_id, "hold")
        await asyncio.sleep(2.5)
        await sb.control_call(admin, call_id, "resume")
        await asyncio.sleep(1.5)
        bob_agent = sb.store.get_agent("bob")
        record = await sb.control_call(admin, call_id, "transfer", bob_agent)
        assert record.agent_id == bob_agent.id
        await asyncio.sleep(2)
        customer.command("hangup")
        record = await until(lambda: ended_call(sb), within=15)
        assert record.agent_id == bob_agent.id
        assert record.recording is not None and record.recording.duration > 6
        # its phone was told twice: hold (sendonly) and resume (sendrecv)
        assert customer.output().count("got re-INVITE") == 2
        # what the customer was sent, as recorded (right channel): alice, the music,
        # alice, (the music while bob rang), bob
        levels = loudness_windows(record.recording.path, channel=1)
        alice_sent = steady(levels, 4500, 1e9)
        music_sent = steady(levels, 300, 1500)
        bob_sent = steady(levels, 1800, 2600)
        assert len(music_sent) >= 4 and len(bob_sent) >= 2, levels
        assert min(alice_sent) < min(music_sent) < max(alice_sent) < min(bob_sent), levels
        assert heard(bob) > 3000  # and bob heard the customer
        with pytest.raises(NotFound):  # it ended: nothing to hold
            await sb.control_call(admin, call_id, "hold")
    finally:
        await sb.close()


async def test_a_transfer_to_a_number_by_refer_hands_the_customer_on(
    tmp_path: Path, kam_tls: Kamailio, softphones: list[Baresip]
) -> None:
    """``transfer_out = "refer"`` (Switchboard the transferor, RFC 3515): the customer's
    phone is asked to call the number itself; once its NOTIFY says 200 we leave the call,
    and the customer talks to the number without us in between."""
    sb = await open_sip(
        tmp_path,
        kam_tls,
        ring_agents=["alice"],
        dial_format="e164_digits",
        transfer_out="refer",
    )
    try:
        alice = await baresip(softphones, tmp_path, kam_tls, "101", "udp")
        outside = await baresip(softphones, tmp_path, kam_tls, "49301234", "udp", freq=660)
        customer = await baresip(softphones, tmp_path, kam_tls, CALLER, "udp", freq=880)
        customer.command("dial", f"sip:switchboard@127.0.0.1:{kam_tls.port}")
        await until(lambda: any(c.agent_id for c in sb.store.list_calls()), within=20)
        call_id = sb.store.list_calls()[0].call_id
        await asyncio.sleep(1)
        admin = Principal(name="test", role=Role.ADMIN)
        await sb.control_call(admin, call_id, "transfer", sb.addresses.parse("+49301234"))
        record = await until(lambda: ended_call(sb), within=15)
        assert record.hangup_cause == "transferred to +49301234"
        assert record.disposition is Disposition.ANSWERED
        await asyncio.sleep(2)  # the customer and the outside phone talk, without us
        assert sb.channels["sip"].channel.bridges == set()
        assert "transferring call" in customer.output()  # its phone took our REFER
        customer.command("hangup")
        await asyncio.sleep(1)  # the phones close their recordings
        assert heard(outside) > 500  # the outside phone heard the customer
        assert len(alice.recordings("dec")) == 1
    finally:
        await sb.close()


async def test_an_attended_transfer_through_the_api(
    tmp_path: Path, kam_tls: Kamailio, softphones: list[Baresip]
) -> None:
    """/consult then /transfer: the customer hears music while alice talks to bob, then
    talks to bob in the same call and recording; alice's leg is hung up."""
    sb = await open_sip(tmp_path, kam_tls, ring_agents=["alice"])
    try:
        alice = await baresip(softphones, tmp_path, kam_tls, "101", "udp")
        bob = await baresip(softphones, tmp_path, kam_tls, "102", "udp", freq=660, volume=3000)
        customer = await baresip(softphones, tmp_path, kam_tls, CALLER, "udp", freq=880)
        customer.command("dial", f"sip:switchboard@127.0.0.1:{kam_tls.port}")
        await until(lambda: any(c.agent_id for c in sb.store.list_calls()), within=20)
        call_id = sb.store.list_calls()[0].call_id
        admin = Principal(name="test", role=Role.ADMIN)
        bob_agent = sb.store.get_agent("bob")
        await asyncio.sleep(1.5)
        await sb.control_call(admin, call_id, "consult", bob_agent)
        await asyncio.sleep(2.5)  # alice and bob talk; the customer hears music
        record = await sb.control_call(admin, call_id, "transfer", bob_agent)
        assert record.agent_id == bob_agent.id
        await asyncio.sleep(2)
        customer.command("hangup")
        record = await until(lambda: ended_call(sb), within=15)
        assert record.agent_id == bob_agent.id
        assert record.recording is not None
        # what the customer was sent: alice, the music (quieter), bob
        levels = loudness_windows(record.recording.path, channel=1)
        alice_sent = [i for i, v in enumerate(levels) if v > 4500]
        music_sent = [i for i, v in enumerate(levels) if 100 < v < 1500]  # a soft chime
        bob_sent = steady(levels, 1800, 2600)
        assert alice_sent and music_sent and len(bob_sent) >= 2, levels
        assert max(alice_sent) < min(bob_sent), levels
        # during the consultation alice heard bob (his tone is quieter than anyone's)
        alice_heard = loudness_windows(alice.recordings("dec")[-1])
        assert sum(1 for v in alice_heard if 1800 < v < 2600) >= 3, alice_heard
        assert heard(bob) > 1000
    finally:
        await sb.close()
