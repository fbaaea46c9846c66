"""Real SIP peers for tests and benchmarks: Kamailio (registrar and proxy) and SIPp.

``Kamailio`` runs the packaged config (``switchboard_sip/kamailio/kamailio.cfg``) on a
loopback port in the foreground; ``Sipp`` writes a scenario and runs ``sipp`` against it.
Both need the Debian packages: ``apt-get install kamailio sip-tester``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

if TYPE_CHECKING:
    import trustme

from switchboard.testing import free_port, missing_tool
from switchboard_sip._compat import audioop

PCAP_DIR = Path("/usr/share/sip-tester")
KAMAILIO_TLS = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so")
INSTALL = "scripts/system-deps (apt-get install kamailio sip-tester)"


def test_ca() -> trustme.CA:
    """A certificate authority for tests (``trustme``): issues certificates for loopback
    servers and phones."""
    import trustme  # a test dependency, not the plugin's

    return trustme.CA()


def missing_tools() -> list[str]:
    """The programs the SIP tests need that this machine lacks."""
    tools = [t for t in ("kamailio", "kamcmd", "sipp") if shutil.which(t) is None]
    if not (PCAP_DIR / "g711a.pcap").exists():
        tools.append(str(PCAP_DIR / "g711a.pcap"))
    return tools


def need_sip_tools() -> None:
    """Skip a test (fail it under ``CI=true``) when Kamailio or SIPp is missing; every
    :class:`Kamailio` and :class:`Sipp` checks this when made."""
    missing = missing_tools()
    if missing:
        missing_tool(f"needs {', '.join(missing)}: {INSTALL}")


def free_udp_port() -> int:
    """A UDP port free now (and its TCP twin, which free_port checks)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def free_media_ports() -> int:
    """An even port P with P..P+3 free (SIPp binds audio and video RTP/RTCP there)."""
    while True:
        base = free_udp_port() & ~1
        socks = []
        try:
            for p in range(base, base + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base


class Kamailio:
    """Kamailio on ``host:port`` (127.0.0.1 unless told) with our config; ``user``/``password`` is the account
    Switchboard registers with."""

    def __init__(
        self,
        folder: Path,
        user: str = "switchboard",
        password: str = "s3cret",
        record_route: bool = True,
        host: str = "127.0.0.1",
        tls: bool = False,
        domain: str | None = None,
    ) -> None:
        need_sip_tools()
        self.domain = domain  # a SIP domain it serves too (its certificate names it)
        if tls and not KAMAILIO_TLS.exists():
            missing_tool(f"needs {KAMAILIO_TLS}: scripts/system-deps (kamailio-tls-modules)")
        self.tls = tls
        self.tls_port = free_port() if tls else 0
        self.tls_cfg = folder / "tls.cfg"
        self.ca_file = folder / "ca.pem"  # the CA that signed Kamailio's certificate
        self.ca: trustme.CA | None = None
        self.folder = folder
        self.host = host  # another loopback address plays a registrar on another host
        self.record_route = record_route
        self.user = user
        self.password = password
        self.port = free_udp_port()
        self.ctl = folder / "kamailio.ctl"
        self.log = folder / "kamailio.log"
        self.process: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        template = resources.files("switchboard_sip").joinpath("kamailio/kamailio.cfg").read_text()
        values = {
            "{LISTEN}": self.host,
            "{PORT}": str(self.port),
            "{TLS_PORT}": str(self.tls_port),
            "{TLS_CFG}": str(self.tls_cfg),
            "{ALIASES}": f'alias="{self.domain}"' if self.domain else "",
            "{CTL}": str(self.ctl),
            "{USER}": self.user,
            "{PASSWORD}": self.password,
        }
        for key, value in values.items():
            template = template.replace(key, value)
        return template

    def start(self) -> Kamailio:
        self.folder.mkdir(parents=True, exist_ok=True)
        cfg = self.folder / "kamailio.cfg"
        cfg.write_text(self.config_text())
        if self.tls:
            self._certificates()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    "kamailio",
                    "-f",
                    str(cfg),
                    "-DD",
                    "-E",
                    "-m",
                    "64",
                    "-M",
                    "8",
                    "-Y",
                    str(self.folder),
                    *([] if self.record_route else ["-A", "NO_RECORD_ROUTE"]),
                    *(["-A", "WITH_TLS"] if self.tls else []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"kamailio exited: {self.log.read_text()[-2000:]}")
            if self.ctl.exists() and self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"kamailio did not start: {self.log.read_text()[-2000:]}")

    def _certificates(self) -> None:
        """A CA of its own (``ca_file``: what a client must trust) and a certificate for
        ``localhost`` and the listening address, signed by it; the tls module's file."""
        ca = self.ca = test_ca()
        cert = ca.issue_cert("localhost", self.host, *([self.domain] if self.domain else []))
        key_file, cert_file = self.folder / "kamailio-key.pem", self.folder / "kamailio-cert.pem"
        cert.private_key_pem.write_to_path(str(key_file))
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.tls_cfg.write_text(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            f"require_certificate = no\nprivate_key = {key_file}\ncertificate = {cert_file}\n"
            "\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            "require_certificate = no\n"
        )

    def _answers(self) -> bool:
        probe = (
            f"OPTIONS sip:{self.host}:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe{time.monotonic_ns()};rport\r\n"
            "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: probe{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.bind(("127.0.0.1", 0))
            s.sendto(probe, (self.host, self.port))
            try:
                return s.recv(4096).startswith(b"SIP/2.0")
            except OSError:
                return False

    def kamcmd(self, *args: str) -> str:
        out = subprocess.run(
            ["kamcmd", "-s", f"unix:{self.ctl}", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode != 0 or out.stdout.startswith("error"):
            raise RuntimeError(f"kamcmd {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    def route(self, user: str, port: int, host: str = "127.0.0.1") -> None:
        """Send requests for ``user`` (an extension or a number) to ``host:port``."""
        self.kamcmd("htable.sets", "static", f"s:{user}", f"s:sip:{host}:{port}")

    def refuse_next(self, user: str) -> None:
        """Make the proxy answer the next request for ``user`` with 403, once."""
        self.kamcmd("htable.sets", "refuse", f"s:{user}", "s:1")

    def unroute(self, user: str) -> None:
        self.kamcmd("htable.delete", "static", f"s:{user}")

    def registered(self) -> str:
        return self.kamcmd("ul.dump")

    def stop(self) -> None:
        """Stop Kamailio and every process it forked (its own process group: a worker
        that outlives the main process would keep the port and the CPU)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.process = None


# -- SIPp scenarios -------------------------------------------------------------------------

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n'
_SDP = """
      v=0
      o=sipp 1 1 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
"""
_SDP_BODY = "      Content-Type: application/sdp\n      Content-Length: [len]\n" + _SDP


# The INVITE's branch, spelled out so that its CANCEL and the ACK of a non-2xx answer
# (same transaction, RFC 3261 9.1 and 17.1.1.3) can repeat it.
INVITE_BRANCH = "z9hG4bK-inv-[pid]-[call_number]"


def _invite(caller: str, *, sdp: bool = True, headers: str = "") -> str:
    body = headers + _SDP_BODY
    if not sdp:  # a delayed offer: the 200 will offer, our ACK answers
        body = headers + "      Content-Length: 0\n"
    return f"""  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={INVITE_BRANCH}
      From: "Caller {caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
{body}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180"/>
"""


def _in_dialog(method: str, cseq: int, caller: str, *, sdp: bool = False) -> str:
    body = "      Content-Length: 0\n"
    if sdp:
        body = _SDP_BODY
    return f"""  <send{' retrans="500"' if method != "ACK" else ""}>
    <![CDATA[
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "Caller {caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      Max-Forwards: 70
{body}
    ]]>
  </send>
"""


def _play(pcap: str) -> str:
    return f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'


def _pause(ms: int) -> str:
    return f'  <pause milliseconds="{ms}"/>\n' if ms > 0 else ""


def _digits(digits: str, gap_ms: int) -> str:
    names = {"*": "star", "#": "pound"}
    out = ""
    for i, d in enumerate(digits):
        if i:
            out += _pause(gap_ms)
        out += _play(str(PCAP_DIR / f"dtmf_2833_{names.get(d, d)}.pcap"))
    return out


def caller_scenario(
    caller: str = "15551230001",
    *,
    talk_ms: int = 3000,
    digits: str = "",
    digit_delay_ms: int = 500,
    digit_gap_ms: int = 700,
    audio: bool = True,
    hangup: str = "caller",
    delayed_offer: bool = False,
    answer_in_ack: bool = True,
    session_expires: str = "",
    expect_reinvites: int = 0,
    stream: str | os.PathLike[str] | None = None,
) -> str:
    """A caller who gets answered: plays G.711 audio (``stream``: that A-law file, see
    :func:`write_alaw`, over and over until the call ends; else the packaged capture, about
    7 s), and RFC 2833 ``digits`` after
    ``digit_delay_ms``), then hangs up after ``talk_ms`` (``hangup="caller"``) or waits
    for our BYE (``hangup="callee"``). With ``delayed_offer`` the INVITE has no SDP: the
    200 must carry an offer (the scenario fails without one) and the ACK answers it
    (unless ``answer_in_ack`` is false: a broken caller). ``session_expires`` (say
    ``"90;refresher=uas"``) asks for an RFC 4028 session timer; the caller then answers
    ``expect_reinvites`` re-INVITEs (our refreshes) before it hangs up."""
    timer = ""
    if session_expires:
        timer = f"      Supported: timer\n      Session-Expires: {session_expires}\n"
    body = _HEAD.format(name="caller") + _invite(caller, sdp=not delayed_offer, headers=timer)
    check = ""
    if delayed_offer:
        check = (
            "\n    <action>\n"
            '      <ereg regexp="m=audio [0-9]+ RTP/AVP" search_in="body" check_it="true"'
            ' assign_to="offer"/>\n    </action>\n  </recv>\n'
            '  <Reference variables="offer"/>\n'
        )
    recv_200 = '  <recv response="200" rrs="true" rtd="true"/>\n'
    if check:
        recv_200 = recv_200.replace("/>\n", ">") + check
    body += recv_200 + _in_dialog("ACK", 1, caller, sdp=delayed_offer and answer_in_ack)
    if stream is not None:
        body += f'  <nop><action><exec rtp_stream="{stream},-1,8"/></action></nop>\n'
    elif audio:
        body += _play(str(PCAP_DIR / "g711a.pcap"))
    if digits:
        body += _pause(digit_delay_ms) + _digits(digits, digit_gap_ms)
    for _ in range(expect_reinvites):  # our refreshes, answered with the timer echoed
        reply = _reply(200, "OK", sdp=True, tag=False)
        reply = reply.replace("[last_CSeq:]\n", "[last_CSeq:]\n      [last_Session-Expires:]\n")
        body += '  <recv request="INVITE"/>\n' + reply + '  <recv request="ACK"/>\n'
    if hangup == "caller":
        body += _pause(talk_ms) + _in_dialog("BYE", 2, caller)
        body += '  <recv response="200" crlf="true"/>\n'
    else:
        body += """  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""
    return body + _rtd_end()


def unanswered_caller_scenario(
    caller: str = "15551230001", *, expect: int = 480, cancel_after_ms: int | None = None
) -> str:
    """A caller who is never answered: gets ``expect`` (480, 486...), or gives up and
    CANCELs after ``cancel_after_ms`` (then expects 487)."""
    body = _HEAD.format(name="unanswered") + _invite(caller)
    if cancel_after_ms is not None:
        body += _pause(cancel_after_ms)
        body += f"""  <send>
    <![CDATA[
      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={INVITE_BRANCH}
      From: "Caller {caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" optional="true" next="1"/>
  <recv response="487"/>
  <recv response="200"/>
  <nop next="2"/>
  <label id="1"/>
"""
        expect = 487
    body += f'  <recv response="{expect}"/>\n'
    if cancel_after_ms is not None:
        body += '  <label id="2"/>\n'
    body += f"""  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={INVITE_BRANCH}
      From: "Caller {caller}" <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""
    return body + "</scenario>\n"


def _rtd_end() -> str:
    return '  <timewait milliseconds="500"/>\n</scenario>\n'


_REPLY = """  <send{retrans}>
    <![CDATA[
      SIP/2.0 {code} {reason}
      [last_Via:]
      [last_From:]
      [last_To:]{tag}
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port]>
{extra}    ]]>
  </send>
"""


def _reply(
    code: int, reason: str, *, sdp: bool = False, tag: bool = True, retrans: bool = False
) -> str:
    extra = "      Content-Length: 0\n"
    if sdp:
        extra = _SDP_BODY
    return _REPLY.format(
        code=code,
        reason=reason,
        tag=";tag=[pid]A[call_number]" if tag else "",
        extra=extra,
        retrans=' retrans="500"' if retrans else "",
    )


def agent_scenario(
    *,
    answer_after_ms: int = 500,
    audio: bool = True,
    hangup_after_ms: int | None = None,
    expect_caller: str | None = None,
    expect_from: str | None = None,
    early_media: bool = False,
    expect_replaces: str | None = None,
) -> str:
    """An agent's phone: rings, answers after ``answer_after_ms``, plays G.711 audio, and
    either waits for our BYE or hangs up itself after ``hangup_after_ms``. The scenario
    fails unless the INVITE's P-Asserted-Identity names the ``expect_caller`` number and
    its From the ``expect_from`` user (what the phone's display shows), when given. With
    ``early_media`` it sends 183 with SDP and starts its audio while it still rings. With
    ``expect_replaces`` the INVITE must carry that ``Replaces`` header (an attended
    transfer's)."""
    actions = ""
    for header, user in (("P-Asserted-Identity:", expect_caller), ("From:", expect_from)):
        if user is not None:
            actions += (
                f'      <ereg regexp="sip:{re.escape(user)}@" search_in="hdr"'
                f' header="{header}" check_it="true" assign_to="seen"/>\n'
            )
    if expect_replaces is not None:
        actions += (
            f'      <ereg regexp="{re.escape(expect_replaces)}" search_in="hdr"'
            ' header="Replaces:" check_it="true" assign_to="seen"/>\n'
        )
    if hangup_after_ms is not None:  # keep the headers of the INVITE for our BYE
        actions += (
            '      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from_hdr"/>\n'
            '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="to_hdr"/>\n'
        )
    recv = '  <recv request="INVITE" crlf="true" rrs="true"'
    recv += f">\n    <action>\n{actions}    </action>\n  </recv>\n" if actions else "/>\n"
    if "seen" in actions:
        recv += '  <Reference variables="seen"/>\n'
    body = _HEAD.format(name="agent") + recv
    body += _reply(180, "Ringing")
    if early_media:
        body += _reply(183, "Session Progress", sdp=True) + _play(str(PCAP_DIR / "g711a.pcap"))
    body += _pause(answer_after_ms)
    body += _reply(200, "OK", sdp=True, retrans=True)
    body += '  <recv request="ACK"/>\n'
    if audio and not early_media:
        body += _play(str(PCAP_DIR / "g711a.pcap"))
    if hangup_after_ms is None:
        body += '  <recv request="BYE"/>\n' + _reply(200, "OK", tag=False)
    else:
        body += _pause(hangup_after_ms) + _uas_request("BYE", 2)
        body += '  <recv response="200"/>\n'
    return body + _rtd_end()


def _uas_request(method: str, cseq: int, extra: str = "") -> str:
    """A request in the dialog a phone answered (a SIPp UAS: From and To swapped, the
    INVITE's headers kept as ``from_hdr``/``to_hdr``, its Record-Route as the route)."""
    return f"""  <send retrans="500">
    <![CDATA[
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: [$to_hdr];tag=[pid]A[call_number]
      To: [$from_hdr]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
{extra}      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
"""


def transferring_agent_scenario(
    refer_to: str, *, refer_after_ms: int = 2000, expect: int = 202
) -> str:
    """An agent's phone that answers, talks for ``refer_after_ms``, then transfers the
    caller: REFER with ``Refer-To: refer_to`` (``<sip:102@host>``, or with
    ``?Replaces=...`` for an attended transfer), expects 202 and two NOTIFYs (100 Trying,
    then the final status), and hangs up (RFC 5589). With another ``expect`` (a refused
    REFER) it expects that answer and no NOTIFY before hanging up."""
    body = _HEAD.format(name="transferor")
    body += (
        '  <recv request="INVITE" crlf="true" rrs="true">\n    <action>\n'
        '      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from_hdr"/>\n'
        '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="to_hdr"/>\n'
        "    </action>\n  </recv>\n"
    )
    body += _reply(180, "Ringing") + _pause(100) + _reply(200, "OK", sdp=True, retrans=True)
    body += '  <recv request="ACK"/>\n' + _play(str(PCAP_DIR / "g711a.pcap"))
    body += _pause(refer_after_ms)
    body += _uas_request(
        "REFER",
        2,
        f"      Refer-To: {refer_to}\n      Referred-By: <sip:101@[local_ip]>\n"
        "      Contact: <sip:[local_ip]:[local_port]>\n",
    )
    body += f'  <recv response="{expect}"/>\n'
    for _ in range(2 if expect == 202 else 0):
        body += '  <recv request="NOTIFY"/>\n' + _reply(200, "OK", tag=False)
    body += _uas_request("BYE", 3) + '  <recv response="200"/>\n'
    return body + _rtd_end()


def busy_agent_scenario(code: int = 486, reason: str = "Busy Here") -> str:
    return (
        _HEAD.format(name="busy")
        + '  <recv request="INVITE"/>\n'
        + _reply(code, reason)
        + '  <recv request="ACK"/>\n</scenario>\n'
    )


def ringing_agent_scenario() -> str:
    """A phone that rings and is never answered (we CANCEL it)."""
    return (
        _HEAD.format(name="ringing")
        + '  <recv request="INVITE"/>\n'
        # the 487 must carry the INVITE's Via set (the CANCEL that arrives is the proxy's)
        + '  <nop><action><assignstr assign_to="vias" value="[last_Via:]"/></action></nop>\n'
        + _reply(180, "Ringing")
        + '  <recv request="CANCEL"/>\n'
        + _reply(200, "OK", tag=False)
        + _reply(487, "Request Terminated")
        .replace("[last_CSeq:]", "CSeq: 1 INVITE")
        .replace("[last_Via:]", "[$vias]")
        + '  <recv request="ACK"/>\n</scenario>\n'
    )


def message_phone_scenario(code: int = 200, reason: str = "OK") -> str:
    """A phone that answers every SIP MESSAGE it gets (loops)."""
    return (
        _HEAD.format(name="message-phone")
        + '  <recv request="MESSAGE"/>\n'
        + _reply(code, reason, tag=True)
        + "</scenario>\n"
    )


def message_sender_scenario(sender: str, text: str, response: int = 200) -> str:
    return (
        _HEAD.format(name="message-sender")
        + f"""  <send retrans="500">
    <![CDATA[
      MESSAGE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{sender}@[local_ip]:[local_port]>;tag=[pid]M[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Max-Forwards: 70
      Content-Type: text/plain
      Content-Length: [len]

{text}
    ]]>
  </send>
  <recv response="{response}"/>
</scenario>
"""
    )


@attrs.define
class SippResult:
    returncode: int
    output: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Sipp:
    """One SIPp process with a scenario written into ``folder``."""

    def __init__(self, folder: Path, name: str, scenario: str, ip: str = "127.0.0.1") -> None:
        need_sip_tools()
        self.ip = ip  # another loopback address (127.0.0.2) plays a host on another network
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.name = name
        self.path = folder / f"{name}.xml"
        self.path.write_text(scenario)
        self.port = free_udp_port()
        self.media_port = free_media_ports()
        self.process: asyncio.subprocess.Process | None = None

    def _args(self, target: str | None, *extra: str) -> list[str]:
        args = [
            "sipp",
            "-sf",
            str(self.path),
            "-i",
            self.ip,
            "-p",
            str(self.port),
            "-mi",
            self.ip,
            "-mp",
            str(self.media_port),
            "-trace_err",
            "-error_file",
            str(self.folder / f"{self.name}_errors.log"),
            "-nostdin",
            *extra,
        ]
        if target:
            args.append(target)
        return args

    async def start(self, target: str | None = None, *extra: str) -> Sipp:
        """Start in the background (a phone that waits for calls)."""
        await self._spawn(target, *extra)
        await asyncio.sleep(0.2)
        assert self.process is not None
        if self.process.returncode is not None:
            raise RuntimeError(f"sipp {self.name} exited at once: {await self._errors()}")
        return self

    async def _spawn(self, target: str | None, *extra: str) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self._args(target, *extra),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.folder,
        )

    async def wait(self, timeout: float = 60) -> SippResult:
        assert self.process is not None
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        out = b""
        if self.process.stderr is not None:
            out = await self.process.stderr.read()
        return SippResult(
            self.process.returncode or 0, out.decode("utf-8", "replace"), await self._errors()
        )

    async def run(self, target: str, *extra: str, timeout: float = 60) -> SippResult:
        """Run to the end (a caller); ``extra`` are SIPp options (``-s USER -m 1``...)."""
        await self._spawn(target, *extra)
        return await self.wait(timeout)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def _errors(self) -> str:
        path = self.folder / f"{self.name}_errors.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def pcm_rms(
    path: str | os.PathLike[str], channel: int, start: float = 0.0, end: float | None = None
) -> int:
    """Loudness (RMS) of one channel of a 16-bit WAV, from ``start`` to ``end`` seconds (the
    whole file by default): silent is 0."""
    import wave

    with wave.open(str(path), "rb") as w:
        rate, channels = w.getframerate(), w.getnchannels()
        w.setpos(min(int(start * rate), w.getnframes()))
        count = w.getnframes() - w.tell() if end is None else int((end - start) * rate)
        data = w.readframes(max(0, count))
    if channels == 2:
        data = audioop.tomono(data, 2, 1.0 if channel == 0 else 0.0, 0.0 if channel == 0 else 1.0)
    return int(audioop.rms(data, 2)) if data else 0


def tone_level(pcm: bytes, freq: float, rate: int = 8000) -> float:
    """How loud ``freq`` is in 16-bit mono ``pcm`` (Goertzel): about the tone's amplitude
    when it is there, near 0 when not. Tells tones of different pitch apart in a mix."""
    import math
    import struct

    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    if not samples:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(samples)


def wav_part(path: str | os.PathLike[str], channel: int, start: float, end: float) -> bytes:
    """One channel of a 16-bit WAV from ``start`` to ``end`` seconds, as mono PCM."""
    import wave

    with wave.open(str(path), "rb") as w:
        rate, channels = w.getframerate(), w.getnchannels()
        w.setpos(min(int(start * rate), w.getnframes()))
        data = w.readframes(max(0, int((end - start) * rate)))
    if channels == 2:
        data = audioop.tomono(data, 2, 1.0 if channel == 0 else 0.0, 0.0 if channel == 0 else 1.0)
    return bytes(data)


def write_tone(path: Path, seconds: float, freq: float = 440.0, volume: int = 8000) -> Path:
    """A mono 8 kHz 16-bit WAV of a sine tone (what baresip's aufile plays)."""
    import wave

    from switchboard_sip.media import tone

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(tone(seconds, freq, volume))
    return path


def write_alaw(path: Path, seconds: float, freq: float = 440.0, volume: int = 8000) -> Path:
    """A raw A-law file of a sine tone, for a SIPp caller's ``rtp_stream``."""
    from switchboard_sip.media import tone

    path.write_bytes(audioop.lin2alaw(tone(seconds, freq, volume), 2))
    return path


class Baresip:
    """baresip (Debian's ``baresip-core``) as a desk phone: registers ``user`` at Kamailio
    over ``transport`` (udp, tcp or tls; TLS checked against Kamailio's CA), answers every
    call at once, sends a tone from a WAV (or the WAV ``source``: 8 kHz mono, played once
    from the start of each call) and records what it hears and sends (the
    ``sndfile`` module: ``dump-*-dec.wav`` and ``-enc.wav`` in its folder). ``srtp`` asks
    for SDES-SRTP (``mediaenc=srtp-mand``). :meth:`command` drives it through ``ctrl_tcp``
    (``dial``, ``hangup``...)."""

    def __init__(
        self,
        folder: Path,
        kam: Kamailio,
        user: str,
        *,
        transport: str = "udp",
        srtp: bool = False,
        seconds: float = 60.0,
        freq: float = 440.0,
        volume: int = 8000,
        host: str = "127.0.0.1",
        source: Path | None = None,
    ) -> None:
        need_sip_tools()
        if shutil.which("baresip") is None:
            missing_tool("needs baresip: scripts/system-deps (baresip-core)")
        self.folder = folder
        self.kam = kam
        self.user = user
        self.transport = transport
        self.host = host
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_port()
        self.ctrl_port = free_port()
        rtp = free_media_ports()
        tone_file = source or write_tone(folder / "tone.wav", seconds, freq, volume)
        proxy_port = kam.tls_port if transport == "tls" else kam.port
        lines = [
            "poll_method epoll",
            f"sip_listen {host}:{self.port}",
            "call_local_timeout 120",
            "call_max_calls 4",
            f"audio_player aubridge,out-{user}",
            f"audio_source aufile,{tone_file}",
            f"audio_alert aubridge,alert-{user}",
            f"rtp_ports {rtp}-{rtp + 3}",
            "module_path /usr/lib/baresip/modules",
            "module g711.so",
            "module aufile.so",
            "module aubridge.so",
            "module sndfile.so",
            *(["module srtp.so"] if srtp else []),
            "module_tmp account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            f"snd_path {folder}",
        ]
        if transport == "tls":
            cert = test_ca_of(kam).issue_cert("localhost", "127.0.0.1")
            pem = folder / "baresip.pem"  # baresip takes key and certificate in one file
            pem.write_bytes(
                b"".join(b.bytes() for b in (cert.private_key_pem, *cert.cert_chain_pems))
            )
            lines += [f"sip_certificate {pem}", f"sip_cafile {kam.ca_file}"]
        (folder / "config").write_text("\n".join(lines) + "\n")
        params = f";transport={transport}" if transport != "udp" else ""
        account = (
            f"<sip:{user}@{kam.host}:{proxy_port}{params}>;auth_pass=x;answermode=auto"
            f';regint=60;outbound="sip:{kam.host}:{proxy_port}{params}"'
        )
        if srtp:
            account += ";mediaenc=srtp-mand"
        (folder / "accounts").write_text(account + "\n")
        self.log = folder / "baresip.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Baresip:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                # -n: its Contact and SDP name the loopback address, not eth0's
                ["baresip", "-4", "-f", str(self.folder), "-n", self.host],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                start_new_session=True,
            )
        return self

    def registered(self) -> bool:
        return f"AoR: {self.user}\n" in self.kam.registered()

    def command(self, command: str, params: str = "") -> str:
        """One ctrl_tcp command (a JSON netstring); its answer's text."""
        import json

        body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=5) as s:
            s.sendall(str(len(body)).encode() + b":" + body + b",")
            data = b""
            while not data.endswith(b","):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode("utf-8", "replace")

    def recordings(self, kind: str) -> list[Path]:
        """The WAVs of what it heard (``dec``) or sent (``enc``), oldest first."""
        return sorted(self.folder.glob(f"dump-*-{kind}.wav"))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None


