"""The SIP user agent core: the layers put together, requests to us dispatched, calls placed.

The layers, each its own module with its own tests (RFC 3261's split):

- :mod:`switchboard_sip.transport` — UDP, TCP and TLS; framing and bounds on streams;
- :mod:`switchboard_sip.transaction` — client transactions (retransmission over UDP,
  matching by branch and method), the server INVITE's final response;
- :mod:`switchboard_sip.dialog` — call legs (:class:`Leg`) and in-dialog requests;
- :mod:`switchboard_sip.registration` — the binding at the registrar;
- this module — the user agent: who may send us requests, what each method does, new
  calls and MESSAGEs, media ports.

Requests go to the configured server (registrar and outbound proxy in one). What the user
agent fixes in pyVoIP 1.6.8, each with a test in ``plugins/sip/tests/test_sip_adapter.py``:

- responses are matched to their transaction (branch + method), so an OPTIONS or a NOTIFY
  arriving while an INVITE or REGISTER waits no longer breaks it (#46, #126, #315);
- OPTIONS, NOTIFY, INFO and MESSAGE are answered (INFO ``dtmf-relay`` digits are kept);
  other unknown methods get ``501``;
- a malformed or oversized message is answered ``400``/``513`` when it can be, else
  dropped, and logged; the rest keeps running (#154, #175, #301);
- a ``200 OK`` copies the INVITE's ``Record-Route`` set, and in-dialog requests (BYE, ACK)
  carry the route set, so they pass through a record-routing proxy such as Kamailio;
- an answered call stays up until a BYE: no timer ends it (#272), the ``200 OK`` is
  retransmitted until the ACK comes (RFC 3261 13.3.1.4);
- ``stop()`` closes every socket and ends every task; a stopped agent starts again on the
  same port (#229);
- registration runs beside calls (it never holds the socket), re-registers before expiry,
  and answers digest challenges (401 and 407) on REGISTER, INVITE and MESSAGE (#69, #263).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import socket
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from switchboard import Tasks
from switchboard_sip import message as sipmsg
from switchboard_sip.auth import digest
from switchboard_sip.dialog import ALLOW, Leg, LegState
from switchboard_sip.media import (
    ANSWER_DIRECTION,
    Crypto,
    MediaClock,
    MediaError,
    PortPool,
    RtpStream,
    Sdp,
    make_sdp,
    parse_sdp,
)
from switchboard_sip.message import SipMessage, SipParseError
from switchboard_sip.registration import Registration, RegistrationError
from switchboard_sip.transaction import T1, T2, SipError, Transactions
from switchboard_sip.transport import (
    DEFAULT_PORTS,
    Addr,
    StreamTransport,
    Transport,
    UdpTransport,
)

__all__ = [
    "ALLOW",
    "CALLER_NUMBER",
    "T1",
    "T2",
    "Leg",
    "LegState",
    "RegistrationError",
    "SipError",
    "UserAgent",
    "digest",
]

log = logging.getLogger("switchboard.sip")

#: What may stand as the user part of a caller's SIP URI (a number, ``+`` and all).
CALLER_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")
#: What a REFER may transfer to: an extension or a number.
TRANSFER_TARGET = re.compile(r"\+?[A-Za-z0-9*#._-]{1,32}")
#: A Replaces value (RFC 3891): a Call-ID and the two tags, nothing that could break a header.
REPLACES = re.compile(
    r"[A-Za-z0-9.!%*_+`'~()<>:\\\"/\[\]?{}@-]{1,200}"  # the Call-ID
    r"(?:;[A-Za-z-]{1,20}(?:=[^;\s,]{0,100})?){0,4}"  # to-tag, from-tag, early-only
)


class UserAgent:
    """A SIP UA on one port and transport: registers (or not, on an IP-authenticated
    trunk), takes and places calls, exchanges MESSAGEs."""

    def __init__(
        self,
        *,
        server: str,
        port: int,
        username: str,
        password: str,
        ip: str,
        local_port: int,
        rtp_ports: tuple[int, int],
        codecs: list[str],
        expires: int = 300,
        domain: str | None = None,
        max_message_size: int = 65_535,
        on_invite: Callable[[Leg], Awaitable[None]] | None = None,
        on_message: Callable[[SipMessage], Awaitable[int]] | None = None,
        on_refer: Callable[[Leg, str, str | None], bool] | None = None,
        trusted_networks: Iterable[str] = (),
        max_calls: int = 200,
        max_call_seconds: float = 14_400.0,
        rtp_timeout: float = 60.0,
        transport: str = "udp",
        client_ssl: ssl.SSLContext | None = None,
        server_ssl: ssl.SSLContext | None = None,
        tls_server_name: str | None = None,
        sips: bool = False,
        public_ip: str | None = None,
        public_port: int | None = None,
        keepalive: float | None = None,
        nat_discovery: bool = True,
        srtp: str = "off",
        session_expires: int = 0,
        clock: MediaClock | None = None,
        ports: PortPool | None = None,
    ) -> None:
        self.server = server
        # Requests are taken only from the registrar/proxy (its addresses, resolved at
        # start) and these networks: anyone else who reaches the port gets 403.
        self.trusted_networks = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
        self.trusted_ips: set[str] = set()
        self.refused: dict[str, int] = {}  # untrusted source -> requests refused
        self.max_calls = max_calls
        self.max_call_seconds = max_call_seconds
        self.rtp_timeout = rtp_timeout
        self.port = port
        self.username = username
        self.password = password
        self.ip = ip
        self.local_port = local_port
        # behind NAT: the address the far end must use for us (Contact, Via, SDP)
        self.public_ip = public_ip
        self.public_port = public_port
        self.keepalive = keepalive  # None: on TCP/TLS and behind NAT (25 s), else off
        self.nat_discovery = nat_discovery
        self.learned: Addr | None = None  # our public address, as the registrar saw it
        self._keepalive_task: asyncio.Task[None] | None = None
        self.scheme = "sips" if sips else "sip"
        if srtp not in ("off", "offer", "require"):
            raise ValueError(f"srtp must be off, offer or require, got {srtp!r}")
        self.srtp = srtp
        self.session_expires = session_expires
        # the AOR's domain: the server, with its port when that is not the default (a
        # registrar on another port takes an AOR without it for someone else's)
        host = f"[{server}]" if ":" in server and not server.startswith("[") else server
        self.domain = domain or (host if port == DEFAULT_PORTS[transport] else f"{host}:{port}")
        self.codecs = codecs
        self.max_message_size = max_message_size
        self.on_invite = on_invite
        self.on_message = on_message
        self.on_refer = on_refer
        # several user agents (trunks) of one channel share the RTP ports and the media
        # clock, so that a call bridges legs of any of them
        self.ports = ports if ports is not None else PortPool(*rtp_ports)
        self._own_clock = clock is None
        self.clock = clock if clock is not None else MediaClock()
        self.transport: Transport
        if transport == "udp":
            self.transport = UdpTransport(self._received, self._transport_error, max_message_size)
        elif transport in ("tcp", "tls"):
            if transport == "tls" and client_ssl is None:
                raise ValueError("a TLS transport needs an SSL context (client_ssl)")
            self.transport = StreamTransport(
                self._received,
                self._transport_error,
                max_message_size,
                client_ssl=client_ssl if transport == "tls" else None,
                server_ssl=server_ssl if transport == "tls" else None,
                server_hostname=tls_server_name,
            )
        else:
            raise ValueError(f"transport must be udp, tcp or tls, got {transport!r}")
        self.transactions = Transactions(self.transport)
        self.registration = Registration(self, expires)
        self.legs: dict[str, Leg] = {}
        self._tasks = Tasks(log)
        self._session = secrets.randbelow(1 << 30)
        self.malformed = 0

    # -- addresses ------------------------------------------------------------------------

    @property
    def server_addr(self) -> Addr:
        return (self.server, self.port)

    @property
    def contact_ip(self) -> str:
        if self.public_ip:
            return self.public_ip
        return self.learned[0] if self.learned else self.ip

    @property
    def contact_port(self) -> int:
        if self.public_port:
            return self.public_port
        return self.learned[1] if self.learned else self.local_port

    def learn_address(self, via: str) -> bool:
        """Read our address as the registrar saw it from our Via in its answer
        (``received`` and ``rport``, RFC 3581); behind NAT (it differs from ours) use it
        in Contact and Via (and SDP, unless ``public_ip`` names the address for media),
        and keep the binding open. True when it changed. Only over UDP: a TCP or TLS
        connection is reused instead (Via ``alias``)."""
        if not self.nat_discovery or self.transport.reliable:
            return False
        received = sipmsg.param(via, "received") or self.ip
        rport = sipmsg.param(via, "rport") or ""
        try:
            ipaddress.ip_address(received)
        except ValueError:
            return False
        port = int(rport) if rport.isdigit() and 0 < int(rport) < 65536 else self.local_port
        seen = (received, port)
        current = self.learned or (self.ip, self.local_port)
        if seen == current:
            return False
        self.learned = None if seen == (self.ip, self.local_port) else seen
        log.info("behind NAT: the registrar sees us at %s:%s; using it in Contact", *seen)
        self._start_keepalives()
        return True

    @property
    def media_ip(self) -> str:
        """The address in our SDP (the public one behind NAT)."""
        return self.contact_ip

    @property
    def contact(self) -> str:
        host = f"{self.contact_ip}:{self.contact_port}"
        param = "" if self.scheme == "sips" else self.transport.scheme_param
        return f"<{self.scheme}:{self.username}@{host}{param}>"

    @property
    def aor(self) -> str:
        return f"{self.scheme}:{self.username}@{self.domain}"

    @property
    def expires(self) -> int:
        return self.registration.expires

    @expires.setter
    def expires(self, value: int) -> None:
        self.registration.expires = value

    @property
    def registered(self) -> asyncio.Event:
        return self.registration.registered

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.server, self.port, type=socket.SOCK_DGRAM)
        self.trusted_ips = {str(info[4][0]) for info in infos}
        await self.transport.start(self.ip, self.local_port)
        self.local_port = self.transport.local_port
        if self._own_clock:
            self.clock.start()
        self._start_keepalives()

    async def stop(self) -> None:
        legs = list(self.legs.values())
        await asyncio.gather(
            *(asyncio.wait_for(leg.hangup(), 2) for leg in legs), return_exceptions=True
        )
        for leg in legs:
            leg.end(0, "stopped")
        if self.registered.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.registration.register(expires=0), 2)
        await self._tasks.cancel_all()
        if self._own_clock:
            await self.clock.stop()
        self.transactions.cancel_all()
        await self.transport.stop()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name="sip-ua")

    def session_id(self) -> int:
        self._session += 1
        return self._session

    async def register(self, expires: int | None = None) -> int:
        return await self.registration.register(expires)

    async def keep_registered(self, on_lost: Callable[[str], None]) -> None:
        await self.registration.keep(self.expires, on_lost)

    @property
    def keepalive_interval(self) -> float:
        if self.keepalive is not None:
            return self.keepalive
        behind_nat = self.public_ip is not None or self.learned is not None
        return 25.0 if self.transport.reliable or behind_nat else 0.0

    def _start_keepalives(self) -> None:
        running = self._keepalive_task is not None and not self._keepalive_task.done()
        if self.keepalive_interval > 0 and not running:
            self._keepalive_task = self.spawn(self._keepalives())

    async def _keepalives(self) -> None:
        """A CRLFCRLF ping to the server every ``keepalive`` seconds: keeps a NAT binding
        (and a TCP/TLS connection) open between registrations (RFC 5626 §4.4.1)."""
        while True:
            await asyncio.sleep(self.keepalive_interval)
            self.transport.keepalive(self.server_addr)

    # -- transport ------------------------------------------------------------------------

    def send(self, data: bytes, addr: Addr | None = None) -> None:
        self.transport.send(data, addr or self.server_addr)

    def _transport_error(self, addr: Addr, reason: str) -> None:
        self.transactions.transport_error(addr, reason)

    def _received(self, data: bytes, addr: Addr) -> None:
        try:
            msg = sipmsg.parse(data, self.max_message_size)
        except SipParseError as exc:
            self.malformed += 1
            status = 513 if "exceeds" in str(exc) else 400
            log.warning(
                "dropped a malformed SIP message from %s:%s: %s (starts %r)",
                *addr,
                exc,
                data[:300],
            )
            reason = "Message Too Large" if status == 513 else f"Bad Request ({exc})"[:100]
            answer = sipmsg.safe_response(data, status, reason)
            if answer is not None:
                self.send(answer, addr)
            return
        if msg.is_request and not self.trusts(addr[0]):
            self._refuse(msg, addr)
            return
        if msg.is_request and not self.transport.reliable:
            # over UDP responses follow the request's Via (RFC 3261 18.2.2); over a stream
            # they go back on the connection it came on
            addr = sipmsg.reply_address(msg, addr)
        try:
            if msg.is_request:
                self._on_request(msg, addr)
            else:
                self._on_response(msg)
        except Exception:  # a bug in handling one message must not stop the UA
            log.exception("failed to handle %s", (msg.method or msg.status))

    def trusts(self, host: str) -> bool:
        """Whether requests from ``host`` are taken (the registrar, trusted networks)."""
        if host in self.trusted_ips:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted_networks)

    def _refuse(self, msg: SipMessage, addr: Addr) -> None:
        """403 to a request from an untrusted source, with no state kept for it; one log
        line per source, not per packet."""
        host = addr[0]
        if host not in self.refused:
            if len(self.refused) >= 10_000:  # a sweep of spoofed sources: keep it bounded
                self.refused.clear()
            log.warning(
                "refusing SIP requests from %s (not the registrar nor in trusted_networks); "
                "first: %s",
                host,
                msg.method,
            )
        self.refused[host] = self.refused.get(host, 0) + 1
        if msg.method != "ACK":
            self.send(sipmsg.response(msg, 403, to_tag=sipmsg.new_tag()), addr)

    # -- media negotiation ----------------------------------------------------------------

    def sdp_for(self, stream: RtpStream) -> bytes:
        """Our offer or answer for ``stream``: its port, our codecs, its SRTP key and
        direction; the same o= session for the dialog, its version one more each time."""
        if not stream.sdp_session:
            stream.sdp_session = stream.sdp_version = self.session_id()
        else:
            stream.sdp_version += 1
        return make_sdp(
            self.media_ip,
            stream.port,
            self.codecs,
            stream.sdp_session,
            version=stream.sdp_version,
            crypto=stream.local_crypto,
            profile=stream.profile,
            direction=stream.direction,
        )

    def prepare_offer(self, stream: RtpStream) -> None:
        """Before we offer: a key of our own when SRTP is offered (``RTP/AVP`` with
        ``a=crypto``, which a peer without SRTP still takes) or required (``RTP/SAVP``)."""
        if self.srtp != "off":
            stream.local_crypto = Crypto.new()
            stream.profile = "RTP/SAVP" if self.srtp == "require" else "RTP/AVP"

    def check_offer(self, offer: Sdp) -> None:
        """Raise :class:`MediaError` when the offer's security does not suit ours."""
        if offer.crypto is None and self.srtp == "require":
            raise MediaError("SRTP is required (srtp = require) and the offer has no a=crypto")
        if offer.profile == "RTP/SAVP" and self.srtp == "off":
            raise MediaError("SRTP offered (RTP/SAVP) but not enabled (srtp = off)")

    def prepare_answer(self, stream: RtpStream, offer: Sdp) -> None:
        """Before we answer an offer: SRTP with a key of ours in the offer's suite and tag
        when it carries one and ours is not off; its profile."""
        stream.profile = offer.profile
        if offer.crypto is not None and self.srtp != "off":
            stream.local_crypto = Crypto.new(offer.crypto.suite, offer.crypto.tag)

    def check_answer(self, stream: RtpStream, answer: Sdp) -> None:
        """Raise :class:`MediaError` when an answer to our offer leaves required SRTP out
        or names a key for another of our lines."""
        if answer.crypto is not None and stream.local_crypto is not None:
            if answer.crypto.tag != stream.local_crypto.tag:
                raise MediaError(f"SDP answer's crypto tag {answer.crypto.tag} was not offered")
        elif self.srtp == "require":
            raise MediaError("SRTP is required (srtp = require) and the answer has no a=crypto")

    # -- client transactions --------------------------------------------------------------

    def _on_response(self, msg: SipMessage) -> None:
        if self.transactions.on_response(msg):
            return
        if msg.cseq[1] == "INVITE" and msg.status is not None and 200 <= msg.status < 300:
            # a retransmitted 2xx: ACK it again
            leg = self.legs.get(msg.call_id)
            if leg is not None:
                leg.send_ack(msg)

    def build_request(
        self,
        method: str,
        uri: str,
        *,
        call_id: str,
        from_: str,
        to: str,
        cseq: int,
        routes: Sequence[str] = (),
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        branch: str | None = None,
    ) -> tuple[bytes, str]:
        """A request from us: our Via (``rport`` asked for; ``alias`` on streams, so that
        the far end reuses the connection, RFC 5923) and the usual headers."""
        branch = branch or sipmsg.new_branch()
        alias = ";alias" if self.transport.reliable else ""
        via = (
            f"SIP/2.0/{self.transport.name} {self.contact_ip}:{self.contact_port}"
            f";branch={branch};rport{alias}"
        )
        headers = [
            ("Via", via),
            ("Max-Forwards", "70"),
            *[("Route", r) for r in routes],
            ("From", from_),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("User-Agent", "Switchboard"),
            *extra,
        ]
        return sipmsg.serialize(f"{method} {uri} SIP/2.0", headers, body), branch

    async def authenticated(
        self,
        method: str,
        uri: str,
        build: Callable[[list[tuple[str, str]]], tuple[bytes, str]],
        **kwargs: Any,
    ) -> SipMessage:
        """Send a request to the server; answer one 401/407 digest challenge. Returns the
        final response (``build`` keeps the bytes and branch of what it built)."""
        data, branch = build([])
        resp = await self.transactions.request(data, branch, method, self.server_addr, **kwargs)
        if resp.status in (401, 407):
            header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            answer_to = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            challenge = resp.get(header)
            if challenge is None:
                return resp
            if method == "INVITE":
                self.ack_error(data, resp)
            auth = digest(challenge, method, uri, self.username, self.password)
            data, branch = build([(answer_to, auth)])
            resp = await self.transactions.request(data, branch, method, self.server_addr, **kwargs)
        return resp

    def ack_error(self, invite_bytes: bytes, resp: SipMessage) -> None:
        """ACK for a non-2xx final response: same branch as the INVITE (RFC 3261 17.1.1.3)."""
        invite = sipmsg.parse(invite_bytes)
        headers = [
            ("Via", invite.get_all("Via")[0]),
            ("Max-Forwards", "70"),
            *[("Route", r) for r in invite.get_all("Route")],
            ("From", invite.first("From")),
            ("To", resp.first("To")),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq[0]} ACK"),
        ]
        self.send(sipmsg.serialize(f"ACK {invite.uri} SIP/2.0", headers))

    # -- requests to us -------------------------------------------------------------------

    def _on_request(self, msg: SipMessage, addr: Addr) -> None:
        method = msg.method or ""
        if method == "INVITE":
            self._on_invite(msg, addr)
        elif method == "ACK":
            leg = self.legs.get(msg.call_id)
            if leg is not None and not leg.acked.is_set():
                leg.ack = msg
                leg.acked.set()
        elif method == "CANCEL":
            self._on_cancel(msg, addr)
        elif method == "BYE":
            leg = self.legs.get(msg.call_id)
            if leg is None:
                self.send(sipmsg.response(msg, 481), addr)
                return
            self.send(sipmsg.response(msg, 200), addr)
            leg.remote_hangup = True
            leg.end(0, "remote hung up")
        elif method == "OPTIONS":
            self.send(
                sipmsg.response(
                    msg,
                    200,
                    to_tag=sipmsg.new_tag(),
                    headers=[("Allow", ALLOW), ("Accept", "application/sdp")],
                ),
                addr,
            )
        elif method == "INFO":
            leg = self.legs.get(msg.call_id)
            ctype = (msg.get("Content-Type") or "").lower()
            if leg is not None and "dtmf" in ctype:
                for line in msg.body.decode("utf-8", "replace").splitlines():
                    key, _, value = line.partition("=")
                    if key.strip().lower() == "signal" and value.strip():
                        leg.info_digits.put_nowait(value.strip()[0])
            self.send(sipmsg.response(msg, 200 if leg is not None else 481), addr)
        elif method == "UPDATE":
            leg = self.legs.get(msg.call_id)
            if leg is None or leg.state is not LegState.ANSWERED or leg.stream is None:
                self.send(sipmsg.response(msg, 481), addr)
            else:
                self._reinvite(leg, msg, addr)
        elif method == "REFER":
            self._on_refer_request(msg, addr)
        elif method == "NOTIFY":
            leg = self.legs.get(msg.call_id)
            event = (msg.get("Event") or "").split(";", 1)[0].strip().lower()
            if leg is not None and event == "refer":
                state = (msg.get("Subscription-State") or "").lower()
                leg.refer_progress(msg.body[:200], state.startswith("terminated"))
            self.send(sipmsg.response(msg, 200), addr)
        elif method == "MESSAGE":
            if self.on_message is None:
                self.send(sipmsg.response(msg, 405, headers=[("Allow", ALLOW)]), addr)
            else:
                self.spawn(self._message(msg, addr))
        else:
            self.send(sipmsg.response(msg, 501, headers=[("Allow", ALLOW)]), addr)

    def _on_refer_request(self, msg: SipMessage, addr: Addr) -> None:
        """REFER (RFC 3515) in an answered call: the phone transfers the other party to
        the ``Refer-To`` target. Only a user part that is an extension or a number is
        taken, and it is called at our server like any other call: a REFER cannot send
        the call to a host of the peer's choosing. A ``Replaces`` header in the URI
        (attended transfer, RFC 3891: the phone's consultation call with the target) goes
        into our INVITE to the target, whose phone then swaps that call for ours."""
        leg = self.legs.get(msg.call_id)
        if leg is None or leg.state is not LegState.ANSWERED:
            self.send(sipmsg.response(msg, 481), addr)
            return
        refer_to = msg.get("Refer-To") or ""
        uri = sipmsg.uri_of(refer_to)
        uri, _, embedded = uri.partition("?")
        replaces = None
        for header in embedded.split("&") if embedded else []:
            name, _, value = header.partition("=")
            if name.strip().lower() == "replaces":
                replaces = urllib.parse.unquote(value)
        if replaces is not None and not REPLACES.fullmatch(replaces):
            self.send(sipmsg.response(msg, 400, reason="Malformed Replaces in Refer-To"), addr)
            return
        target = sipmsg.user_of(uri)
        if target is None or not TRANSFER_TARGET.fullmatch(target):
            self.send(sipmsg.response(msg, 400, reason="Refer-To names no extension"), addr)
            return
        if self.on_refer is None or not self.on_refer(leg, target, replaces):
            self.send(sipmsg.response(msg, 603, reason="Transfer not possible now"), addr)
            return
        log.info("call %s: REFER to %s accepted", leg.call_id, target)
        self.send(sipmsg.response(msg, 202, headers=[("Contact", self.contact)]), addr)

    async def _message(self, msg: SipMessage, addr: Addr) -> None:
        assert self.on_message is not None
        try:
            status = await self.on_message(msg)
        except Exception:
            log.exception("MESSAGE handler failed")
            status = 500
        self.send(sipmsg.response(msg, status, to_tag=sipmsg.new_tag()), addr)

    def _on_invite(self, msg: SipMessage, addr: Addr) -> None:
        branch = msg.branch
        answered = self.transactions.final_for(branch)
        if answered is not None:  # a retransmission we already answered
            self.send(answered, addr)
            return
        leg = self.legs.get(msg.call_id)
        if leg is not None:
            if msg.to_tag and leg.state is LegState.ANSWERED and leg.stream is not None:
                self._reinvite(leg, msg, addr)
            else:
                self.send(sipmsg.response(msg, 100), addr)
            return
        if msg.to_tag:
            self.send(sipmsg.response(msg, 481), addr)
            return
        if self.calls_up() >= self.max_calls:  # not kept as an answer: no state at all
            log.warning(
                "refused call %s: %d calls already (max_calls)", msg.call_id, self.max_calls
            )
            self.send(sipmsg.response(msg, 503, to_tag=sipmsg.new_tag()), addr)
            return
        self.send(sipmsg.response(msg, 100), addr)
        if self.on_invite is None:
            self.send(sipmsg.response(msg, 486, to_tag=sipmsg.new_tag()), addr)
            return
        try:
            # no body at all is a delayed offer: we offer in the 200, the ACK answers
            offer = parse_sdp(msg.body, self.codecs) if msg.body.strip() else None
            if offer is not None:
                self.check_offer(offer)
        except MediaError as exc:
            log.warning("refused call %s: %s", msg.call_id, exc)
            resp = sipmsg.response(msg, 488, to_tag=sipmsg.new_tag(), reason=str(exc)[:80])
            self.transactions.remember_final(branch, resp)
            self.send(resp, addr)
            return
        leg = Leg(self, msg.call_id, outgoing=False)
        leg.invite = msg
        leg.peer = addr
        leg.remote_uri = sipmsg.uri_of(msg.first("From"))
        leg.remote_tag = msg.from_tag
        leg.local_uri = sipmsg.uri_of(msg.first("To"))
        contact = msg.get("Contact")
        leg.remote_target = sipmsg.uri_of(contact) if contact else leg.remote_uri
        leg.route_set = msg.get_all("Record-Route")
        leg.branch = branch
        leg.offer_in_ack = offer is None
        leg.session_expires = self.session_expires
        leg.agree_timer(msg, we_are_uac=False)
        self.legs[leg.call_id] = leg
        self.spawn(self._take_call(leg, offer))

    def calls_up(self) -> int:
        """Incoming calls not ended (what ``max_calls`` bounds; the legs we place for them
        and ended legs kept a while for retransmissions do not count)."""
        return sum(
            1 for leg in self.legs.values() if not leg.outgoing and leg.state is not LegState.ENDED
        )

    def _reinvite(self, leg: Leg, msg: SipMessage, addr: Addr) -> None:
        """A re-INVITE or UPDATE (RFC 3311) in an answered call: a session refresh, hold
        or resume. The same media, our direction answering theirs (sendonly, i.e. hold,
        is answered recvonly: we stop sending). An offer we cannot take gets 488 and the
        call goes on as it was (RFC 3261 §14.2)."""
        assert leg.stream is not None
        try:
            offer = parse_sdp(msg.body, self.codecs) if msg.body.strip() else None
            if offer is not None:
                self.check_offer(offer)
        except MediaError as exc:
            log.warning("call %s: re-INVITE refused: %s", leg.call_id, exc)
            self.send(sipmsg.response(msg, 488, reason=str(exc)[:80]), addr)
            return
        if offer is not None:
            leg.stream.direction = ANSWER_DIRECTION[offer.direction]
            leg.stream.set_remote(offer)
            log.info("call %s: re-INVITE, %s", leg.call_id, "on hold" if offer.holds else "active")
        if msg.get("Session-Expires"):
            leg.agree_timer(msg, we_are_uac=False)
        headers = [("Contact", self.contact), ("Allow", ALLOW), ("Supported", "timer")]
        headers += leg.timer_headers(we_are_uac=False)
        body = b""
        if offer is not None or msg.method == "INVITE":
            headers.append(("Content-Type", "application/sdp"))
            body = self.sdp_for(leg.stream)
        ok = sipmsg.response(msg, 200, headers=headers, body=body)
        if msg.method == "INVITE":
            self.transactions.remember_final(msg.branch, ok)
        self.send(ok, addr)
        leg.refreshed()

    async def _take_call(self, leg: Leg, offer: Sdp | None) -> None:
        try:
            await self._attach_stream(leg)
        except (MediaError, OSError) as exc:
            log.error("call %s: no RTP port: %s", leg.call_id, exc)
            leg.reject(503, "no media port")
            return
        assert leg.stream is not None
        if offer is not None:
            self.prepare_answer(leg.stream, offer)
            leg.stream.set_remote(offer)
        else:
            self.prepare_offer(leg.stream)  # a delayed offer: ours goes in the 200
        assert self.on_invite is not None
        try:
            await self.on_invite(leg)
        except Exception:
            log.exception("call %s: handler failed", leg.call_id)
            await leg.hangup()

    def _on_cancel(self, msg: SipMessage, addr: Addr) -> None:
        leg = self.legs.get(msg.call_id)
        if leg is None or leg.invite is None or leg.branch != msg.branch:
            self.send(sipmsg.response(msg, 481), addr)
            return
        self.send(sipmsg.response(msg, 200, to_tag=leg.local_tag), addr)
        if leg.state is LegState.RINGING:
            resp = sipmsg.response(leg.invite, 487, to_tag=leg.local_tag)
            self.transactions.remember_final(leg.branch, resp)
            self.send(resp, addr)
            leg.remote_hangup = True
            leg.end(487, "caller cancelled")

    # -- placing calls --------------------------------------------------------------------

    def target_uri(self, user: str) -> str:
        if user.startswith(("sip:", "sips:")):
            return user
        return f"{self.scheme}:{user}@{self.domain}"

    async def call(self, user: str, *, display: str | None = None, timeout: float = 30.0) -> Leg:
        """Call ``user`` (an extension or number at the server); returns the leg once it is
        answered. Raises :class:`SipError` with the final status (486 busy, 480/408 no
        answer, 603 declined...); on ``timeout`` the INVITE is cancelled (status 408)."""
        leg = await self.start_call(user, display=display)
        await self.wait_answer(leg, timeout)
        return leg

    async def start_call(
        self,
        user: str,
        *,
        display: str | None = None,
        caller: str | None = None,
        caller_in_from: bool = True,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Leg:
        """Send an INVITE to ``user`` and return the leg at once (see :meth:`wait_answer`).

        ``caller`` is the number to show on the called phone (a customer's, when we ring an
        agent): it goes into ``P-Asserted-Identity`` and, with ``caller_in_from``, is the
        user part of ``From`` too. The digest username is always our account's."""
        call_id = sipmsg.new_call_id(self.ip)
        leg = Leg(self, call_id, outgoing=True)
        uri = self.target_uri(user)
        leg.remote_uri = uri
        leg.remote_target = uri
        self.legs[call_id] = leg
        try:
            await self._attach_stream(leg)
        except (MediaError, OSError) as exc:
            leg.end(503, f"no RTP port: {exc}")
            raise SipError(503, f"no RTP port: {exc}") from None
        assert leg.stream is not None
        self.prepare_offer(leg.stream)
        body = self.sdp_for(leg.stream)
        name = f'"{display}" ' if display else ""
        identity: list[tuple[str, str]] = []
        from_uri = self.aor
        if caller is not None:
            if not CALLER_NUMBER.fullmatch(caller):
                raise ValueError(f"not a caller number: {caller[:40]!r}")
            asserted = f"{self.scheme}:{caller}@{self.domain}"
            identity = [("P-Asserted-Identity", f"{name}<{asserted}>")]
            if caller_in_from:
                from_uri = asserted
        leg.local_uri = from_uri
        timer = [("Session-Expires", str(self.session_expires))] if self.session_expires else []

        def build(auth: list[tuple[str, str]]) -> tuple[bytes, str]:
            leg.cseq += 1 if auth else 0
            data, branch = self.build_request(
                "INVITE",
                uri,
                call_id=call_id,
                from_=f"{name}<{from_uri}>;tag={leg.local_tag}",
                to=f"<{uri}>",
                cseq=leg.cseq,
                extra=[
                    ("Contact", self.contact),
                    ("Allow", ALLOW),
                    ("Supported", "timer"),
                    *timer,
                    *identity,
                    *extra,
                    ("Content-Type", "application/sdp"),
                    *auth,
                ],
                body=body,
            )
            leg.invite_bytes, leg.branch = data, branch
            return data, branch

        def provisional(msg: SipMessage) -> None:
            if msg.status and msg.status >= 180:
                leg.state = LegState.RINGING
                leg.ringing.set()
            if msg.body.strip() and not leg.early.is_set() and leg.stream is not None:
                try:  # early media: where the callee's ringback or announcement comes from
                    answer = parse_sdp(msg.body, self.codecs)
                    self.check_answer(leg.stream, answer)
                except MediaError as exc:
                    log.info("call %s: early media not taken: %s", call_id, exc)
                else:
                    leg.stream.set_remote(answer)
                    leg.early.set()

        async def run() -> None:
            try:
                resp = await self.authenticated(
                    "INVITE", uri, build, timeout=3600, on_provisional=provisional
                )
            except SipError as exc:
                leg.end(exc.status, exc.reason)
                return
            except asyncio.CancelledError:
                leg.end(0, "stopped")
                raise
            status = resp.status or 0
            if 200 <= status < 300:
                leg.remote_tag = resp.to_tag
                contact = resp.get("Contact")
                leg.remote_target = sipmsg.uri_of(contact) if contact else uri
                leg.route_set = list(reversed(resp.get_all("Record-Route")))
                leg.send_ack(resp)
                if leg.state is LegState.ENDED:  # cancelled meanwhile, answered anyway
                    await leg.request("BYE")
                    return
                assert leg.stream is not None
                try:
                    answer = parse_sdp(resp.body, self.codecs)
                    self.check_answer(leg.stream, answer)
                    leg.stream.set_remote(answer)
                except MediaError as exc:
                    log.warning("call %s: %s; hanging up", call_id, exc)
                    leg.end(488, f"unusable SDP answer: {exc}")
                    with contextlib.suppress(SipError):
                        await leg.request("BYE")
                    return
                leg.agree_timer(resp, we_are_uac=True)
                leg.state = LegState.ANSWERED
                leg.answered.set()
                self.start_media(leg)
            else:
                self.ack_error(leg.invite_bytes, resp)
                leg.end(status, resp.reason or sipmsg.REASONS.get(status, ""))

        leg.invite_task = self.spawn(run())
        return leg

    async def wait_answer(self, leg: Leg, timeout: float) -> None:
        answered = asyncio.ensure_future(leg.answered.wait())
        ended = asyncio.ensure_future(leg.ended.wait())
        try:
            await asyncio.wait({answered, ended}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            answered.cancel()
            ended.cancel()
        if leg.state is LegState.ANSWERED:
            return
        if leg.state is not LegState.ENDED:
            await leg.cancel()
            raise SipError(408, f"no answer within {timeout:.0f} s")
        raise SipError(leg.end_status, leg.end_reason)

    # -- SIP MESSAGE (RFC 3428) -----------------------------------------------------------

    async def send_message(self, user: str, text: str) -> str:
        """Send a text MESSAGE; returns its Call-ID. Raises :class:`SipError` if refused."""
        uri = self.target_uri(user)
        call_id = sipmsg.new_call_id(self.ip)
        tag = sipmsg.new_tag()
        body = text.encode("utf-8")
        cseq = 0

        def build(auth: list[tuple[str, str]]) -> tuple[bytes, str]:
            nonlocal cseq
            cseq += 1
            return self.build_request(
                "MESSAGE",
                uri,
                call_id=call_id,
                from_=f"<{self.aor}>;tag={tag}",
                to=f"<{uri}>",
                cseq=cseq,
                extra=[("Content-Type", "text/plain;charset=UTF-8"), *auth],
                body=body,
            )

        resp = await self.authenticated("MESSAGE", uri, build, timeout=16 * T1)
        if resp.status is None or not 200 <= resp.status < 300:
            raise SipError(resp.status or 0, resp.reason or "")
        return call_id

    # -- media ----------------------------------------------------------------------------

    async def _attach_stream(self, leg: Leg) -> None:
        last: Exception | None = None
        for _ in range(4):  # a port another program holds: try the next one
            port = self.ports.take()
            stream = RtpStream(self.ip, port)
            try:
                await stream.open()
            except OSError as exc:
                last = exc
                self.ports.give(port)  # not ours to keep: back to the pool, no leak
                continue
            leg.stream = stream
            return
        raise MediaError(f"could not bind an RTP port: {last}")

    def start_media(self, leg: Leg) -> None:
        """Send the leg's audio on the media clock and watch the call (once per leg)."""
        stream = leg.stream
        if stream is not None:
            stream.heard = time.monotonic()  # silence is counted from the answer
            if stream not in self.clock.streams:
                self.clock.streams.add(stream)
                self.spawn(self._watch(leg))

    async def _watch(self, leg: Leg) -> None:
        """Hang up an answered leg that has lasted ``max_call_seconds``, whose far end has
        sent no RTP for ``rtp_timeout`` seconds (it vanished without a BYE), or whose
        session timer ran out unrefreshed (RFC 4028 §10); refresh the session when the
        timer is ours to refresh. A call without end would keep its bridge and grow its
        recording forever."""
        started = time.monotonic()
        limits = [t / 4 for t in (self.max_call_seconds, self.rtp_timeout) if t > 0]
        step = min(1.0, *limits) if limits else 1.0
        refreshing: asyncio.Task[None] | None = None
        while leg.state is not LegState.ENDED:
            await asyncio.sleep(step)
            now = time.monotonic()
            stream = leg.stream
            expires = leg.session_expires
            since = now - leg.refreshed_at
            if self.max_call_seconds > 0 and now - started >= self.max_call_seconds:
                leg.cut_off = f"longer than max_call_seconds ({self.max_call_seconds:g} s)"
            elif (
                self.rtp_timeout > 0
                and leg.state is LegState.ANSWERED  # callers send nothing before that
                and stream is not None
                and now - stream.heard >= self.rtp_timeout
            ):
                leg.cut_off = f"no RTP for {self.rtp_timeout:g} s"
            elif expires and not leg.we_refresh and since >= expires - min(32, expires / 3):
                leg.cut_off = f"session timer expired (no refresh within {expires} s)"
            elif expires and leg.we_refresh and since >= expires / 2:
                if refreshing is None or refreshing.done():
                    refreshing = self.spawn(self._refresh(leg))
                continue
            else:
                continue
            log.warning("call %s: hanging up: %s", leg.call_id, leg.cut_off)
            await leg.hangup()
            return

    async def _refresh(self, leg: Leg) -> None:
        """Refresh the session by re-INVITE; a dialog the peer no longer knows ends."""
        try:
            await leg.reinvite()
        except SipError as exc:
            if exc.status in (408, 481) or exc.status == 0:
                leg.cut_off = f"session refresh failed: {exc}"
                log.warning("call %s: hanging up: %s", leg.call_id, leg.cut_off)
                await leg.hangup()
            else:  # 491 glare and such: try again at the next tick
                log.info("call %s: session refresh answered %s", leg.call_id, exc)
                leg.refreshed_at += min(5.0, leg.session_expires / 10)

    def release(self, leg: Leg) -> None:
        """Free a leg's RTP port and forget it (a finished leg)."""
        stream = leg.stream
        if stream is not None:
            self.clock.streams.discard(stream)
            stream.close()
            self.ports.give(stream.port)
            leg.stream = None
        if self.legs.get(leg.call_id) is leg:
            loop = asyncio.get_running_loop()
            # keep it a little for retransmitted BYE/ACK, then forget
            loop.call_later(32 * T1, self._forget, leg)

    def _forget(self, leg: Leg) -> None:
        if self.legs.get(leg.call_id) is leg:
            del self.legs[leg.call_id]
