"""The SIP user agent: UDP transport, transactions, registration, call legs.

Everything is sent to the configured server (registrar and outbound proxy in one, as in
pyVoIP). What this layer fixes in pyVoIP 1.6.8, each with a test in
``plugins/sip/tests/test_sip_adapter.py``:

- responses are matched to their transaction (branch + method), so an OPTIONS or a NOTIFY
  arriving while an INVITE or REGISTER waits no longer breaks it (#46, #126, #315);
- OPTIONS, NOTIFY, INFO and MESSAGE are answered (INFO ``dtmf-relay`` digits are kept);
  other unknown methods get ``501``;
- a malformed or oversized datagram is answered ``400``/``513`` when it can be, else
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
import enum
import hashlib
import ipaddress
import logging
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from switchboard import Tasks
from switchboard_sip import message as sipmsg
from switchboard_sip.media import (
    MediaClock,
    MediaError,
    PortPool,
    RtpStream,
    Sdp,
    make_sdp,
    parse_sdp,
)
from switchboard_sip.message import SipMessage, SipParseError

log = logging.getLogger("switchboard.sip")

T1 = 0.5
T2 = 4.0
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, MESSAGE"


class SipError(Exception):
    """A SIP request that did not succeed: ``status`` is the final response code (0 when
    there was none, i.e. a timeout), ``reason`` the reason phrase or our explanation,
    without the code (the text is ``"486 Busy Here"``)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}" if status else reason)
        self.status = status
        self.reason = reason


class RegistrationError(SipError):
    pass


#: What may stand as the user part of a caller's SIP URI (a number, ``+`` and all).
CALLER_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")

REGISTER_HINTS = {
    # our credentials were refused after a challenge
    401: ": wrong username or password?",
    407: ": wrong username or password?",
    # refused outright: Kamailio says 403 when the AOR's domain is not its own, too
    403: ": check username, password and domain (registering {aor})",
}


def digest(challenge: str, method: str, uri: str, username: str, password: str, nc: int = 1) -> str:
    """The Authorization value answering a ``Digest`` challenge (RFC 2617, MD5, qop=auth)."""
    fields: dict[str, str] = {}
    for part in sipmsg.split_commas(challenge.split(" ", 1)[1] if " " in challenge else ""):
        key, _, value = part.partition("=")
        fields[key.strip().lower()] = value.strip().strip('"')
    realm = fields.get("realm", "")
    nonce = fields.get("nonce", "")
    algorithm = fields.get("algorithm", "MD5")
    if algorithm.upper() not in ("MD5",):
        raise SipError(0, f"unsupported digest algorithm {algorithm}")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in [q.strip() for q in fields.get("qop", "").split(",")]:
        cnonce = secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        resp = md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={nc_text}", f'cnonce="{cnonce}"']
    else:
        resp = md5(f"{ha1}:{nonce}:{ha2}")
    parts += [f'response="{resp}"', "algorithm=MD5"]
    if "opaque" in fields:
        parts.append(f'opaque="{fields["opaque"]}"')
    return "Digest " + ", ".join(parts)


class LegState(enum.StrEnum):
    CALLING = "calling"  # outgoing INVITE sent
    RINGING = "ringing"  # incoming INVITE, or 18x received
    ANSWERED = "answered"
    ENDED = "ended"


