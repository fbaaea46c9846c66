"""SIP over UDP, TCP and TLS against real software: Kamailio (its TLS module, certificates
made by the test) as registrar and proxy, baresip as the agents' and customers' phones."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sip_peers import baresip, ended_call, heard, open_sip, until

from switchboard import Direction, Disposition, Switchboard
from switchboard.channels import ChannelState
from switchboard_sip.testing import Baresip, Kamailio, pcm_rms

CUSTOMER = "12025550143"


def over(kam: Kamailio, transport: str) -> dict[str, Any]:
    """Settings that reach ``kam`` over ``transport`` (TLS checked against its CA)."""
    if transport == "tls":
        return {"transport": "tls", "port": kam.tls_port, "tls_ca_file": str(kam.ca_file)}
    return {"transport": transport}


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls", "sips"])
async def test_registers_over_the_transport(
    tmp_path: Path, kam_tls: Kamailio, transport: str
) -> None:
    """And with ``sips = true`` (TLS, sips: URIs in the AOR, Contact and requests)."""
    settings = over(kam_tls, "tls") | {"sips": True} if transport == "sips" else {}
    sb = await open_sip(tmp_path, kam_tls, **(settings or over(kam_tls, transport)))
    try:
        assert sb.channels["sip"].state is ChannelState.RUNNING, sb.channels["sip"].last_error
        contacts = kam_tls.registered()
        ua = sb.channels["sip"].channel.ua
        if transport == "sips":
            assert ua.aor.startswith("sips:switchboard@") and ua.contact.startswith("<sips:")
            assert "Address: sips:switchboard@127.0.0.1" in contacts
            return
        assert "sip:switchboard@127.0.0.1" in contacts
        if transport != "udp":
            assert f"transport={transport}" in contacts
        assert ua.transport.name == transport.upper()
    finally:
        await sb.close()


async def test_a_tls_server_whose_certificate_is_not_trusted_is_refused_with_the_reason(
    tmp_path: Path, kam_tls: Kamailio
) -> None:
    """Certificate checks are on by default: Kamailio's test CA is not the system's."""
    sb = await open_sip(tmp_path, kam_tls, transport="tls", port=kam_tls.tls_port)
    try:
        state = sb.channels["sip"]
        assert state.state is ChannelState.FAILING
        assert "TLS handshake with 127.0.0.1" in (state.last_error or "")
        assert "certificate verify failed" in (state.last_error or "")
        assert "switchboard" not in kam_tls.registered()
    finally:
        await sb.close()


async def _bridged(sb: Switchboard, within: float = 15) -> Any:
    return await until(lambda: sb.channels["sip"].channel.sessions, within=within)


@pytest.mark.parametrize(
    ("transport", "srtp"),
    [("udp", False), ("tcp", False), ("tls", False), ("udp", True), ("tcp", True), ("tls", True)],
    ids=["udp", "tcp", "tls", "udp-srtp", "tcp-srtp", "tls-srtp"],
)
async def test_baresip_calls_in_and_is_called_out_with_audio_both_ways(
    tmp_path: Path, kam_tls: Kamailio, softphones: list[Baresip], transport: str, srtp: bool
) -> None:
    """An inbound call from a baresip customer to a baresip agent, then click-to-call
    from that agent to that customer, every hop over ``transport``: each call is recorded
    with both sides audible, and each phone heard the other. With ``srtp`` both phones
    take only SRTP (``mediaenc=srtp-mand``) and so does Switchboard (``srtp =
    "require"``): the audio is heard only if every leg was encrypted and decrypted."""
    sb = await open_sip(
        tmp_path,
        kam_tls,
        ring_agents=["alice"],
        dial_format="e164_digits",  # the customer phone registered as 1202...
        srtp="require" if srtp else "off",
        **over(kam_tls, transport),
    )
    try:
        assert sb.channels["sip"].state is ChannelState.RUNNING, sb.channels["sip"].last_error
        alice = await baresip(softphones, tmp_path, kam_tls, "101", transport, srtp=srtp, freq=440)
        customer = await baresip(
            softphones, tmp_path, kam_tls, CUSTOMER, transport, srtp=srtp, freq=880
        )
        port = kam_tls.tls_port if transport == "tls" else kam_tls.port
        params = f";transport={transport}" if transport != "udp" else ""

        # inbound: the customer dials Switchboard's account
        customer.command("dial", f"sip:switchboard@127.0.0.1:{port}{params}")
        await until(
            lambda: any(c.agent_id for c in sb.store.list_calls()), within=20
        )  # an agent answered
        await asyncio.sleep(3)
        customer.command("hangup")
        record = await until(lambda: ended_call(sb), within=15)
        assert record.direction is Direction.INBOUND
        assert record.disposition is Disposition.ANSWERED
        assert record.from_address == f"phone:+{CUSTOMER}"
        assert record.recording is not None and record.recording.duration > 2
        assert pcm_rms(record.recording.path, 0) > 500  # the customer's tone
        assert pcm_rms(record.recording.path, 1) > 500  # the agent's tone
        assert heard(alice) > 500 and heard(customer) > 500

        # click-to-call: alice's phone first, then the customer's
        channel = sb.channels["sip"].channel
        agent = sb.store.get_agent("alice")
        call_id = await channel.dial(agent, sb.addresses.parse(f"+{CUSTOMER}"))
        await until(
            lambda: any(c.call_id == call_id and c.answered_at for c in sb.store.list_calls()),
            within=20,
        )
        await asyncio.sleep(3)
        customer.command("hangup")
        record = await until(
            lambda: next(
                (c for c in sb.store.list_calls() if c.call_id == call_id and c.ended_at), None
            ),
            within=15,
        )
        assert record.direction is Direction.OUTBOUND
        assert record.disposition is Disposition.ANSWERED
        assert record.recording is not None and record.recording.duration > 2
        assert pcm_rms(record.recording.path, 0) > 500
        assert pcm_rms(record.recording.path, 1) > 500
        assert len(alice.recordings("dec")) == 2 and heard(alice) > 500
        assert heard(customer) > 500
    finally:
        await sb.close()
