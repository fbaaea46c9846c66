"""SIPVicious against the SIP port (issue #15): svmap, svwar and svcrack from a host that is
neither the registrar nor trusted while a customer calls through the registrar. The call
goes on, the scan leaves no contact, call or message, and the log has one line for the
scanning host, not one per packet. The registrar plays another host (127.0.0.3): svwar
and svcrack of Debian's sipvicious 0.3.3 ignore their binding option (``-b``) and send
from 127.0.0.1, which is then the untrusted outsider."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sip_peers import CALLER, answering_phone, ended_call, open_sip, place_call, until

from switchboard import Disposition
from switchboard.store import contact_t, interaction_t
from switchboard.testing import missing_tool
from switchboard_sip.testing import Kamailio, Sipp, caller_scenario

SCANNER = "127.0.0.1"
REGISTRAR = "127.0.0.3"


async def scan(tool: str, *args: str, stop_after: float | None = None) -> str:
    """Run one SIPVicious tool to its end (or stop it after ``stop_after`` seconds: svcrack
    sends REGISTERs for as long as it is answered 403); its output."""
    program = shutil.which(tool)
    if program is None:
        missing_tool(f"needs {tool} (Debian package sipvicious; make test installs it)")
    assert program is not None
    proc = await asyncio.create_subprocess_exec(
        program,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), stop_after or 60)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        assert stop_after is not None, f"{tool} did not finish: {out.decode()[-2000:]}"
        return out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


@pytest.fixture
def remote_kam(tmp_path: Path) -> Iterator[Kamailio]:
    k = Kamailio(tmp_path / "kamailio-remote", host=REGISTRAR).start()
    try:
        yield k
    finally:
        k.stop()


async def test_sipvicious_scans_leave_nothing_and_calls_go_on(
    tmp_path: Path, remote_kam: Kamailio, phones: list[Sipp], caplog: pytest.LogCaptureFixture
) -> None:
    kam = remote_kam
    sb = await open_sip(tmp_path, kam)
    try:
        ua = sb.channels["sip"].channel.ua  # type: ignore[attr-defined]
        port = str(ua.local_port)
        alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=200)
        kam.route("101", alice.port)
        kam.route("102", 9)
        common = ("-p", port, "-t", "0.05")
        call = asyncio.ensure_future(
            place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=4000), timeout=60)
        )
        found = await scan("svmap", *common, "-m", "INVITE", "127.0.0.1")
        await scan("svwar", *common, "-m", "INVITE", "-e", "100-160", "127.0.0.1")
        await scan("svcrack", *common, "-u", "101", "-r", "1000-9999", "127.0.0.1", stop_after=5)
        await call  # the customer's call was answered and ran to its end meanwhile
        record = await until(lambda: ended_call(sb))
        assert record.disposition is Disposition.ANSWERED
        assert record.hangup_cause == "customer hung up"

        # svmap saw a SIP device (it answered 403), the scans left no state
        assert port in found
        assert sb.store.count(contact_t) == 1  # the caller's, nobody else's
        assert sb.store.count(interaction_t) == 1  # the call
        assert set(ua.refused) == {SCANNER} and ua.refused[SCANNER] >= 50  # the scans got here
        assert caplog.text.count(f"refusing SIP requests from {SCANNER}") == 1

        # and a call after the scans works as well
        alice2 = await answering_phone(phones, tmp_path, "alice2", answer_after_ms=200)
        kam.route("101", alice2.port)
        await place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=500), timeout=40)
        await until(lambda: len([c for c in sb.store.list_calls() if c.ended_at]) == 2)
    finally:
        await sb.close()