class Leg:
    """One call leg (a dialog) with its RTP stream."""

    def __init__(self, ua: UserAgent, call_id: str, outgoing: bool) -> None:
        self.ua = ua
        self.call_id = call_id
        self.outgoing = outgoing
        self.state = LegState.CALLING if outgoing else LegState.RINGING
        self.local_tag = sipmsg.new_tag()
        self.remote_tag = ""
        self.local_uri = ""
        self.remote_uri = ""
        self.remote_target = ""
        self.route_set: list[str] = []
        self.cseq = 1
        self.invite: SipMessage | None = None  # the INVITE received (incoming legs)
        self.ack: SipMessage | None = None  # the ACK of our 200 (incoming legs)
        # an INVITE without SDP (delayed offer): our 200 offers, the ACK answers
        self.offer_in_ack = False
        self.peer: tuple[str, int] | None = None  # where its responses go (incoming legs)
        self.invite_bytes = b""  # the INVITE sent (outgoing legs)
        self.branch = ""
        self.stream: RtpStream | None = None
        self.ended = asyncio.Event()
        self.answered = asyncio.Event()
        self.end_status = 0  # final SIP status when it never got answered
        self.end_reason = ""
        self.remote_hangup = False
        self.cut_off: str | None = None  # why we hung it up (max length, no RTP, no SDP)
        self.ringing = asyncio.Event()
        self._acked = asyncio.Event()
        self._final: asyncio.Future[SipMessage] | None = None
        self.info_digits: asyncio.Queue[str] = asyncio.Queue()

    @property
    def user(self) -> str | None:
        return sipmsg.user_of(self.remote_uri)

    @property
    def caller_name(self) -> str | None:
        if self.invite is None:
            return None
        return sipmsg.display_name(self.invite.first("From"))

    # -- incoming -------------------------------------------------------------------------

    def send_ringing(self) -> None:
        assert self.invite is not None
        self.ua.send(sipmsg.response(self.invite, 180, to_tag=self.local_tag), self.peer)

    async def answer(self) -> None:
        """Answer an incoming call: 200 OK with our SDP, retransmitted until the ACK."""
        assert self.invite is not None
        assert self.stream is not None
        if self.state is not LegState.RINGING:
            raise SipError(0, f"cannot answer a call that is {self.state}")
        body = make_sdp(self.ua.ip, self.stream.port, self.ua.codecs, self.ua.session_id())
        ok = sipmsg.response(
            self.invite,
            200,
            to_tag=self.local_tag,
            headers=[
                ("Contact", self.ua.contact),
                ("Allow", ALLOW),
                ("Content-Type", "application/sdp"),
            ],
            body=body,
        )
        self.state = LegState.ANSWERED
        self.ua.remember_final(self.invite.branch, ok)
        self.answered.set()
        self.ua.start_media(self)
        self.ua.send(ok, self.peer)
        interval = T1
        waited = 0.0
        while not self._acked.is_set() and not self.ended.is_set() and waited < 64 * T1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), interval)
            if not self._acked.is_set():
                waited += interval
                interval = min(interval * 2, T2)
                self.ua.send(ok, self.peer)
        if not self._acked.is_set() and not self.ended.is_set():
            log.warning("call %s: no ACK for our 200 OK; hanging up", self.call_id)
            await self.hangup()
        elif self.offer_in_ack and not self.ended.is_set():
            # delayed offer (RFC 3264 §5, RFC 3261 §13.2.1): the ACK carries the answer;
            # without a usable one there is no media, so the call ends (BYE)
            try:
                self.stream.set_remote(
                    parse_sdp(self.ack.body if self.ack else b"", self.ua.codecs)
                )
            except MediaError as exc:
                log.warning(
                    "call %s: the ACK has no usable SDP answer (%s); hanging up", self.call_id, exc
                )
                self.cut_off = f"no SDP answer in the ACK: {exc}"
                await self.hangup()

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        """Refuse an incoming call that is still ringing."""
        assert self.invite is not None
        if self.state is not LegState.RINGING:
            return
        resp = sipmsg.response(self.invite, status, to_tag=self.local_tag, reason=reason)
        self.ua.remember_final(self.invite.branch, resp)
        self.ua.send(resp, self.peer)
        self._end(status, reason or sipmsg.REASONS.get(status, ""))

    # -- both -----------------------------------------------------------------------------

    async def hangup(self) -> None:
        """End the leg however far it got: BYE, CANCEL, or a final error response."""
        if self.state is LegState.ENDED:
            return
        if self.state is LegState.ANSWERED:
            self._end(0, "hung up")
            with contextlib.suppress(SipError):
                await self.ua.in_dialog(self, "BYE", timeout=4 * T1 * 8)
        elif self.outgoing:
            await self.ua.cancel(self)
        else:
            self.reject(480)

    def _end(self, status: int, reason: str) -> None:
        if self.state is LegState.ENDED:
            return
        self.state = LegState.ENDED
        self.end_status = status
        self.end_reason = reason
        self.ended.set()
        self.ua.release(self)


