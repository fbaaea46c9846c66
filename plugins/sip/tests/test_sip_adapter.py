"""pyVoIP's known defects, each handled in our adapter and proved here against Kamailio."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sip_peers import (
    AGENTS,
    CALLER,
    answering_phone,
    ended_call,
    open_sip,
    place_call,
    sip_plugin,
    sip_settings,
    until,
)

from switchboard import Disposition, InteractionStatus
from switchboard.channels import ChannelState
from switchboard.testing import open_switchboard
from switchboard_sip import message as sipmsg
from switchboard_sip.testing import Kamailio, Sipp, caller_scenario


def _raw(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def _request(method: str, port: int, extra: str = "", body: str = "") -> bytes:
    return (
        f"{method} sip:switchboard@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKtest;rport\r\n"
        "From: <sip:probe@127.0.0.1>;tag=abc\r\nTo: <sip:switchboard@127.0.0.1>\r\n"
        f"Call-ID: probe-{method}@test\r\nCSeq: 7 {method}\r\nMax-Forwards: 70\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def test_options_notify_info_get_answers_and_unknown_methods_501(
    tmp_path: Path, kam: Kamailio
) -> None:
    sb = await open_sip(tmp_path, kam)
    try:
        port = sb.channels["sip"].channel.ua.local_port
        for method, status in [("OPTIONS", 200), ("NOTIFY", 200), ("INFO", 481), ("PUBLISH", 501)]:
            answer = await asyncio.to_thread(_raw, port, _request(method, port))
            assert answer is not None, method
            reply = sipmsg.parse(answer)
            assert reply.status == status, (method, answer)
        options = sipmsg.parse(
            await asyncio.to_thread(_raw, port, _request("OPTIONS", port)) or b""
        )
        assert "INVITE" in (options.get("Allow") or "")
    finally:
        await sb.close()


MALFORMED = [
    b"\x00\x01garbage that is not SIP at all\r\n\r\n",
    b"INVITE\r\n\r\n",  # pyVoIP: IndexError on the request line (#175)
    b"INVITE sip:x@y SIP/2.0\r\nVia SIP/2.0/UDP 1.2.3.4\r\n\r\n",  # header without colon
    b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKm;rport\r\n"
    b'From: "sipvicious"<sip:100@1.1.1.1>;tag=1\r\nTo: "sipvicious"<sip:100@1.1.1.1>\r\n'
    b"Call-ID: 1\r\nCSeq: one OPTIONS\r\n\r\n",  # bad CSeq (#154, #301-like)
    b"MESSAGE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKm;rport\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: 2\r\nCSeq: 1 MESSAGE\r\n"
    b"Content-Length: 500\r\n\r\nshort",  # truncated body
    b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKm;rport\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: 3\r\nCSeq: 1 OPTIONS\r\n"
    + b"X-Pad: "
    + b"A" * 40_000
    + b"\r\n\r\n",  # oversized
]


async def test_malformed_datagrams_mid_call_are_refused_and_the_call_goes_on(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    sb = await open_sip(tmp_path, kam, max_message_size=16_384)
    try:
        ua = sb.channels["sip"].channel.ua
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=100)
        kam.route("101", alice.port)
        kam.route("102", 9)
        caller = Sipp(tmp_path / "sipp", "caller", caller_scenario(CALLER, talk_ms=4000))
        run = asyncio.ensure_future(caller.run(f"127.0.0.1:{kam.port}", "-s", kam.user, "-m", "1"))
        await until(
            lambda: any(c.status is InteractionStatus.ANSWERED for c in sb.store.list_calls())
        )
        answers = []
        for datagram in MALFORMED:
            answers.append(await asyncio.to_thread(_raw, ua.local_port, datagram, 0.5))
        result = await run
        assert result.ok, result.errors
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.recording is not None and record.recording.duration > 3.5
        assert ua.malformed == len(MALFORMED)
        # answered 400 where the datagram held enough to address an answer, else dropped
        assert answers[0] is None and answers[1] is None
        assert answers[3] is not None and answers[3].startswith(b"SIP/2.0 400")
        assert answers[4] is not None and answers[4].startswith(b"SIP/2.0 400")
        assert answers[5] is not None and answers[5].startswith(b"SIP/2.0 513")
        # the phone still works: a second call after the garbage
        assert (await alice.wait(10)).ok
    finally:
        await sb.close()


async def test_a_90_second_call_does_not_drop(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    """pyVoIP 1.6.8 drops calls after 30 s (#272). (SIPp's phones stop sending RTP when
    their recording has played, after 8 s: the RTP timeout is off here.)"""
    sb = await open_sip(tmp_path, kam, rtp_timeout=0)
    try:
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=100)
        kam.route("101", alice.port)
        kam.route("102", 9)
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=90_000), timeout=130)
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.hangup_cause == "customer hung up"
        assert record.recording is not None and 89.5 < record.recording.duration < 93
    finally:
        await sb.close()


@pytest.mark.parametrize(
    ("limits", "cause"),
    [
        ({"rtp_timeout": 1.5}, "no RTP for 1.5 s"),
        ({"rtp_timeout": 0, "max_call_seconds": 2}, "longer than max_call_seconds (2 s)"),
    ],
)
async def test_a_call_without_end_is_ended(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp], limits: dict[str, float], cause: str
) -> None:
    """Found by an outside review: a far end that vanished without a BYE kept a bridged
    call, and its recording, growing forever. Here neither phone sends RTP (or the call
    lasts too long), nobody hangs up, and the service ends the call with the reason."""
    sb = await open_sip(tmp_path, kam, **limits)
    try:
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=100, audio=False)
        kam.route("101", alice.port)
        kam.route("102", 9)
        # the caller sends no audio and waits for our BYE
        await place_call(
            tmp_path, kam, caller_scenario(CALLER, audio=False, hangup="callee"), timeout=30
        )
        record = await until(lambda: ended_call(sb), within=15)
        assert record.disposition is Disposition.ANSWERED
        assert record.hangup_cause == cause
        assert record.recording is not None and record.recording.duration < 4
        assert (await alice.wait(10)).ok  # the agent's phone got its BYE too
    finally:
        await sb.close()


async def test_stop_releases_every_socket_and_restarts_on_the_same_port(
    tmp_path: Path, kam: Kamailio
) -> None:
    """pyVoIP's stop() can hang and leave the port bound (#229)."""
    sb = await open_sip(tmp_path, kam)
    try:
        channel = sb.channels["sip"].channel
        port = channel.ua.local_port
        tasks_before = len(asyncio.all_tasks())
        for _ in range(3):
            await channel.stop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port))  # free again
            assert await sb.start_channel("sip")
            assert channel.ua.local_port == port and channel.ua.registered.is_set()
        assert len(asyncio.all_tasks()) <= tasks_before
    finally:
        await sb.close()


