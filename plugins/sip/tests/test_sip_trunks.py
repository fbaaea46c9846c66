"""A trunk that authenticates by address (no REGISTER), and keep-alives towards it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from sip_peers import CALLER, answering_phone, ended_call, open_sip, place_call, until

from switchboard import Disposition
from switchboard.channels import ChannelState
from switchboard.testing import LoopbackPlugin, open_switchboard
from switchboard_sip import SipChannel, SipSettings
from switchboard_sip.testing import Kamailio, Sipp, caller_scenario, free_udp_port, pcm_rms


async def test_a_trunk_without_registration_takes_and_places_calls(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    """``register = false``: nothing is registered at the trunk; it sends the calls for
    our number to our address (here Kamailio's static route), and we send ours to it."""
    sb = await open_sip(tmp_path, kam, register=False)
    try:
        assert sb.channels["sip"].state is ChannelState.RUNNING
        assert "switchboard" not in kam.registered()
        kam.route("switchboard", sb.channels["sip"].channel.ua.local_port)
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=200)
        kam.route("101", alice.port)
        kam.route("102", 9)
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=2500), timeout=40)
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.recording is not None
        assert pcm_rms(record.recording.path, 0) > 100
        assert pcm_rms(record.recording.path, 1) > 100
        assert (await alice.wait(10)).ok
    finally:
        await sb.close()


async def test_keepalives_go_to_the_server_at_the_interval(tmp_path: Path) -> None:
    """A CRLFCRLF datagram every ``keepalive`` seconds keeps a NAT binding open; a trunk
    without registration needs no registrar to start, so a bare socket plays the server."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.05)
        sb = await open_switchboard(
            tmp_path,
            LoopbackPlugin(SipChannel(), plugin_name="sip", settings=SipSettings),
            config={
                "plugins": {
                    "sip": {
                        "server": "127.0.0.1",
                        "port": server.getsockname()[1],
                        "username": "trunk",
                        "local_port": free_udp_port(),
                        "register": False,
                        "keepalive": 0.2,
                    }
                }
            },
        )
        try:
            got: list[bytes] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.1
            while loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    got.append(await asyncio.to_thread(server.recv, 100))
            assert got and set(got) == {b"\r\n\r\n"}
            assert 3 <= len(got) <= 6  # about 5 in 1.1 s
        finally:
            await sb.close()


async def test_a_second_trunk_takes_calls_in_and_carries_calls_out_by_prefix(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    """The main account is the PBX (agents' extensions); a provider (a second Kamailio)
    is a trunk: calls to +49 numbers go out through it showing its caller ID, calls to
    its account come in through it and ring the agents at the PBX. A third trunk whose
    password is wrong fails on its own, in /api/health, and nothing else."""
    provider = Kamailio(tmp_path / "provider", user="trunk1", password="p4ss").start()
    try:
        sb = await open_sip(
            tmp_path,
            kam,
            trunks=[
                {
                    "name": "provider",
                    "server": "127.0.0.1",
                    "port": provider.port,
                    "username": "trunk1",
                    "password": "p4ss",
                    "local_port": free_udp_port(),
                    "caller_id": "+12025550100",
                    "dial_format": "e164_digits",
                    "prefixes": ["+49"],
                },
                {
                    "name": "broken",
                    "server": "127.0.0.1",
                    "port": provider.port,
                    "username": "trunk1",
                    "password": "wrong",
                    "local_port": free_udp_port(),
                },
            ],
        )
        try:
            channel = sb.channels["sip"].channel
            await until(lambda: "provider" in channel.trunks, within=10)
            await until(lambda: sb.loops.loops["sip:trunk:broken"].last_error, within=10)
            assert sb.channels["sip"].state is ChannelState.RUNNING
            assert "401" in (sb.loops.loops["sip:trunk:broken"].last_error or "")
            assert sb.loops.loops["sip:trunk:provider"].state.value == "running"

            # out: alice at the PBX, the German customer through the provider
            alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=100)
            kam.route("101", alice.port)
            customer = await answering_phone(
                phones,
                tmp_path,
                "customer",
                answer_after_ms=200,
                hangup_after_ms=2000,
                expect_caller="+12025550100",
                expect_from="+12025550100",
            )
            provider.route("4930123456", customer.port)
            agent = sb.store.get_agent("alice")
            call_id = await channel.dial(agent, sb.addresses.parse("+49 30 123456"))
            record = await until(lambda: ended_call(sb), within=20)
            assert record.call_id == call_id
            assert record.disposition is Disposition.ANSWERED, record.hangup_cause
            assert (await customer.wait(10)).ok  # it saw the trunk's caller ID
            assert (await alice.wait(10)).ok

            # in: a caller dials the provider's account; alice at the PBX answers
            alice = await answering_phone(phones, tmp_path, "alice2", answer_after_ms=100)
            kam.route("101", alice.port)
            kam.route("102", 9)
            await place_call(tmp_path, provider, caller_scenario(CALLER, talk_ms=1500), timeout=30)
            inbound = await until(
                lambda: next(
                    (c for c in sb.store.list_calls() if c.ended_at and c.call_id != call_id),
                    None,
                ),
                within=20,
            )
            assert inbound.disposition is Disposition.ANSWERED
            assert inbound.from_address == f"phone:+{CALLER}"
        finally:
            await sb.close()
    finally:
        provider.stop()
