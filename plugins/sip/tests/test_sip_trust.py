"""Requests from anyone on the SIP port (found by an outside review): only the registrar
and the configured trusted networks may ring agents or leave messages; others get 403 and
leave no state. 127.0.0.2 plays a host on another network (loopback, no traffic leaves)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sip_peers import CALLER, answering_phone, ended_call, open_sip, place_call, until

from switchboard.store import contact_t, interaction_t
from switchboard_sip.testing import Kamailio, Sipp, caller_scenario, message_sender_scenario

DIRECT_INVITE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="direct-invite">
  <send retrans="500">
    <![CDATA[
      INVITE sip:101@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:12025550199@[local_ip]:[local_port]>;tag=[pid]D[call_number]
      To: <sip:101@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:12025550199@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="{status}"/>
  <send>
    <![CDATA[
      ACK sip:101@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:12025550199@[local_ip]:[local_port]>;tag=[pid]D[call_number]
      To: <sip:101@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
</scenario>
"""


async def test_requests_from_outside_the_trusted_networks_are_refused(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp], caplog: pytest.LogCaptureFixture
) -> None:
    sb = await open_sip(tmp_path, kam)
    try:
        port = sb.channels["sip"].channel.settings.local_port  # type: ignore[attr-defined]
        target = f"127.0.0.1:{port}"
        for i in range(3):  # an INVITE flood from one source: one log line, no state
            scan = Sipp(
                tmp_path / "sipp", f"scan{i}", DIRECT_INVITE.format(status=403), "127.0.0.2"
            )
            assert (await scan.run(target, "-m", "1")).ok
        forged = Sipp(
            tmp_path / "sipp",
            "forged-message",
            message_sender_scenario("12025550199", "fake text", response=403),
            "127.0.0.2",
        )
        assert (await forged.run(target, "-s", "101", "-m", "1")).ok
        assert sb.store.count(contact_t) == 0 and sb.store.count(interaction_t) == 0
        ua = sb.channels["sip"].channel.ua  # type: ignore[attr-defined]
        assert ua.refused == {"127.0.0.2": 7}  # 3 INVITEs, their 3 ACKs, 1 MESSAGE
        assert ua.transactions.sent_final == {} and ua.legs == {}
        assert caplog.text.count("refusing SIP requests from 127.0.0.2") == 1

        # a call through the registrar still works
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=200)
        kam.route("101", alice.port)
        kam.route("102", 9)
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=1000), timeout=40)
        record = await until(lambda: ended_call(sb))
        assert record.agent_id == sb.store.get_agent("alice").id
    finally:
        await sb.close()


async def test_a_trusted_network_may_send_requests(tmp_path: Path, kam: Kamailio) -> None:
    sb = await open_sip(tmp_path, kam, trusted_networks=["127.0.0.2/32"])
    try:
        port = sb.channels["sip"].channel.settings.local_port  # type: ignore[attr-defined]
        sender = Sipp(
            tmp_path / "sipp",
            "trusted",
            message_sender_scenario("12025550199", "hello"),
            "127.0.0.2",
        )
        assert (await sender.run(f"127.0.0.1:{port}", "-s", "101", "-m", "1")).ok
        await until(lambda: sb.store.count(interaction_t) == 1)
    finally:
        await sb.close()


async def test_calls_beyond_max_calls_get_503(tmp_path: Path, kam: Kamailio) -> None:
    sb = await open_sip(tmp_path, kam, max_calls=0, trusted_networks=["127.0.0.2/32"])
    try:
        port = sb.channels["sip"].channel.settings.local_port  # type: ignore[attr-defined]
        busy = Sipp(tmp_path / "sipp", "busy", DIRECT_INVITE.format(status=503), "127.0.0.2")
        assert (await busy.run(f"127.0.0.1:{port}", "-m", "1")).ok
        ua = sb.channels["sip"].channel.ua  # type: ignore[attr-defined]
        assert ua.transactions.sent_final == {} and ua.legs == {}
        assert sb.store.count(interaction_t) == 0
    finally:
        await sb.close()


async def test_a_trunk_that_is_not_the_registrar_gets_its_answers(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    """Found with a stock Kamailio and real phones: for an INVITE that did not come from
    the registrar, 180/200 went to the registrar instead of the sender (RFC 3261 18.2.2:
    responses follow the top Via), so the caller never heard the answer."""
    sb = await open_sip(tmp_path, kam, trusted_networks=["127.0.0.2/32"])
    try:
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=200)
        kam.route("101", alice.port)
        kam.route("102", 9)
        port = sb.channels["sip"].channel.settings.local_port  # type: ignore[attr-defined]
        trunk = Sipp(tmp_path / "sipp", "trunk", caller_scenario(CALLER, talk_ms=1000), "127.0.0.2")
        result = await trunk.run(f"127.0.0.1:{port}", "-s", kam.user, "-m", "1", timeout=40)
        assert result.ok, result.errors
        record = await until(lambda: ended_call(sb))
        assert record.agent_id == sb.store.get_agent("alice").id
        assert record.hangup_cause == "customer hung up"
    finally:
        await sb.close()