class UserAgent(asyncio.DatagramProtocol):
    """A SIP UA on one UDP port: registers, takes and places calls, exchanges MESSAGEs."""

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
        trusted_networks: Iterable[str] = (),
        max_calls: int = 200,
        max_call_seconds: float = 14_400.0,
        rtp_timeout: float = 60.0,
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
        # the AOR's domain: the server, with its port when that is not the default (a
        # registrar on another port takes an AOR without it for someone else's)
        host = f"[{server}]" if ":" in server and not server.startswith("[") else server
        self.domain = domain or (host if port == 5060 else f"{host}:{port}")
        self.codecs = codecs
        self.expires = expires
        self.max_message_size = max_message_size
        self.on_invite = on_invite
        self.on_message = on_message
        self.ports = PortPool(*rtp_ports)
        self.clock = MediaClock()
        self.transport: asyncio.DatagramTransport | None = None
        self.legs: dict[str, Leg] = {}
        self.sent_final: dict[str, bytes] = {}  # server INVITE branch -> final response
        self._pending: dict[tuple[str, str], asyncio.Future[SipMessage]] = {}
        self._provisional: dict[tuple[str, str], Callable[[SipMessage], None]] = {}
        self._tasks = Tasks(log)
        self._session = secrets.randbelow(1 << 30)
        self.registered = asyncio.Event()
        self.register_error: str | None = "not registered yet"
        self.malformed = 0
        self._reg_call_id = sipmsg.new_call_id(ip)  # one registration dialog, kept
        self._reg_tag = sipmsg.new_tag()
        self._reg_cseq = 0

    # -- life cycle -----------------------------------------------------------------------

    @property
    def contact(self) -> str:
        return f"<sip:{self.username}@{self.ip}:{self.local_port}>"

    @property
    def aor(self) -> str:
        return f"sip:{self.username}@{self.domain}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.server, self.port, type=socket.SOCK_DGRAM)
        self.trusted_ips = {str(info[4][0]) for info in infos}
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.ip, self.local_port)
        )
        if self.local_port == 0:
            self.local_port = self.transport.get_extra_info("sockname")[1]
        self.clock.start()

    async def stop(self) -> None:
        legs = list(self.legs.values())
        await asyncio.gather(
            *(asyncio.wait_for(leg.hangup(), 2) for leg in legs), return_exceptions=True
        )
        for leg in legs:
            leg._end(0, "stopped")
        if self.registered.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.register(expires=0), 2)
        await self._tasks.cancel_all()
        await self.clock.stop()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
            await self._closed  # the socket is closed (port free) once this is done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name="sip-ua")

    def session_id(self) -> int:
        self._session += 1
        return self._session

    # -- transport ------------------------------------------------------------------------

    def send(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr or (self.server, self.port))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n\x00 "):
            return  # keep-alive
        try:
            msg = sipmsg.parse(data, self.max_message_size)
        except SipParseError as exc:
            self.malformed += 1
            status = 513 if "exceeds" in str(exc) else 400
            log.warning(
                "dropped a malformed SIP datagram from %s:%s: %s (starts %r)",
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
        if msg.is_request:  # responses follow the request's Via, not our registrar
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

    def _refuse(self, msg: SipMessage, addr: tuple[str, int]) -> None:
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

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket: %s", exc)

    # -- client transactions --------------------------------------------------------------

    def _on_response(self, msg: SipMessage) -> None:
        key = (msg.branch, msg.cseq[1])
        if msg.status is not None and msg.status < 200:
            handler = self._provisional.get(key)
            if handler is not None:
                handler(msg)
            return
        fut = self._pending.get(key)
        if fut is not None and not fut.done():
            fut.set_result(msg)
        elif msg.cseq[1] == "INVITE" and msg.status is not None and msg.status < 300:
            # a retransmitted 2xx: ACK it again
            leg = self.legs.get(msg.call_id)
            if leg is not None:
                self._send_ack(leg, msg)

    async def transaction(
        self,
        data: bytes,
        branch: str,
        method: str,
        *,
        timeout: float = 32 * T1,
        on_provisional: Callable[[SipMessage], None] | None = None,
    ) -> SipMessage:
        """Send a request and wait for its final response, retransmitting over UDP (until
        a provisional response for INVITE)."""
        key = (branch, method)
        fut: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        got_provisional = False

        def provisional(msg: SipMessage) -> None:
            nonlocal got_provisional
            got_provisional = True
            if on_provisional is not None:
                on_provisional(msg)

        self._provisional[key] = provisional
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = T1
        try:
            self.send(data)
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise SipError(408, f"no final response to {method} within {timeout:.0f} s")
                wait = left if (got_provisional and method == "INVITE") else min(interval, left)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), wait)
                except TimeoutError:
                    if not (got_provisional and method == "INVITE"):
                        interval = min(interval * 2, T2)
                        self.send(data)
        finally:
            self._pending.pop(key, None)
            self._provisional.pop(key, None)

    def _request(
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
        branch = branch or sipmsg.new_branch()
        headers = [
            ("Via", f"SIP/2.0/UDP {self.ip}:{self.local_port};branch={branch};rport"),
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

    async def _authenticated(
        self,
        method: str,
        uri: str,
        build: Callable[[list[tuple[str, str]]], tuple[bytes, str]],
        **kwargs: Any,
    ) -> tuple[SipMessage, bytes, str]:
        """Send a request; answer one 401/407 digest challenge. Returns the final response,
        and the bytes and branch of the request it answers."""
        data, branch = build([])
        resp = await self.transaction(data, branch, method, **kwargs)
        if resp.status in (401, 407):
            header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            answer_to = "Authorization" if resp.status == 401 else "Proxy-Authorization"
            challenge = resp.get(header)
            if challenge is None:
                return resp, data, branch
            if method == "INVITE":
                self._ack_error(data, resp)
            auth = digest(challenge, method, uri, self.username, self.password)
            data, branch = build([(answer_to, auth)])
            resp = await self.transaction(data, branch, method, **kwargs)
        return resp, data, branch

    # -- registration ---------------------------------------------------------------------

    async def register(self, expires: int | None = None) -> int:
        """One REGISTER (with digest auth); returns the expiry the registrar granted."""
        expires = self.expires if expires is None else expires
        call_id, from_tag = self._reg_call_id, self._reg_tag
        uri = f"sip:{self.domain}"

        def build(auth: list[tuple[str, str]]) -> tuple[bytes, str]:
            self._reg_cseq += 1
            return self._request(
                "REGISTER",
                uri,
                call_id=call_id,
                from_=f"<{self.aor}>;tag={from_tag}",
                to=f"<{self.aor}>",
                cseq=self._reg_cseq,
                extra=[
                    ("Contact", self.contact),
                    ("Expires", str(expires)),
                    ("Allow", ALLOW),
                    *auth,
                ],
            )

        resp, _, _ = await self._authenticated("REGISTER", uri, build, timeout=8 * T1)
        if resp.status != 200:
            hint = REGISTER_HINTS.get(resp.status or 0, "").format(aor=self.aor)
            raise RegistrationError(resp.status or 0, f"{resp.reason}{hint}")
        granted = expires
        for c in resp.get_all("Contact"):
            if f":{self.local_port}" in sipmsg.uri_of(c):
                value = sipmsg.param(c, "expires")
                if value and value.isdigit():
                    granted = int(value)
        if (
            expires
            and resp.get(
                "Expires",
            )
            and not granted
        ):
            granted = int(resp.first("Expires"))
        if expires:
            self.registered.set()
            self.register_error = None
        else:
            self.registered.clear()
        return granted

    async def keep_registered(self, on_lost: Callable[[str], None]) -> None:
        """Re-register before expiry (at 80 % of the granted time) for as long as running;
        calls ``on_lost`` with the reason when a refresh fails."""
        granted = self.expires
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(1.0, granted * 0.8))
            started = loop.time()
            try:
                granted = await self.register()
            except (SipError, OSError) as exc:
                self.registered.clear()
                self.register_error = str(exc)
                on_lost(f"registration refresh failed: {exc}")
                return
            log.debug("re-registered in %.3f s for %d s", loop.time() - started, granted)

    # -- requests to us -------------------------------------------------------------------

    def _on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        method = msg.method or ""
        if method == "INVITE":
            self._on_invite(msg, addr)
        elif method == "ACK":
            leg = self.legs.get(msg.call_id)
            if leg is not None and not leg._acked.is_set():
                leg.ack = msg
                leg._acked.set()
        elif method == "CANCEL":
            self._on_cancel(msg, addr)
        elif method == "BYE":
            leg = self.legs.get(msg.call_id)
            if leg is None:
                self.send(sipmsg.response(msg, 481), addr)
                return
            self.send(sipmsg.response(msg, 200), addr)
            leg.remote_hangup = True
            leg._end(0, "remote hung up")
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
        elif method == "NOTIFY":
            self.send(sipmsg.response(msg, 200), addr)
        elif method == "MESSAGE":
            if self.on_message is None:
                self.send(sipmsg.response(msg, 405, headers=[("Allow", ALLOW)]), addr)
            else:
                self.spawn(self._message(msg, addr))
        else:
            self.send(sipmsg.response(msg, 501, headers=[("Allow", ALLOW)]), addr)

    async def _message(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        assert self.on_message is not None
        try:
            status = await self.on_message(msg)
        except Exception:
            log.exception("MESSAGE handler failed")
            status = 500
        self.send(sipmsg.response(msg, status, to_tag=sipmsg.new_tag()), addr)

    def _on_invite(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        branch = msg.branch
        if branch in self.sent_final:  # a retransmission we already answered
            self.send(self.sent_final[branch], addr)
            return
        leg = self.legs.get(msg.call_id)
        if leg is not None:
            if msg.to_tag and leg.state is LegState.ANSWERED and leg.stream is not None:
                # re-INVITE (session refresh, hold): keep our media, answer with it
                body = make_sdp(self.ip, leg.stream.port, self.codecs, self.session_id())
                with contextlib.suppress(MediaError):
                    leg.stream.set_remote(parse_sdp(msg.body, self.codecs))
                self.send(
                    sipmsg.response(
                        msg,
                        200,
                        headers=[("Contact", self.contact), ("Content-Type", "application/sdp")],
                        body=body,
                    ),
                    addr,
                )
            else:
                self.send(sipmsg.response(msg, 100), addr)
            return
        if msg.to_tag:
            self.send(sipmsg.response(msg, 481), addr)
            return
        if len(self.legs) >= self.max_calls:  # not kept in sent_final: no state at all
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
        except MediaError as exc:
            log.warning("refused call %s: %s", msg.call_id, exc)
            resp = sipmsg.response(msg, 488, to_tag=sipmsg.new_tag(), reason=str(exc)[:80])
            self.remember_final(branch, resp)
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
        self.legs[leg.call_id] = leg
        self.spawn(self._take_call(leg, offer))

    async def _take_call(self, leg: Leg, offer: Sdp | None) -> None:
        try:
            await self._attach_stream(leg)
        except (MediaError, OSError) as exc:
            log.error("call %s: no RTP port: %s", leg.call_id, exc)
            leg.reject(503, "no media port")
            return
        assert leg.stream is not None
        if offer is not None:
            leg.stream.set_remote(offer)
        assert self.on_invite is not None
        try:
            await self.on_invite(leg)
        except Exception:
            log.exception("call %s: handler failed", leg.call_id)
            await leg.hangup()

    def _on_cancel(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        leg = self.legs.get(msg.call_id)
        if leg is None or leg.invite is None or leg.branch != msg.branch:
            self.send(sipmsg.response(msg, 481), addr)
            return
        self.send(sipmsg.response(msg, 200, to_tag=leg.local_tag), addr)
        if leg.state is LegState.RINGING:
            resp = sipmsg.response(leg.invite, 487, to_tag=leg.local_tag)
            self.remember_final(leg.branch, resp)
            self.send(resp, addr)
            leg.remote_hangup = True
            leg._end(487, "caller cancelled")

    # -- placing calls --------------------------------------------------------------------

    def target_uri(self, user: str) -> str:
        return user if user.startswith("sip:") else f"sip:{user}@{self.domain}"

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
            leg._end(503, f"no RTP port: {exc}")
            raise SipError(503, f"no RTP port: {exc}") from None
        assert leg.stream is not None
        body = make_sdp(self.ip, leg.stream.port, self.codecs, self.session_id())
        name = f'"{display}" ' if display else ""
        identity: list[tuple[str, str]] = []
        from_uri = self.aor
        if caller is not None:
            if not CALLER_NUMBER.fullmatch(caller):
                raise ValueError(f"not a caller number: {caller[:40]!r}")
            asserted = f"sip:{caller}@{self.domain}"
            identity = [("P-Asserted-Identity", f"{name}<{asserted}>")]
            if caller_in_from:
                from_uri = asserted
        leg.local_uri = from_uri

        def build(auth: list[tuple[str, str]]) -> tuple[bytes, str]:
            leg.cseq += 1 if auth else 0
            data, branch = self._request(
                "INVITE",
                uri,
                call_id=call_id,
                from_=f"{name}<{from_uri}>;tag={leg.local_tag}",
                to=f"<{uri}>",
                cseq=leg.cseq,
                extra=[
                    ("Contact", self.contact),
                    ("Allow", ALLOW),
                    *identity,
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

        async def run() -> None:
            try:
                resp, _, _ = await self._authenticated(
                    "INVITE", uri, build, timeout=3600, on_provisional=provisional
                )
            except SipError as exc:
                leg._end(exc.status, exc.reason)
                return
            except asyncio.CancelledError:
                leg._end(0, "stopped")
                raise
            status = resp.status or 0
            if 200 <= status < 300:
                leg.remote_tag = resp.to_tag
                contact = resp.get("Contact")
                leg.remote_target = sipmsg.uri_of(contact) if contact else uri
                leg.route_set = list(reversed(resp.get_all("Record-Route")))
                self._send_ack(leg, resp)
                if leg.state is LegState.ENDED:  # cancelled meanwhile, answered anyway
                    await self.in_dialog(leg, "BYE")
                    return
                try:
                    leg.stream.set_remote(parse_sdp(resp.body, self.codecs))  # type: ignore[union-attr]
                except MediaError as exc:
                    log.warning("call %s: %s; hanging up", call_id, exc)
                    leg.state = LegState.ANSWERED
                    await leg.hangup()
                    return
                leg.state = LegState.ANSWERED
                leg.answered.set()
                self.start_media(leg)
            else:
                self._ack_error(leg.invite_bytes, resp)
                leg._end(status, resp.reason or sipmsg.REASONS.get(status, ""))

        leg._invite_task = self.spawn(run())  # type: ignore[attr-defined]
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
            await self.cancel(leg)
            raise SipError(408, f"no answer within {timeout:.0f} s")
        raise SipError(leg.end_status, leg.end_reason)

    async def cancel(self, leg: Leg) -> None:
        """CANCEL an outgoing INVITE that is not answered yet."""
        if leg.state in (LegState.ANSWERED, LegState.ENDED) or not leg.invite_bytes:
            return
        invite = sipmsg.parse(leg.invite_bytes)
        headers = [
            ("Via", invite.get_all("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.first("From")),
            ("To", invite.first("To")),
            ("Call-ID", leg.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
        ]
        data = sipmsg.serialize(f"CANCEL {invite.uri} SIP/2.0", headers)
        leg._end(487, "cancelled")
        with contextlib.suppress(SipError):
            await self.transaction(data, leg.branch, "CANCEL", timeout=8 * T1)

    def _send_ack(self, leg: Leg, resp: SipMessage) -> None:
        """ACK for a 2xx: a new transaction along the route set to the remote target."""
        data, _ = self._request(
            "ACK",
            leg.remote_target,
            call_id=leg.call_id,
            from_=f"<{leg.local_uri}>;tag={leg.local_tag}",
            to=resp.first("To"),
            cseq=resp.cseq[0],
            routes=leg.route_set,
        )
        self.send(data)

    def _ack_error(self, invite_bytes: bytes, resp: SipMessage) -> None:
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

    async def in_dialog(self, leg: Leg, method: str, timeout: float = 32 * T1) -> SipMessage:
        """A request inside an established dialog (BYE...), along its route set."""
        leg.cseq += 1
        if leg.outgoing:
            from_, to = f"<{leg.local_uri}>;tag={leg.local_tag}", f"<{leg.remote_uri}>"
        else:
            assert leg.invite is not None
            from_ = f"<{leg.local_uri}>;tag={leg.local_tag}"
            to = f"{leg.invite.first('From')}"
            leg.cseq = max(leg.cseq, 1)
        if leg.remote_tag and "tag=" not in to:
            to = f"{to};tag={leg.remote_tag}"
        data, branch = self._request(
            method,
            leg.remote_target,
            call_id=leg.call_id,
            from_=from_,
            to=to,
            cseq=leg.cseq,
            routes=leg.route_set,
        )
        resp = await self.transaction(data, branch, method, timeout=timeout)
        if resp.status != 200:
            raise SipError(resp.status or 0, f"{resp.reason} (to {method})")
        return resp

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
            return self._request(
                "MESSAGE",
                uri,
                call_id=call_id,
                from_=f"<{self.aor}>;tag={tag}",
                to=f"<{uri}>",
                cseq=cseq,
                extra=[("Content-Type", "text/plain;charset=UTF-8"), *auth],
                body=body,
            )

        resp, _, _ = await self._authenticated("MESSAGE", uri, build, timeout=16 * T1)
        if resp.status is None or not 200 <= resp.status < 300:
            raise SipError(resp.status or 0, resp.reason or "")
        return call_id

    # -- media ----------------------------------------------------------------------------

    def remember_final(self, branch: str, response: bytes) -> None:
        """Keep the final response to a server INVITE for its retransmissions, for as long
        as they may come (64*T1, RFC 3261 Timer H), then forget it."""
        self.sent_final[branch] = response
        asyncio.get_running_loop().call_later(64 * T1, self._forget_final, branch, response)

    def _forget_final(self, branch: str, response: bytes) -> None:
        if self.sent_final.get(branch) is response:
            del self.sent_final[branch]

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
        if leg.stream is not None:
            leg.stream.heard = time.monotonic()  # silence is counted from the answer
            self.clock.streams.add(leg.stream)
            if self.max_call_seconds > 0 or self.rtp_timeout > 0:
                self.spawn(self._watch(leg))

    async def _watch(self, leg: Leg) -> None:
        """Hang up an answered leg that has lasted ``max_call_seconds``, or whose far end
        has sent no RTP for ``rtp_timeout`` seconds (it vanished without a BYE): a call
        without end would keep its bridge and grow its recording forever."""
        started = time.monotonic()
        step = min(1.0, *(t / 4 for t in (self.max_call_seconds, self.rtp_timeout) if t > 0))
        while leg.state is not LegState.ENDED:
            await asyncio.sleep(step)
            now = time.monotonic()
            stream = leg.stream
            if self.max_call_seconds > 0 and now - started >= self.max_call_seconds:
                leg.cut_off = f"longer than max_call_seconds ({self.max_call_seconds:g} s)"
            elif (
                self.rtp_timeout > 0
                and stream is not None
                and now - stream.heard >= self.rtp_timeout
            ):
                leg.cut_off = f"no RTP for {self.rtp_timeout:g} s"
            else:
                continue
            log.warning("call %s: hanging up: %s", leg.call_id, leg.cut_off)
            await leg.hangup()
            return

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