def test_ca_of(kam: Kamailio) -> trustme.CA:
    """The CA that signed ``kam``'s certificate (made when it started with ``tls``)."""
    if kam.ca is None:
        raise RuntimeError("Kamailio was not started with tls=True")
    return kam.ca


class NatNetwork:
    """A private network behind a real NAT, in network namespaces (root only): ``lan``
    holds 10.77.0.2 with its default route through ``router``, which masquerades it
    (iptables MASQUERADE) as 198.51.100.1 on the WAN; this namespace is the WAN host
    198.51.100.2 (run the registrar and the far phones here). Nothing on the WAN can
    reach the LAN but replies to what the LAN sent first: as behind a home router."""

    LAN_IP = "10.77.0.2"
    PUBLIC_IP = "198.51.100.1"
    WAN_IP = "198.51.100.2"

    def __init__(self, tag: str = "sbnat") -> None:
        if os.geteuid() != 0:
            missing_tool("needs root for network namespaces (ip netns)")
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                missing_tool(f"needs {tool}: scripts/system-deps (iproute2, iptables)")
        self.lan = f"{tag}-lan"
        self.router = f"{tag}-rtr"
        self.wan_dev = f"{tag}-w0"

    def _ip(self, *args: str, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)

    def start(self) -> NatNetwork:
        self.stop()  # what a killed run left behind
        lan, rtr = self.lan, self.router
        steps = [
            ["netns", "add", lan],
            ["netns", "add", rtr],
            ["link", "add", "sbl0", "netns", lan, "type", "veth", "peer", "sbl1", "netns", rtr],
            ["link", "add", self.wan_dev, "type", "veth", "peer", "sbw1", "netns", rtr],
            ["-n", lan, "addr", "add", f"{self.LAN_IP}/24", "dev", "sbl0"],
            ["-n", lan, "link", "set", "sbl0", "up"],
            ["-n", lan, "link", "set", "lo", "up"],
            ["-n", lan, "route", "add", "default", "via", "10.77.0.1"],
            ["-n", rtr, "addr", "add", "10.77.0.1/24", "dev", "sbl1"],
            ["-n", rtr, "link", "set", "sbl1", "up"],
            ["-n", rtr, "addr", "add", f"{self.PUBLIC_IP}/24", "dev", "sbw1"],
            ["-n", rtr, "link", "set", "sbw1", "up"],
            ["addr", "add", f"{self.WAN_IP}/24", "dev", self.wan_dev],
            ["link", "set", self.wan_dev, "up"],
        ]
        try:
            for step in steps:
                self._ip(*step)
            for command in (
                ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "sbw1", "-j", "MASQUERADE"],
                # a home router: from the WAN only replies to what the LAN started
                ["iptables", "-A", "FORWARD", "-i", "sbw1", "-m", "conntrack",
                 "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                ["iptables", "-A", "FORWARD", "-i", "sbw1", "-j", "DROP"],
            ):  # fmt: skip
                subprocess.run(
                    ["ip", "netns", "exec", rtr, *command],
                    check=True,
                    capture_output=True,
                    timeout=10,
                )
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise RuntimeError(f"cannot build the NAT network: {exc.stderr!r}") from None
        return self

    def forward_udp(self, low: int, high: int) -> None:
        """Forward the router's UDP ports ``low``..``high`` to the LAN host (what a server's
        RTP range behind NAT needs when the far end does not send back to where our RTP
        comes from)."""
        for command in (
            ["iptables", "-t", "nat", "-A", "PREROUTING", "-i", "sbw1", "-p", "udp",
             "--dport", f"{low}:{high}", "-j", "DNAT", "--to-destination", self.LAN_IP],
            ["iptables", "-I", "FORWARD", "1", "-i", "sbw1", "-p", "udp", "-d", self.LAN_IP,
             "--dport", f"{low}:{high}", "-j", "ACCEPT"],
        ):  # fmt: skip
            subprocess.run(
                ["ip", "netns", "exec", self.router, *command],
                check=True,
                capture_output=True,
                timeout=10,
            )

    def command(self, *args: str) -> list[str]:
        """``args`` run inside the LAN namespace."""
        return ["ip", "netns", "exec", self.lan, *args]

    def stop(self) -> None:
        self._ip("netns", "del", self.lan, check=False)
        self._ip("netns", "del", self.router, check=False)
        self._ip("link", "del", self.wan_dev, check=False)