async def test_wrong_password_shows_as_a_failing_channel(tmp_path: Path, kam: Kamailio) -> None:
    sb = await open_sip(tmp_path, kam, password="wrong")
    try:
        handle = sb.channels["sip"]
        assert handle.state is ChannelState.FAILING
        # the code once, then the reason and the hint (once read "401 401 Unauthorized")
        assert handle.last_error == (
            "RegistrationError: 401 Unauthorized: wrong username or password?"
        )
    finally:
        await sb.close()


async def test_the_domain_defaults_to_the_servers_host_and_port(
    tmp_path: Path, kam: Kamailio
) -> None:
    """A registrar on a port other than 5060 takes an AOR without the port for another
    domain's (Kamailio: 403 Not relaying): the default domain is host:port."""
    sb = await open_sip(tmp_path, kam)
    try:
        ua = sb.channels["sip"].channel.ua
        assert ua.aor == f"sip:{kam.user}@127.0.0.1:{kam.port}"
        assert sb.channels["sip"].state is ChannelState.RUNNING
    finally:
        await sb.close()
    sb = await open_sip(tmp_path / "wrong", kam, domain="127.0.0.1")
    try:
        handle = sb.channels["sip"]
        assert handle.state is ChannelState.FAILING
        assert handle.last_error == (
            "RegistrationError: 403 Not relaying: check username, password and domain "
            f"(registering sip:{kam.user}@127.0.0.1)"
        )
    finally:
        await sb.close()


async def test_registrar_down_at_start_then_up_recovers_by_itself(tmp_path: Path) -> None:
    k = Kamailio(tmp_path / "kamailio")  # port chosen, not started yet
    sb = await open_switchboard(
        tmp_path,
        sip_plugin(),
        config={"switchboard": {"agents": AGENTS}, "plugins": {"sip": sip_settings(k)}},
        start=False,
    )
    try:
        await sb.supervise_channels(backoff_initial=0.2, backoff_max=1.0)
        handle = sb.channels["sip"]
        await until(lambda: handle.state is ChannelState.FAILING and handle.last_error, within=15)
        assert "REGISTER" in (handle.last_error or "")
        k.start()
        try:
            await until(lambda: handle.state is ChannelState.RUNNING, within=30)
            assert "switchboard" in k.registered()
        finally:
            k.stop()
    finally:
        await sb.close()


def test_audioop_comes_from_audioop_lts_on_python_3_13() -> None:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert "audioop-lts" in text and "python_version >= '3.13'" in text
    if sys.version_info >= (3, 13):  # pragma: no cover - depends on the interpreter
        subprocess.run([sys.executable, "-c", "import audioop"], check=True)
