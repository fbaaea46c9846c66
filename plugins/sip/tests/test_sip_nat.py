"""Switchboard behind a real NAT: the service (``switchboard serve``) runs in a network
namespace whose only way out is a router namespace masquerading it (iptables); Kamailio and
the baresip phones are on the WAN side. Registration, an inbound call and click-to-call
must still have two-way audio.

SIP needs nothing from the router: Switchboard learns its public address and port from
the registrar's ``received``/``rport`` and keeps the binding open. The RTP range is
forwarded and named in ``public_ip``, as for any server behind NAT: baresip, like most
phones, sends its audio the moment it answers, to the address in our SDP, and does not
follow where ours comes from (symmetric RTP), so without forwarding its first packets
would take the router's port before ours and the NAT would move our stream elsewhere."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sip_peers import until

from switchboard_sip.testing import Baresip, Kamailio, NatNetwork, pcm_rms

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))
TOKEN = "nat-test-token-0123456789"
CUSTOMER = "12025550143"


@pytest.fixture
def nat() -> Iterator[NatNetwork]:
    network = NatNetwork().start()
    try:
        yield network
    finally:
        network.stop()


def api(nat: NatNetwork, port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    """A call to the service's HTTP API from inside its namespace."""
    script = (
        "import json, sys, urllib.request\n"
        f"req = urllib.request.Request('http://{nat.LAN_IP}:{port}{path}',"
        f" headers={{'Authorization': 'Bearer {TOKEN}', 'Content-Type': 'application/json'}},"
        f" data={json.dumps(json.dumps(body)) if body is not None else None}"
        f"{'.encode()' if body is not None else ''})\n"
        "print(urllib.request.urlopen(req, timeout=10).read().decode())\n"
    )
    out = subprocess.run(
        nat.command(sys.executable, "-c", script), capture_output=True, text=True, timeout=20
    )
    if out.returncode != 0:
        raise AssertionError(f"{path}: {out.stderr[-1500:]}")
    return json.loads(out.stdout)


def ended(nat: NatNetwork, port: int, n: int) -> list[dict[str, Any]] | None:
    calls = api(nat, port, "/api/calls")["items"]
    done = [c for c in calls if c["status"] == "ended" and c.get("recording")]
    return done if len(done) >= n else None


async def test_behind_nat_calls_have_audio_both_ways(tmp_path: Path, nat: NatNetwork) -> None:
    kam = Kamailio(tmp_path / "kamailio", host=nat.WAN_IP).start()
    phones: list[Baresip] = []
    service: subprocess.Popen[bytes] | None = None
    try:
        for user, freq in (("101", 440), (CUSTOMER, 880)):
            phone = Baresip(tmp_path / f"baresip-{user}", kam, user, freq=freq, host=nat.WAN_IP)
            phones.append(phone.start())
        alice, customer = phones
        await until(lambda: alice.registered() and customer.registered(), within=10)
        port = 18080 + os.getpid() % 1000
        rtp = 31000 + (os.getpid() % 400) * 40
        nat.forward_udp(rtp, rtp + 39)
        (tmp_path / "switchboard.toml").write_text(
            f"""
[switchboard]
database_url = "sqlite:///{tmp_path}/sb.db"
recordings_dir = "{tmp_path}/recordings"
default_region = "US"
[[switchboard.agents]]
name = "alice"
extension = "101"
[[switchboard.tokens]]
token = "{TOKEN}"
role = "admin"
name = "test"
[plugins.sip]
server = "{nat.WAN_IP}"
port = {kam.port}
username = "{kam.user}"
password = "{kam.password}"
local_ip = "{nat.LAN_IP}"
local_port = 5060
public_ip = "{nat.PUBLIC_IP}"
rtp_port_low = {rtp}
rtp_port_high = {rtp + 38}
dial_format = "e164_digits"
expires = 60
"""
        )
        with (tmp_path / "service.log").open("wb") as log:
            service = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
                nat.command(
                    SWITCHBOARD,
                    "serve",
                    "--config",
                    str(tmp_path / "switchboard.toml"),
                    "--host",
                    nat.LAN_IP,
                    "--port",
                    str(port),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # registered with the address the registrar sees (the router's), not the LAN's
        await until(lambda: f"sip:switchboard@{nat.PUBLIC_IP}" in kam.registered(), within=20)
        assert f"Address: sip:switchboard@{nat.LAN_IP}" not in kam.registered()  # dropped

        # inbound: the customer on the WAN calls; alice (WAN) answers
        customer.command("dial", f"sip:switchboard@{nat.WAN_IP}:{kam.port}")
        await asyncio.sleep(5)
        customer.command("hangup")
        calls = await until(lambda: ended(nat, port, 1), within=20)
        inbound = calls[0]
        assert inbound["direction"] == "inbound" and inbound["disposition"] == "answered"

        # click-to-call through the API
        answer = api(nat, port, "/api/calls", {"agent": "alice", "to": f"+{CUSTOMER}"})
        assert answer.get("status") == "ringing", answer
        await asyncio.sleep(6)
        customer.command("hangup")
        calls = await until(lambda: ended(nat, port, 2), within=20)
        outbound = calls[0]
        assert outbound["direction"] == "outbound" and outbound["disposition"] == "answered"

        recordings = sorted((tmp_path / "recordings").rglob("*.wav"))
        assert len(recordings) == 2
        for path in recordings:
            assert pcm_rms(path, 0) > 500, path  # the customer, through the NAT
            assert pcm_rms(path, 1) > 500, path  # alice, through the NAT
        for phone in phones:
            for wav in phone.recordings("dec"):
                assert pcm_rms(wav, 0) > 500, wav  # each phone heard the other both times
    finally:
        if service is not None:
            service.terminate()
            service.wait(15)
        for phone in phones:
            phone.stop()
        kam.stop()