class Dnsmasq:
    """dnsmasq (Debian's ``dnsmasq-base``) as an authoritative DNS server on a loopback
    port, answering only the records given: ``naptr`` (name, order, preference, service,
    replacement), ``srv`` (name, target, port, priority, weight), ``hosts`` (name, IPv4)."""

    def __init__(
        self,
        folder: Path,
        *,
        naptr: Sequence[tuple[str, int, int, str, str]] = (),
        srv: Sequence[tuple[str, str, int, int, int]] = (),
        hosts: Sequence[tuple[str, str]] = (),
    ) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not Path(binary).exists():
            missing_tool("needs dnsmasq: scripts/system-deps (dnsmasq-base)")
        self.binary = binary
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_port()
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "log-queries",
        ]
        lines += [f'naptr-record={n},{o},{p},"s","{s}","",{r}' for n, o, p, s, r in naptr]
        lines += [f"srv-host={n},{t},{port},{pr},{w}" for n, t, port, pr, w in srv]
        lines += [f"host-record={n},{ip}" for n, ip in hosts]
        self.config = folder / "dnsmasq.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = folder / "dnsmasq.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        """What ``dns_servers`` takes: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Dnsmasq:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--keep-in-foreground",
                    "--log-facility=-",
                    f"--conf-file={self.config}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.log.read_text()[-1500:]}")
            if "started" in self.log.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dnsmasq did not start: {self.log.read_text()[-1500:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None


class BrowserPeer:
    """An aiortc peer standing in for an agent's browser softphone (tests, benchmarks): it
    connects to ``Softphones`` as the console would, answers each offer (unless
    ``auto_answer`` is off) with ``tone`` as its microphone, and keeps what it hears.
    ``messages`` holds every message it was sent."""

    def __init__(
        self,
        softphones: Any,
        agent_id: int,
        *,
        tone: bytes = b"",
        auto_answer: bool = True,
        codecs: Sequence[str] = (),
    ) -> None:
        self.softphones = softphones
        self.agent_id = agent_id
        self.tone = tone
        self.auto_answer = auto_answer
        self.codecs = tuple(codecs)  # mime types to keep in the answer (all when empty)
        self.messages: list[dict[str, Any]] = []
        self.heard = bytearray()  # 8 kHz mono s16 of all calls, in order
        self.heard_at: list[tuple[float, int]] = []  # (monotonic time, rms) per frame
        self.frames: list[tuple[float, bytes]] = []  # (monotonic time, pcm) as heard
        self.pcs: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.answered = asyncio.Event()

    def connect(self) -> bool:
        return bool(self.softphones.connect(self.agent_id, self))

    async def send(self, message: Any) -> None:
        self.messages.append(dict(message))
        if message.get("type") == "offer" and self.auto_answer:
            task = asyncio.get_running_loop().create_task(self.answer(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif message.get("type") == "ended":
            pc = self.pcs.pop(message.get("leg"), None)
            if pc is not None:
                await pc.close()

    async def answer(self, offer: dict[str, Any]) -> None:
        pc = RTCPeerConnection()
        self.pcs[offer["leg"]] = pc
        pc.addTrack(_ToneTrack(self.tone))

        @pc.on("track")
        def on_track(track: Any) -> None:
            task = asyncio.get_running_loop().create_task(self._listen(track))
            self._tasks.add(task)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        if self.codecs:
            caps = RTCRtpSender.getCapabilities("audio").codecs
            for t in pc.getTransceivers():
                t.setCodecPreferences([c for c in caps if c.mimeType in self.codecs])
        await pc.setLocalDescription(await pc.createAnswer())
        await self.softphones.received(
            self.agent_id, {"type": "answer", "leg": offer["leg"], "sdp": pc.localDescription.sdp}
        )
        self.answered.set()

    async def _listen(self, track: Any) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                pcm = bytes(out.planes[0])[: out.samples * 2]
                self.heard += pcm
                self.heard_at.append((time.monotonic(), _rms(pcm)))
                self.frames.append((time.monotonic(), pcm))

    def heard_between(self, start: float, end: float) -> bytes:
        """What it heard between two ``time.monotonic()`` instants."""
        return b"".join(pcm for at, pcm in self.frames if start <= at < end)

    async def hangup(self, leg: str) -> None:
        await self.softphones.received(self.agent_id, {"type": "hangup", "leg": leg})
        pc = self.pcs.pop(leg, None)
        if pc is not None:
            await pc.close()

    async def close(self) -> None:
        self.softphones.disconnect(self.agent_id, self)
        for task in list(self._tasks):
            task.cancel()
        for pc in list(self.pcs.values()):
            await pc.close()
        self.pcs.clear()


def _rms(pcm: bytes) -> int:
    return int(audioop.rms(pcm, 2)) if pcm else 0


class _ToneTrack(MediaStreamTrack):
    """A microphone for ``BrowserPeer``: ``pcm`` (8 kHz mono s16) round and round, paced
    at 20 ms a frame; silence when empty."""

    kind = "audio"

    def __init__(self, pcm: bytes) -> None:
        super().__init__()
        self.pcm = pcm or b"\x00" * 320
        self.at = 0
        self.pts = 0
        self.start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        await asyncio.sleep(max(0.0, self.start + self.pts / 8000 - loop.time()))
        chunk = (self.pcm[self.at : self.at + 320] + self.pcm)[:320]
        self.at = (self.at + 320) % len(self.pcm)
        frame = av.AudioFrame(format="s16", layout="mono", samples=160)
        frame.planes[0].update(chunk)
        frame.sample_rate = 8000
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, 8000)
        self.pts += 160
        return frame
