"""The SIP channel: registration, inbound calls with screen pop, click-to-call, recording."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import phonenumbers

from switchboard import (
    Address,
    Agent,
    CallRecord,
    ChannelContext,
    Contact,
    Direction,
    Disposition,
    InboundMessage,
    InvalidInbound,
    OutboundMessage,
    PermanentSendError,
    Receipt,
    SupervisionMode,
    Tasks,
    TransientSendError,
)
from switchboard_sip import message as sipmsg
from switchboard_sip._compat import audioop
from switchboard_sip.locate import locate
from switchboard_sip.media import (
    CODECS,
    Loop,
    MonoRecorder,
    Recorder,
    default_music_on_hold,
    load_prompt,
)
from switchboard_sip.message import SipMessage
from switchboard_sip.transport import client_context, server_context
from switchboard_sip.ua import CALLER_NUMBER, Leg, LegState, SipError, UserAgent
from switchboard_sip.webrtc import BrowserLeg

#: a leg to an agent: their desk phone's (SIP) or their console softphone's (WebRTC)
AgentLeg = Leg | BrowserLeg

log = logging.getLogger("switchboard.sip")

BUSY = {486, 600, 603}
NO_ANSWER = {408, 480, 487}


def _codecs(_: Any, attribute: Any, value: list[str]) -> None:
    unknown = [c for c in value if c.upper() not in CODECS]
    if unknown or not value:
        raise ValueError(f"codecs must be a non-empty list of {sorted(CODECS)}, got {value}")


TRANSPORTS = ("udp", "tcp", "tls", "auto")
DIAL_FORMATS = ("e164", "e164_digits", "national")
TRUNK_NAME = re.compile(r"[a-z0-9_-]{1,32}")
PREFIX = re.compile(r"\+[0-9]{1,15}")


@attrs.define
class TrunkSettings:
    """``[[plugins.sip.trunks]]``: another account or trunk beside the main one (a SIP
    provider for calls out and in); what it does not set is taken from ``[plugins.sip]``
    (local address, RTP ports, codecs, NAT, limits)."""

    name: str = attrs.field()
    server: str = attrs.field()
    username: str = ""
    password: str = attrs.field(default="", repr=False)
    port: int = 0
    domain: str | None = None
    transport: str = attrs.field(default="udp", validator=attrs.validators.in_(TRANSPORTS))
    local_port: int = 5070
    register: bool = True
    expires: int = 300
    # the number shown to the called party on calls out through this trunk (From and
    # P-Asserted-Identity), E.164
    caller_id: str | None = attrs.field(default=None)
    dial_format: str = attrs.field(default="e164", validator=attrs.validators.in_(DIAL_FORMATS))
    # click-to-call numbers starting with one of these (E.164, "+49") go out this way
    prefixes: list[str] = attrs.field(factory=list)
    trusted_networks: list[str] = attrs.field(factory=list)
    srtp: str = attrs.field(
        default="off", validator=attrs.validators.in_(("off", "offer", "require"))
    )
    tls_verify: bool = True
    tls_ca_file: str | None = None
    tls_server_name: str | None = None

    @name.validator
    def _name(self, _: Any, value: str) -> None:
        if not TRUNK_NAME.fullmatch(value):
            raise ValueError(f"trunk name must be 1-32 of a-z 0-9 _ -, got {value!r}")

    @caller_id.validator
    def _caller_id(self, _: Any, value: str | None) -> None:
        if value is not None and not (PREFIX.fullmatch(value) and len(value) >= 8):
            raise ValueError(f"caller_id must be an E.164 number (+12025550100), got {value!r}")

    @prefixes.validator
    def _prefixes(self, _: Any, value: list[str]) -> None:
        bad = [p for p in value if not PREFIX.fullmatch(p)]
        if bad:
            raise ValueError(f'prefixes must be + and digits ("+49"), got {bad}')


@attrs.define
class SipSettings:
    """``[plugins.sip]``: the account at the PBX or SIP provider, and call handling."""

    server: str
    username: str
    password: str = attrs.field(default="", repr=False)
    port: int = 0  # 0: from SRV records, else the transport's default, 5060 (5061 for TLS)
    domain: str | None = None
    local_ip: str = "127.0.0.1"
    local_port: int = 5060
    # "auto": chosen by the server's NAPTR/SRV records (RFC 3263)
    transport: str = attrs.field(default="udp", validator=attrs.validators.in_(TRANSPORTS))
    # DNS servers for NAPTR/SRV/A lookups ("ip" or "ip:port"); none: the system's
    dns_servers: list[str] = attrs.field(factory=list)
    # TLS: the server's certificate is checked against the system's CAs (or tls_ca_file)
    # and its name (tls_server_name, else server) unless tls_verify is off; tls_cert_file
    # and tls_key_file are our certificate, shown to the server when it asks for one and
    # to peers that open TLS connections to local_port
    tls_verify: bool = True
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_server_name: str | None = None
    sips: bool = False  # sips: URIs (TLS on every hop) in our AOR, Contact and requests
    # behind NAT: the address (and port) the far end must use for us, in Via, Contact, SDP
    public_ip: str | None = None
    public_port: int | None = None
    # seconds between CRLFCRLF keep-alives to the server; None: 25 on TCP/TLS or behind
    # NAT (a public_ip set, or one learned from the registrar), else off; 0: off
    keepalive: float | None = None
    # learn our public address from the registrar's received/rport (RFC 3581) and register
    # that in Contact and SDP when it differs from local_ip (UDP; public_ip overrides)
    nat_discovery: bool = True
    # False for a trunk that authenticates by address: no REGISTER, calls to and from it
    register: bool = True
    # SRTP with SDES keys (RFC 4568): "off"; "offer" (RTP/AVP with a=crypto: encrypted when
    # the peer takes it, plain otherwise); "require" (RTP/SAVP: plain calls refused)
    srtp: str = attrs.field(
        default="off", validator=attrs.validators.in_(("off", "offer", "require"))
    )
    # a WAV played to a party the other side put on hold (None: a soft chime)
    music_on_hold: str | None = None
    # how the API's transfer to a number is done: "bridge" (we call it and stay in the
    # call, recording) or "refer" (the customer's side is asked to call it, REFER, and we
    # leave the call: no second leg, the recording ends there)
    transfer_out: str = attrs.field(
        default="bridge", validator=attrs.validators.in_(("bridge", "refer"))
    )
    # STUN/TURN servers for the console softphone's WebRTC legs, as the browsers'
    # RTCIceServer: {urls = "turn:host:3478", username = "...", credential = "..."}; none
    # needed on a LAN (docs/softphone.md)
    ice_servers: list[dict[str, Any]] = attrs.field(factory=list)
    # a browser that vanishes mid-call (tab closed, network gone): "hangup" ends the call;
    # "phone" rings the agent's desk phone (their extension) and goes on there
    browser_lost: str = attrs.field(
        default="hangup", validator=attrs.validators.in_(("hangup", "phone"))
    )
    # 20 ms packets a browser leg's receiver holds before passing audio on (1..8): fewer is
    # less delay, more is smoother over a jittery network
    browser_jitter_frames: int = attrs.field(
        default=1, validator=[attrs.validators.ge(1), attrs.validators.le(8)]
    )
    # RFC 4028 session timer asked for and granted (seconds; 0: none of ours)
    session_expires: int = attrs.field(default=1800)
    # more accounts or trunks: calls in from each, calls out by number prefix
    trunks: list[TrunkSettings] = attrs.field(factory=list)

    @trunks.validator
    def _trunks(self, _: Any, value: list[TrunkSettings]) -> None:
        names = [t.name for t in value]
        if len(set(names)) != len(names):
            raise ValueError(f"trunk names must differ, got {names}")
        ports = [self.local_port, *(t.local_port for t in value)]
        if len(set(ports)) != len(ports) and 0 not in ports:
            raise ValueError(f"each trunk needs a local_port of its own, got {ports}")

    rtp_port_low: int = 10000
    rtp_port_high: int = attrs.field(default=20000)
    codecs: list[str] = attrs.field(factory=lambda: ["PCMU", "PCMA"], validator=_codecs)
    expires: int = 300
    ring_agents: list[str] = attrs.Factory(list)
    ring_timeout: float = 30.0
    dial_timeout: float = 45.0
    dial_format: str = attrs.field(default="e164")
    record: bool = True
    max_message_size: int = 65_535
    # requests only from the registrar (always trusted) and these networks (CIDR); others 403
    trusted_networks: list[str] = attrs.field(factory=list)
    max_calls: int = 200  # calls at once; an INVITE beyond is answered 503
    # an answered call ends after this long, or when a leg's RTP stopped this long (0: off)
    max_call_seconds: float = 14_400.0
    rtp_timeout: float = 60.0
    # how an agent's phone learns the customer's number when we ring it: "from" puts it in
    # From (and P-Asserted-Identity); "asserted" keeps From our account's, for proxies that
    # require From to match the credentials (Kamailio's stock auth_check flag 1)
    agent_caller_id: str = attrs.field(
        default="from", validator=attrs.validators.in_(("from", "asserted"))
    )

    @ice_servers.validator
    def _ice_servers(self, _: Any, value: list[dict[str, Any]]) -> None:
        for server in value:
            urls = server.get("urls") if isinstance(server, dict) else None
            urls = [urls] if isinstance(urls, str) else urls
            if not urls or not all(
                isinstance(u, str) and u.split(":")[0] in ("stun", "stuns", "turn", "turns")
                for u in urls
            ):
                raise ValueError(
                    f"ice_servers: each needs urls of stun:/turn: URIs, got {server!r}"
                )
            unknown = set(server) - {"urls", "username", "credential"}
            if unknown:
                raise ValueError(f"ice_servers: unknown keys {sorted(unknown)}")

    @session_expires.validator
    def _session_expires(self, _: Any, value: int) -> None:
        if value and not 90 <= value <= 86_400:
            raise ValueError("session_expires must be 0 or 90..86400 seconds")

    @trusted_networks.validator
    def _networks(self, _: Any, value: list[str]) -> None:
        for net in value:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad one

    @dial_format.validator
    def _dial_format(self, _: Any, value: str) -> None:
        if value not in ("e164", "e164_digits", "national"):
            raise ValueError(f"dial_format must be e164, e164_digits or national, got {value!r}")

    @rtp_port_high.validator
    def _rtp_range(self, _: Any, value: int) -> None:
        if value < self.rtp_port_low + 1:
            raise ValueError("rtp_port_high must be above rtp_port_low")


def mix(a: bytes | None, b: bytes | None) -> bytes | None:
    """Two frames of 16-bit audio added (clipped), either of them possibly missing."""
    if a is None or b is None:
        return a if b is None else b
    return bytes(audioop.add(a, b, 2))


def recording_path(base: str, call_id: str, suffix: str = "") -> Path:
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:80]
    return Path(base) / "sip" / day / f"{safe}{suffix}.wav"


class Bridge:
    """Two answered legs relaying audio through the media clock, optionally recorded."""

    def __init__(
        self, customer: Leg, agent: AgentLeg, recorder: Recorder | None, hold_music: bytes = b""
    ) -> None:
        self.customer = customer
        self.agent = agent
        self.recorder = recorder
        self.music = Loop(hold_music or default_music_on_hold())
        self.session: SipCallSession | None = None
        self.transfer: asyncio.Task[str | None] | None = None  # a transfer under way
        self.waiting = False  # the customer waits for a transfer: music, no agent audio
        self.held = False  # we put the customer on hold: music, no agent audio
        self.left: str | None = None  # we handed the customer on by REFER, and left
        # a consultation (attended transfer): the agent talks to a colleague meanwhile
        self.consulting = False
        self.consult: AgentLeg | None = None
        self.consult_agent: Agent | None = None
        self.consult_target = ""
        # a supervisor in the call: hears both sides; heard by the agent (whisper) or by
        # both (barge)
        self.supervisor: AgentLeg | None = None
        self.supervisor_agent: Agent | None = None
        self.supervision = SupervisionMode.LISTEN

    def tick(self) -> None:
        """Relay one frame each way. A side that put the other on hold (re-INVITE
        sendonly or inactive) sends no audio of its own: the other hears music on hold.
        During a consultation the agent talks to the colleague and the customer hears
        music."""
        a_stream, b_stream = self.customer.stream, self.agent.stream
        a = a_stream.take_frame() if a_stream else None
        b = b_stream.take_frame() if b_stream else None
        consult = self.consult
        if consult is not None and consult.state is LegState.ENDED:
            self.consult, self.consulting = None, False  # the colleague hung up: back
        elif consult is not None and consult.stream is not None and b_stream is not None:
            heard = consult.stream.take_frame()
            if b is not None:
                consult.stream.feed(b)
            if heard is not None:
                b_stream.feed(heard)
        if self.waiting or self.held or self.consulting:
            a, b = None, self.music.frame()
        elif a_stream is not None and a_stream.on_hold:
            a = self.music.frame() if b_stream is not None and not b_stream.on_hold else None
        if b_stream is not None and b_stream.on_hold:
            b = self.music.frame() if a_stream is not None and not a_stream.on_hold else None
        to_agent, to_customer = a, b
        supervisor = self.supervisor
        if supervisor is not None and supervisor.state is LegState.ENDED:
            self.supervisor = supervisor = None  # the supervisor hung up
        if supervisor is not None and supervisor.stream is not None:
            s_stream = supervisor.stream
            said = s_stream.take_frame()
            heard = mix(a, b)
            if heard is not None:
                s_stream.feed(heard)
            if said is not None and self.supervision is not SupervisionMode.LISTEN:
                to_agent = mix(to_agent, said)
                if self.supervision is SupervisionMode.BARGE:
                    to_customer = mix(to_customer, said)
        if to_agent is not None and b_stream is not None:
            b_stream.feed(to_agent)
        if to_customer is not None and a_stream is not None:
            a_stream.feed(to_customer)
        if self.recorder is not None:  # what the customer said, and what they heard
            self.recorder.write(a, to_customer)


async def first_to_answer(
    legs: Sequence[AgentLeg],
    timeout: float,
    caller: Leg | None = None,
    early_media: Callable[[], None] | None = None,
) -> AgentLeg | None:
    """The first of ``legs`` to answer within ``timeout``; None if none does, all end, or
    ``caller`` (the customer waiting) hangs up. ``early_media`` is called once, when a leg
    first sends early media."""
    loop = asyncio.get_running_loop()
    relaying = early_media is None
    deadline = loop.time() + timeout
    while loop.time() < deadline and (caller is None or caller.state is not LegState.ENDED):
        for leg in legs:
            if leg.state is LegState.ANSWERED:
                return leg
        if all(leg.state is LegState.ENDED for leg in legs):
            return None
        if not relaying and any(leg.early.is_set() for leg in legs):
            assert early_media is not None
            early_media()
            relaying = True
        waits = {asyncio.ensure_future(leg.answered.wait()) for leg in legs}
        waits |= {asyncio.ensure_future(leg.ended.wait()) for leg in legs}
        if not relaying:
            waits |= {asyncio.ensure_future(leg.early.wait()) for leg in legs}
        if caller is not None:
            waits.add(asyncio.ensure_future(caller.ended.wait()))
        try:
            await asyncio.wait(
                waits, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                w.cancel()
    for leg in legs:
        if leg.state is LegState.ANSWERED:
            return leg
    return None


class SipCallSession:
    """A live call handed to ``route_call`` handlers (the IVR); see ``CallSession``."""

    def __init__(self, channel: SipChannel, leg: Leg, call: CallRecord, contact: Contact) -> None:
        self.channel = channel
        self.leg = leg
        self.call = call
        self.contact = contact
        self.agent: Agent | None = None
        self.disposition: Disposition | None = None
        self.hangup_cause: str | None = None

    @property
    def ctx(self) -> ChannelContext:
        assert self.channel.ctx is not None
        return self.channel.ctx

    @property
    def hung_up(self) -> bool:
        return self.leg.state is LegState.ENDED

    async def answer(self) -> None:
        if self.leg.state is LegState.RINGING:
            await self.leg.answer()

    async def play(
        self, prompt: str | os.PathLike[str] | bytes, *, interruptible: bool = False
    ) -> str:
        if self.hung_up:
            return ""
        await self.answer()
        stream = self.leg.stream
        if stream is None:
            return ""
        pcm = prompt if isinstance(prompt, bytes) else self.channel.prompt(prompt)
        done = asyncio.ensure_future(stream.play(pcm).wait())
        waits: set[asyncio.Future[Any]] = {done, asyncio.ensure_future(self.leg.ended.wait())}
        digit_task: asyncio.Future[str] | None = None
        if interruptible:
            digit_task = asyncio.ensure_future(self._next_digit())
            waits.add(digit_task)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if digit_task is not None and digit_task.done() and not digit_task.cancelled():
            digit = digit_task.result()
            if self.leg.stream is not None:
                self.leg.stream.stop_playing()
            return digit
        return ""

    async def _next_digit(self) -> str:
        stream = self.leg.stream
        assert stream is not None
        rtp = asyncio.ensure_future(stream.digits.get())
        info = asyncio.ensure_future(self.leg.info_digits.get())
        try:
            done, _ = await asyncio.wait({rtp, info}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rtp.cancel()
            info.cancel()
        return next(iter(done)).result()

    async def collect_digits(
        self, max_digits: int = 1, timeout: float = 5.0, terminator: str | None = "#"
    ) -> str:
        digits = ""
        while len(digits) < max_digits and not self.hung_up:
            if self.leg.stream is None:
                break
            ended = asyncio.ensure_future(self.leg.ended.wait())
            nxt = asyncio.ensure_future(self._next_digit())
            try:
                done, _ = await asyncio.wait(
                    {nxt, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                ended.cancel()
                nxt.cancel()
            if nxt not in done or nxt.cancelled():
                break
            digit = nxt.result()
            if terminator and digit == terminator:
                break
            digits += digit
        return digits

    async def bridge(
        self, agents: Sequence[Agent], *, ring_timeout: float | None = None
    ) -> Agent | None:
        if self.hung_up:
            return None
        s = self.channel.settings
        timeout = ring_timeout if ring_timeout is not None else s.ring_timeout
        reachable = [a for a in agents if self.channel.reachable(a)]
        if not reachable:
            log.warning(
                "call %s: no agent with an extension or a softphone to ring", self.leg.call_id
            )
            return None
        name = (self.contact.name or self.leg.user or "caller")[:40].replace('"', "")
        kind, _, number = (self.call.from_address or "").partition(":")
        caller = number if kind == "phone" and CALLER_NUMBER.fullmatch(number) else None
        rung = await asyncio.gather(
            *(
                self.channel.ring(
                    a, display=name, caller=caller, call=self.call, contact=self.contact
                )
                for a in reachable
            )
        )
        legs: dict[AgentLeg, Agent] = {
            leg: agent for agent, its in zip(reachable, rung, strict=True) for leg in its
        }
        winner = await self._first_answer(list(legs), timeout)
        for leg in legs:
            if leg is not winner:
                self.channel.spawn(leg.hangup())
        if winner is None:
            log.info(
                "call %s: no agent answered (%s)",
                self.leg.call_id,
                ", ".join(f"{a.name}: {leg.end_reason or 'no answer'}" for leg, a in legs.items()),
            )
            return None
        agent = legs[winner]
        await self.answer()
        if self.hung_up:
            await winner.hangup()
            return None
        self.agent = agent
        await self.channel.talk(self, self.leg, winner, agent)
        return agent

    async def _first_answer(self, legs: list[AgentLeg], timeout: float) -> AgentLeg | None:
        """The first of ``legs`` to answer within ``timeout`` (None if none does, or the
        caller left). Meanwhile the first one to send early media (a 183 with SDP: its
        ringback, an announcement) is heard by the caller, still unanswered (RFC 3960)."""
        if not legs:
            return None
        ua = self.channel.ua
        assert ua is not None
        relay: Callable[[], None] | None = None

        def early_media() -> None:
            nonlocal relay
            source = next((g for g in legs if g.early.is_set() and g.stream is not None), None)
            if source is None or self.leg.stream is None or self.leg.state is not LegState.RINGING:
                return
            caller, callee = self.leg.stream, source.stream

            def tick() -> None:
                frame = callee.take_frame() if callee is not None else None
                if frame is not None:
                    caller.feed(frame)

            self.leg.send_progress()
            relay = tick
            ua.clock.tickers.add(tick)

        try:
            return await first_to_answer(legs, timeout, self.leg, early_media)
        finally:
            if relay is not None:
                ua.clock.tickers.discard(relay)

    async def record(self, max_seconds: float = 120.0) -> str | None:
        if self.hung_up:
            return None
        await self.answer()
        stream = self.leg.stream
        if stream is None:
            return None
        path = recording_path(self.ctx.recordings_dir, self.leg.call_id, "-voicemail")
        recorder = MonoRecorder(path)
        stream.inbound.clear()

        def tick() -> None:
            if self.leg.stream is not None:
                recorder.write(self.leg.stream.take_frame())

        ua = self.channel.ua
        assert ua is not None
        ua.clock.tickers.add(tick)
        try:
            ended = asyncio.ensure_future(self.leg.ended.wait())
            pound = asyncio.ensure_future(self._until_pound())
            try:
                await asyncio.wait(
                    {ended, pound}, timeout=max_seconds, return_when="FIRST_COMPLETED"
                )
            finally:
                ended.cancel()
                pound.cancel()
        finally:
            ua.clock.tickers.discard(tick)
            recorder.close()
        await self.ctx.calls.recording_saved(self.ctx.channel, self.call.call_id, path)
        self.disposition = Disposition.VOICEMAIL
        return str(path)

    async def _until_pound(self) -> None:
        while await self._next_digit() != "#":
            pass

    async def step(self, node: str, digits: str = "") -> None:
        await self.ctx.calls.ivr_step(self.ctx.channel, self.call.call_id, node, digits)

    async def hangup(self, disposition: Disposition | None = None) -> None:
        if disposition is not None:
            self.disposition = disposition
        await self.leg.hangup()


class SipChannel:
    """A voice channel over SIP; also sends and receives SIP MESSAGE texts."""

    name = "sip"
    address_kind = "phone"

    def __init__(self) -> None:
        self.ctx: ChannelContext | None = None
        self.settings: SipSettings = None  # type: ignore[assignment]
        self.ua: UserAgent | None = None
        self._prompts: dict[str, bytes] = {}
        self._tasks = Tasks(log)  # the calls being handled
        self.sessions: dict[str, SipCallSession] = {}
        self.bridges: set[Bridge] = set()  # the calls talking now
        self.trunks: dict[str, UserAgent] = {}  # the extra trunks running now, by name

    # -- life cycle -----------------------------------------------------------------------

    async def start(self, ctx: ChannelContext) -> None:
        if self.ua is not None:
            return
        settings = ctx.settings
        if not isinstance(settings, SipSettings):
            raise TypeError("the SIP channel needs [plugins.sip] settings")
        self.ctx, self.settings = ctx, settings
        if settings.music_on_hold:
            self.prompt(settings.music_on_hold)  # a file that cannot be read fails the start
        ua, where = await self._make_ua(settings)
        self.ua = ua
        try:
            await ua.start()
            if settings.register:
                granted = await ua.register()
        except BaseException:
            await self.stop()
            raise
        if not settings.register:
            ctx.logger.info("trunk %s without registration (calls from its addresses)", where)
        else:
            ua.expires = granted or ua.expires
            ctx.logger.info("registered as %s at %s", ua.aor, where)
            ua.spawn(ua.keep_registered(ctx.fail))  # ended by ua.stop(), whoever stops us
        for trunk in settings.trunks:
            ctx.supervise(f"trunk:{trunk.name}", functools.partial(self._run_trunk, trunk))

    async def _make_ua(
        self, account: SipSettings, *, main: UserAgent | None = None
    ) -> tuple[UserAgent, str]:
        """A user agent for ``account`` (the main one, or a trunk's settings on top of it:
        then it shares ``main``'s RTP ports and media clock); and where it goes."""
        target = await locate(
            account.server,
            transport=account.transport,
            port=account.port,
            nameservers=account.dns_servers,
        )
        located = target.how.startswith("SRV")
        client_ssl = server_ssl = None
        if target.transport == "tls":
            client_ssl = client_context(
                verify=account.tls_verify,
                ca_file=account.tls_ca_file,
                cert_file=account.tls_cert_file,
                key_file=account.tls_key_file,
            )
            if account.tls_cert_file:
                server_ssl = server_context(account.tls_cert_file, account.tls_key_file)
        ua = UserAgent(
            server=target.host,
            port=target.port,
            username=account.username,
            password=account.password,
            ip=account.local_ip,
            local_port=account.local_port,
            rtp_ports=(account.rtp_port_low, account.rtp_port_high),
            codecs=[c.upper() for c in account.codecs],
            expires=account.expires,
            # found by SRV: the AOR stays in the server's domain, whatever host serves it
            domain=account.domain or (account.server if located else None),
            max_message_size=account.max_message_size,
            on_invite=self._incoming,
            on_message=self._message,
            on_refer=self._refer,
            trusted_networks=account.trusted_networks,
            max_calls=account.max_calls,
            max_call_seconds=account.max_call_seconds,
            rtp_timeout=account.rtp_timeout,
            transport=target.transport,
            client_ssl=client_ssl,
            server_ssl=server_ssl,
            tls_server_name=account.tls_server_name or (account.server if located else None),
            sips=account.sips,
            public_ip=account.public_ip,
            public_port=account.public_port,
            keepalive=account.keepalive,
            nat_discovery=account.nat_discovery,
            srtp=account.srtp,
            session_expires=account.session_expires,
            clock=main.clock if main is not None else None,
            ports=main.ports if main is not None else None,
        )
        return ua, f"{target.host}:{target.port} over {target.transport.upper()} ({target.how})"

    def trunk_account(self, trunk: TrunkSettings) -> SipSettings:
        """The main settings with the trunk's own on top."""
        return attrs.evolve(
            self.settings,
            server=trunk.server,
            username=trunk.username,
            password=trunk.password,
            port=trunk.port,
            domain=trunk.domain,
            transport=trunk.transport,
            local_port=trunk.local_port,
            register=trunk.register,
            expires=trunk.expires,
            dial_format=trunk.dial_format,
            trusted_networks=trunk.trusted_networks,
            srtp=trunk.srtp,
            tls_verify=trunk.tls_verify,
            tls_ca_file=trunk.tls_ca_file,
            tls_server_name=trunk.tls_server_name,
            public_port=None,
            trunks=[],
        )

    async def _run_trunk(self, trunk: TrunkSettings) -> None:
        """One trunk, as a supervised loop (``ctx.supervise``): its user agent started and
        registered, kept registered; a failure ends the loop with the reason (shown in
        /api/health as ``sip:trunk:NAME``, retried with backoff) and leaves the main
        account and the other trunks alone."""
        assert self.ua is not None
        ua, where = await self._make_ua(self.trunk_account(trunk), main=self.ua)
        lost: list[str] = []
        try:
            await ua.start()
            self.trunks[trunk.name] = ua
            if not trunk.register:
                log.info("trunk %s: %s, without registration", trunk.name, where)
                await asyncio.Event().wait()
            ua.expires = await ua.register() or ua.expires
            log.info("trunk %s: registered as %s at %s", trunk.name, ua.aor, where)
            await ua.keep_registered(lost.append)
            raise SipError(0, lost[0] if lost else "registration ended")
        finally:
            if self.trunks.get(trunk.name) is ua:
                del self.trunks[trunk.name]
            await ua.stop()

    def route_out(self, address: Address) -> tuple[UserAgent, TrunkSettings | None]:
        """The user agent a call to ``address`` goes out through: the running trunk with the
        longest prefix the number starts with, else the main account."""
        assert self.ua is not None
        best: TrunkSettings | None = None
        best_length = 0
        for trunk in self.settings.trunks:
            if trunk.name not in self.trunks:
                continue
            for prefix in trunk.prefixes:
                if address.value.startswith(prefix) and len(prefix) > best_length:
                    best, best_length = trunk, len(prefix)
        if best is None:
            return self.ua, None
        return self.trunks[best.name], best

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        ua, self.ua = self.ua, None
        if ua is not None:
            await ua.stop()
        self.sessions.clear()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro, name="sip-call")

    def prompt(self, prompt: str | os.PathLike[str]) -> bytes:
        key = str(prompt)
        if key not in self._prompts:
            self._prompts[key] = load_prompt(prompt)
        return self._prompts[key]

    # -- inbound calls --------------------------------------------------------------------

    async def _incoming(self, leg: Leg) -> None:
        ctx = self.ctx
        assert ctx is not None
        assert leg.invite is not None
        leg.send_ringing()
        caller = leg.user or "anonymous"
        called = sipmsg.user_of(leg.local_uri) or self.settings.username
        agents = await asyncio.to_thread(self.ring_agents)  # a store read: off the loop
        record, contact = await ctx.calls.ringing(
            ctx.channel,
            leg.call_id,
            direction=Direction.INBOUND,
            from_address=caller,
            to_address=called,
            agents=[a.id for a in agents if a.id is not None],
            caller_name=leg.caller_name,
        )
        session = SipCallSession(self, leg, record, contact)
        self.sessions[leg.call_id] = session
        try:
            handler = None
            if not session.hung_up:
                handler = await ctx.calls.route(record, contact)
            if session.hung_up:
                pass
            elif handler is not None:
                await handler(session)
            else:  # no plugin routes it: ring the agents (the IVR adds consent, voicemail)
                await session.bridge(agents)
        finally:
            self.sessions.pop(leg.call_id, None)
            await self._finish(session)

    async def _finish(self, session: SipCallSession) -> None:
        ctx = self.ctx
        assert ctx is not None
        leg = session.leg
        caller_left = leg.remote_hangup
        if leg.state is not LegState.ENDED:
            await leg.hangup()
        disposition = session.disposition
        if disposition is None:
            if session.agent is not None:
                disposition = Disposition.ANSWERED
            elif leg.answered.is_set() and caller_left:
                disposition = Disposition.ABANDONED  # hung up in the IVR or in the queue
            else:
                disposition = Disposition.MISSED
        cause = (
            session.hangup_cause
            or leg.cut_off
            or ("caller hung up" if caller_left else leg.end_reason or "hung up")
        )
        await ctx.calls.ended(ctx.channel, leg.call_id, disposition, cause)

    def ringable_agents(self) -> list[Agent]:
        """The agents calls can ring: by a desk phone's extension, or in the browser."""
        assert self.ctx is not None
        return [a for a in self.ctx.agents() if a.extension or a.rings_browser]

    def reachable(self, agent: Agent) -> bool:
        """Whether ``agent`` can be rung now: a desk phone, or a softphone connected."""
        assert self.ctx is not None
        return agent.rings_phone or (agent.rings_browser and self.ctx.softphones.online(agent.id))

    async def ring(
        self,
        agent: Agent,
        *,
        display: str,
        caller: str | None = None,
        call: CallRecord | None = None,
        contact: Contact | None = None,
        kind: str = "call",
        extra: Sequence[tuple[str, str]] = (),
    ) -> list[AgentLeg]:
        """Ring ``agent`` wherever they take calls (``Agent.ring``): the desk phone's
        extension, the console softphone (a WebRTC leg), or both at once. The legs rung;
        none if neither can be."""
        ctx, ua = self.ctx, self.ua
        assert ctx is not None
        assert ua is not None
        legs: list[AgentLeg] = []
        if agent.rings_phone:
            assert agent.extension is not None
            try:
                legs.append(
                    await ua.start_call(
                        agent.extension,
                        display=display,
                        caller=caller,
                        caller_in_from=self.settings.agent_caller_id == "from",
                        extra=extra,
                    )
                )
            except SipError as exc:
                log.warning("cannot ring %s's phone: %s", agent.name, exc)
        if agent.rings_browser and ctx.softphones.online(agent.id):
            leg = BrowserLeg(
                ctx.softphones,
                agent,
                call.call_id if call is not None else "",
                ua.clock,
                self.settings.ice_servers,
                self.settings.browser_jitter_frames,
            )
            await leg.ring(
                {
                    "kind": kind,
                    "call": call.call_id if call is not None else None,
                    "caller": display,
                    "number": caller,
                    "contact": contact.id if contact is not None else None,
                }
            )
            if leg.state is not LegState.ENDED:
                legs.append(leg)
        return legs

    async def call_agent(
        self,
        agent: Agent,
        *,
        display: str,
        caller: str | None = None,
        call: CallRecord | None = None,
        contact: Contact | None = None,
        kind: str = "call",
        waiting: Leg | None = None,
    ) -> AgentLeg:
        """Ring ``agent`` (see :meth:`ring`) and return the first leg to answer; the others
        are hung up. ``SipError`` if none answers within ``ring_timeout`` (or ``waiting``,
        the customer, hangs up meanwhile)."""
        legs = await self.ring(
            agent, display=display, caller=caller, call=call, contact=contact, kind=kind
        )
        if not legs:
            raise SipError(480, f"agent {agent.name} has no phone or softphone to ring now")
        winner: AgentLeg | None = None
        try:
            winner = await first_to_answer(legs, self.settings.ring_timeout, waiting)
        finally:  # also when cancelled (the call ended): no leg left ringing
            for leg in legs:
                if leg is not winner:
                    await leg.hangup()
        if winner is None or winner.state is not LegState.ANSWERED:
            reasons = "; ".join(leg.end_reason for leg in legs if leg.end_reason)
            raise SipError(408, reasons or f"no answer within {self.settings.ring_timeout:.0f} s")
        return winner

    def ring_agents(self) -> list[Agent]:
        agents = self.ringable_agents()
        if self.settings.ring_agents:
            wanted = set(self.settings.ring_agents)
            agents = [a for a in agents if a.name in wanted or a.extension in wanted]
        return agents

    async def talk(
        self, session: SipCallSession, customer: Leg, agent_leg: AgentLeg, agent: Agent
    ) -> None:
        """The conversation: the call record is answered by ``agent``, audio relayed and
        recorded until either side hangs up. An agent's phone may transfer the customer
        (REFER): the bridge then goes on with whoever the transfer reached, in the same
        recording."""
        ctx = self.ctx
        ua = self.ua
        assert ctx is not None
        assert ua is not None
        await ctx.calls.answered(ctx.channel, session.call.call_id, agent)
        recorder = None
        if self.settings.record:
            recorder = Recorder(recording_path(ctx.recordings_dir, session.call.call_id))
        for leg in (customer, agent_leg):
            if leg.stream is not None:
                leg.stream.inbound.clear()
        music = self.prompt(self.settings.music_on_hold) if self.settings.music_on_hold else b""
        bridge = Bridge(customer, agent_leg, recorder, music)
        bridge.session = session
        self.bridges.add(bridge)
        ua.clock.tickers.add(bridge.tick)
        try:
            while True:
                current = bridge.agent
                ends = {
                    asyncio.ensure_future(customer.ended.wait()),
                    asyncio.ensure_future(current.ended.wait()),
                }
                try:
                    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for e in ends:
                        e.cancel()
                if customer.state is LegState.ENDED:
                    break
                if bridge.consult is not None and bridge.consult.state is LegState.ANSWERED:
                    await self._complete(bridge)  # the agent hung up: as a phone does
                    continue
                if self._browser_lost(bridge, current):  # on to the agent's desk phone
                    assert isinstance(current, BrowserLeg)
                    log.info("call %s: %s; ringing their phone", customer.call_id, current.cut_off)
                    bridge.transfer = self.spawn(
                        self._transfer(
                            bridge,
                            None,
                            current.agent.extension or "",
                            agent=current.agent,
                            ring_browser=False,
                        )
                    )
                if bridge.transfer is not None:  # the transferor hung up: the call goes on
                    await asyncio.wait(
                        {bridge.transfer, asyncio.ensure_future(customer.ended.wait())},
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                if bridge.agent is current or bridge.agent.state is LegState.ENDED:
                    break
        finally:
            self.bridges.discard(bridge)
            ua.clock.tickers.discard(bridge.tick)
            consult, bridge.consult, bridge.consulting = bridge.consult, None, False
            if consult is not None:  # the call ended during a consultation
                await consult.hangup()
            supervisor, bridge.supervisor = bridge.supervisor, None
            if supervisor is not None:
                await supervisor.hangup()
            if bridge.transfer is not None:
                bridge.transfer.cancel()
            if recorder is not None:
                recorder.close()
            agent_leg = bridge.agent
            if bridge.left:
                session.hangup_cause = bridge.left
            elif customer.cut_off or agent_leg.cut_off:  # our watchdog ended it
                session.hangup_cause = customer.cut_off or agent_leg.cut_off
            elif agent_leg.state is LegState.ENDED and customer.state is not LegState.ENDED:
                session.hangup_cause = "agent hung up"
            elif customer.state is LegState.ENDED:
                session.hangup_cause = "customer hung up"
            await asyncio.gather(customer.hangup(), agent_leg.hangup(), return_exceptions=True)
        if recorder is not None:
            await ctx.calls.recording_saved(ctx.channel, session.call.call_id, recorder.path)

    def _browser_lost(self, bridge: Bridge, leg: AgentLeg) -> bool:
        """Whether the agent's browser leg was lost (not hung up) and the call should go on
        at their desk phone (``browser_lost = "phone"``)."""
        return (
            self.settings.browser_lost == "phone"
            and isinstance(leg, BrowserLeg)
            and leg.cut_off is not None
            and not leg.remote_hangup
            and bool(leg.agent.extension)
            and bridge.transfer is None
            and bridge.customer.state is LegState.ANSWERED
        )

    def _refer(self, leg: Leg, target: str, replaces: str | None = None) -> bool:
        """A REFER on ``leg``: an agent's phone transfers the customer to ``target`` (an
        extension or a number). Taken (the UA answers 202) when the leg is an agent's side
        of a bridge with no transfer under way."""
        bridge = next((b for b in self.bridges if b.agent is leg), None)
        if bridge is None or bridge.transfer is not None:
            return False
        bridge.transfer = self.spawn(self._transfer(bridge, leg, target, replaces))
        return True

    async def _transfer(
        self,
        bridge: Bridge,
        transferor: Leg | None,
        target: str,
        replaces: str | None = None,
        *,
        agent: Agent | None = None,
        out: UserAgent | None = None,
        ring_browser: bool = True,
    ) -> str | None:
        """Carry a transfer out: the customer hears music on hold while ``target`` rings
        (through ``out``, the main account unless a trunk); once answered it is bridged to
        the customer, the record's agent follows, and the agent leg before is hung up.
        With a ``transferor`` (a phone's REFER, RFC 3515, Switchboard the transferee) it
        is told by NOTIFY and hangs up itself first. If nobody answers, the customer goes
        back to the agent before (or the call ends if they left). Returns why it failed,
        or None."""
        ctx, ua = self.ctx, out or self.ua
        assert ctx is not None
        assert ua is not None
        assert bridge.session is not None
        session = bridge.session
        customer = bridge.customer
        before = bridge.agent
        was_held = bridge.held
        bridge.waiting = True
        if transferor is not None:
            await transferor.notify_refer("SIP/2.0 100 Trying")
        if agent is None:
            agents = await asyncio.to_thread(self.ringable_agents)  # a store read
            agent = next((a for a in agents if a.extension == target), None)
        name = (session.contact.name or customer.user or "caller")[:40].replace('"', "")
        kind, _, number = (session.call.from_address or "").partition(":")
        caller = number if kind == "phone" and CALLER_NUMBER.fullmatch(number) else None
        leg: AgentLeg | None = None
        try:
            if agent is not None and not replaces and ring_browser:  # phone, softphone, both
                leg = await self.call_agent(
                    agent,
                    display=name,
                    caller=caller,
                    call=session.call,
                    contact=session.contact,
                    kind="transfer",
                    waiting=customer,
                )
            else:
                leg = sip_leg = await ua.start_call(
                    target,
                    display=name,
                    caller=caller,
                    caller_in_from=self.settings.agent_caller_id == "from",
                    extra=[("Replaces", replaces)] if replaces else (),
                )
                await ua.wait_answer(sip_leg, self.settings.ring_timeout)
        except asyncio.CancelledError:  # the call ended while the target rang
            if leg is not None:
                await leg.hangup()  # not left ringing, or answered by nobody
            raise
        except SipError as exc:
            log.info("call %s: transfer to %s failed: %s", customer.call_id, target, exc)
            if transferor is not None:
                status = exc.status if exc.status >= 300 else 503
                await transferor.notify_refer(f"SIP/2.0 {status} {exc.reason[:60]}", final=True)
            bridge.waiting = False
            bridge.transfer = None
            return f"{target} did not answer: {exc}"
        if leg.stream is not None:
            leg.stream.inbound.clear()
        bridge.agent = leg
        bridge.waiting = bridge.held = False
        if was_held:  # the customer's phone was told to hold: it talks again
            with contextlib.suppress(SipError):
                await customer.reinvite("sendrecv")
        log.info("call %s: transferred to %s", customer.call_id, target)
        await ctx.calls.transferred(ctx.channel, session.call.call_id, agent)
        bridge.transfer = None
        if transferor is not None:
            await transferor.notify_refer("SIP/2.0 200 OK", final=True)
            # the transferor hangs up on the final NOTIFY (RFC 5589 §6); if not, we do
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(transferor.ended.wait(), 4)
        await before.hangup()
        return None

    # -- call control (the console's and the API's hold, resume, transfer) ----------------

    def _bridge_of(self, call_id: str) -> Bridge:
        for bridge in self.bridges:
            if bridge.session is not None and bridge.session.call.call_id == call_id:
                return bridge
        raise LookupError(f"call {call_id} is not talking on the SIP channel now")

    async def hold(self, call_id: str) -> None:
        """Hold the customer: a re-INVITE with ``a=sendonly`` (RFC 3264 §8.4), music on
        hold to them, nothing relayed to the agent. A phone that refuses the re-INVITE
        still hears the music (our stream keeps sending)."""
        bridge = self._bridge_of(call_id)
        if bridge.held:
            return
        bridge.held = True
        try:
            await bridge.customer.reinvite("sendonly")
        except SipError as exc:
            log.info("call %s: hold re-INVITE answered %s", call_id, exc)

    async def resume(self, call_id: str) -> None:
        """Take the customer off hold; during a consultation, end it (the colleague is
        hung up) and go back to the customer."""
        bridge = self._bridge_of(call_id)
        if bridge.consult is not None or bridge.consulting:
            consult, bridge.consult, bridge.consulting = bridge.consult, None, False
            if consult is not None:
                await consult.hangup()
            return
        if not bridge.held:
            return
        bridge.held = False
        try:
            await bridge.customer.reinvite("sendrecv")
        except SipError as exc:
            log.info("call %s: resume re-INVITE answered %s", call_id, exc)

    async def transfer(self, call_id: str, to: Agent | Address) -> None:
        """Hand the customer to another agent's extension or a number (through the trunk
        its prefix names). Switchboard stays in the call (it bridges anew and keeps
        recording), or, for a number with ``transfer_out = "refer"``, asks the customer's
        side to call it (REFER) and leaves."""
        bridge = self._bridge_of(call_id)
        if bridge.transfer is not None:
            raise ValueError("a transfer of this call is under way")
        if bridge.consult is not None:
            if not self._is_consulted(bridge, to):
                raise ValueError("a consultation with someone else is under way")
            await self._complete(bridge)
            return
        if isinstance(to, Address) and self.settings.transfer_out == "refer":
            bridge.transfer = self.spawn(self._refer_out(bridge, to))
        else:
            out, target, agent = self._reach(to)
            bridge.transfer = self.spawn(self._transfer(bridge, None, target, agent=agent, out=out))
        failed = await bridge.transfer
        if failed is not None:
            raise ValueError(failed)

    async def consult(self, call_id: str, to: Agent | Address) -> None:
        """Attended transfer, first step: the customer hears music while the agent's
        phone talks to ``to`` (an agent's extension, or a number through its trunk);
        returns once they answer. ``transfer`` to them completes it, ``resume`` ends it."""
        bridge = self._bridge_of(call_id)
        if bridge.consult is not None or bridge.consulting or bridge.transfer is not None:
            raise ValueError("a consultation or a transfer of this call is under way")
        out, target, agent = self._reach(to)
        bridge.consulting = True
        leg: AgentLeg
        try:
            if agent is not None:
                assert bridge.session is not None
                leg = await self.call_agent(
                    agent,
                    display="Consultation",
                    call=bridge.session.call,
                    contact=bridge.session.contact,
                    kind="consult",
                    waiting=bridge.customer,
                )
            else:
                leg = sip_leg = await out.start_call(target, display="Consultation")
                await out.wait_answer(sip_leg, self.settings.ring_timeout)
        except SipError as exc:
            bridge.consulting = False
            raise ValueError(f"{target} did not answer: {exc}") from None
        if not bridge.consulting or bridge not in self.bridges:  # resumed, or ended
            await leg.hangup()
            if bridge not in self.bridges:
                raise LookupError(f"call {call_id} ended during the consultation")
            return
        if leg.stream is not None:
            leg.stream.inbound.clear()
        bridge.consult, bridge.consult_agent = leg, agent
        bridge.consult_target = target

    async def supervise(self, call_id: str, supervisor: Agent, mode: SupervisionMode) -> None:
        """A supervisor joins the call (``CallSupervision``): rung wherever they take calls;
        once they answer they hear both sides, and with ``whisper`` the agent hears them,
        with ``barge`` the customer too (and the recording). For the supervisor already in
        the call, only the mode changes. Each change is kept on the call's record."""
        ctx = self.ctx
        assert ctx is not None
        bridge = self._bridge_of(call_id)
        assert bridge.session is not None
        joined = bridge.supervisor
        if joined is not None and joined.state is not LegState.ENDED:
            if bridge.supervisor_agent is None or bridge.supervisor_agent.id != supervisor.id:
                raise ValueError("another supervisor is in this call")
            bridge.supervision = mode
        else:
            name = (bridge.session.contact.name or "caller")[:40]
            try:
                leg = await self.call_agent(
                    supervisor,
                    display=f"{mode.capitalize()}: {name}",
                    call=bridge.session.call,
                    contact=bridge.session.contact,
                    kind="supervise",
                    waiting=bridge.customer,
                )
            except SipError as exc:
                raise ValueError(f"{supervisor.name} did not answer: {exc}") from None
            if bridge not in self.bridges:  # the call ended meanwhile
                await leg.hangup()
                raise LookupError(f"call {call_id} ended")
            if leg.stream is not None:
                leg.stream.inbound.clear()
            bridge.supervisor, bridge.supervisor_agent = leg, supervisor
            bridge.supervision = mode
        log.info("call %s: %s %s", call_id, supervisor.name, mode)
        await ctx.calls.supervised(ctx.channel, call_id, supervisor, mode)

    def _reach(self, to: Agent | Address) -> tuple[UserAgent, str, Agent | None]:
        """How to call ``to``: an agent's extension through the main account, or a number
        through the trunk its prefix names, dialled as that trunk dials."""
        if isinstance(to, Agent):
            if not self.reachable(to):
                raise ValueError(f"agent {to.name} has no extension and no softphone connected")
            assert self.ua is not None
            return self.ua, to.extension or f"agent:{to.name}", to
        out, trunk = self.route_out(to)
        return out, self.dial_string(to, trunk.dial_format if trunk else None), None

    def _is_consulted(self, bridge: Bridge, to: Agent | Address) -> bool:
        return self._reach(to)[1] == bridge.consult_target

    async def _complete(self, bridge: Bridge) -> None:
        """Attended transfer, last step: the customer talks to the consulted party, the
        agent's leg is hung up; the record's agent follows."""
        ctx = self.ctx
        assert ctx is not None
        assert bridge.session is not None
        leg, agent = bridge.consult, bridge.consult_agent
        assert leg is not None
        before = bridge.agent
        bridge.agent, bridge.consult, bridge.consulting = leg, None, False
        log.info("call %s: attended transfer completed", bridge.customer.call_id)
        await ctx.calls.transferred(ctx.channel, bridge.session.call.call_id, agent)
        await before.hangup()

    async def _refer_out(self, bridge: Bridge, to: Address) -> str | None:
        """Transfer to a number by REFER (we the transferor, RFC 3515): the customer's
        side calls it itself; on its final 200 we hang up both our legs and the record
        ends ``transferred to NUMBER``. Returns why it failed, or None."""
        ctx = self.ctx
        assert ctx is not None
        assert bridge.session is not None
        customer = bridge.customer
        target = customer.ua.target_uri(self.dial_string(to))
        bridge.held = True  # the agent is out of the conversation meanwhile
        try:
            status = await customer.refer(target)
        except SipError as exc:
            return f"the customer's side did not take the transfer: {exc}"
        finally:
            bridge.held = False
            bridge.transfer = None
        if status != 200:
            return f"{to.value} was not reached ({status})"
        log.info("call %s: handed on to %s by REFER", customer.call_id, to.value)
        bridge.left = f"transferred to {to.value}"
        await ctx.calls.transferred(ctx.channel, bridge.session.call.call_id, None)
        await customer.hangup()
        return None

    # -- click-to-call --------------------------------------------------------------------

    def dial_string(self, address: Address, dial_format: str | None = None) -> str:
        """The number as the account (or ``dial_format``, a trunk's) dials it."""
        value = address.value
        if address.kind != "phone":
            raise ValueError(f"the SIP channel dials phone numbers, not {address.kind}")
        dial_format = dial_format or self.settings.dial_format
        if dial_format == "e164":
            return value
        if dial_format == "e164_digits":
            return value.lstrip("+")
        number = phonenumbers.parse(value)
        return (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
            .replace(" ", "")
            .replace("-", "")
            .replace("(", "")
            .replace(")", "")
        )

    async def dial(self, agent: Agent, address: Address) -> str:
        """Click-to-call: ring the agent's extension; once answered, call the customer and
        bridge the two. Returns the call id at once (the call goes on in the background)."""
        ctx, ua = self.ctx, self.ua
        if ctx is None or ua is None:
            raise RuntimeError("the SIP channel is not running")
        if not self.reachable(agent):
            raise ValueError(f"agent {agent.name} has no extension and no softphone connected")
        out, trunk = self.route_out(address)
        target = self.dial_string(address, trunk.dial_format if trunk else None)
        call_id = sipmsg.new_call_id(ua.ip)
        record, contact = await ctx.calls.ringing(
            ctx.channel,
            call_id,
            direction=Direction.OUTBOUND,
            from_address=agent.extension or agent.name,
            to_address=address,
            agents=[agent.id] if agent.id is not None else [],
        )
        self.spawn(self._click_to_call(record, contact, agent, target, out, trunk))
        return call_id

    async def _click_to_call(
        self,
        record: CallRecord,
        contact: Contact,
        agent: Agent,
        target: str,
        out: UserAgent,
        trunk: TrunkSettings | None,
    ) -> None:
        """The agent's phone (or softphone) through the main account, then the customer
        through ``out`` (a trunk shows its ``caller_id``), bridged."""
        ctx = self.ctx
        assert ctx is not None
        disposition = Disposition.FAILED
        cause = "failed"
        try:
            try:
                agent_leg = await self.call_agent(
                    agent, display=f"Call to {target}", call=record, contact=contact, kind="dial"
                )
            except SipError as exc:
                cause = f"agent {agent.name} did not answer: {exc}"
                return
            try:
                caller = trunk.caller_id if trunk is not None else None
                customer = await out.start_call(target, display=agent.name, caller=caller)
                await out.wait_answer(customer, self.settings.dial_timeout)
            except SipError as exc:
                await agent_leg.hangup()
                disposition = (
                    Disposition.BUSY
                    if exc.status in BUSY
                    else Disposition.MISSED
                    if exc.status in NO_ANSWER
                    else Disposition.FAILED
                )
                cause = str(exc)
                return
            session = SipCallSession(self, customer, record, contact)
            session.agent = agent
            await self.talk(session, customer, agent_leg, agent)
            disposition = Disposition.ANSWERED
            cause = session.hangup_cause or "hung up"
        finally:
            with contextlib.suppress(Exception):
                await ctx.calls.ended(ctx.channel, record.call_id, disposition, cause)

    # -- SIP MESSAGE texts ----------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> Receipt:
        ua = self.ua
        if ua is None:
            raise TransientSendError("the SIP channel is not running")
        if not message.text:
            raise PermanentSendError("a SIP MESSAGE needs text")
        try:
            target = self.dial_string(message.address)
        except ValueError as exc:
            raise PermanentSendError(str(exc)) from None
        try:
            call_id = await ua.send_message(target, message.text)
        except SipError as exc:
            if exc.status in (0, 408, 500, 503) or 600 > exc.status >= 500:
                raise TransientSendError(str(exc)) from None
            raise PermanentSendError(str(exc)) from None
        return Receipt(external_id=call_id)

    async def _message(self, msg: SipMessage) -> int:
        ctx = self.ctx
        assert ctx is not None
        sender = sipmsg.user_of(sipmsg.uri_of(msg.first("From")))
        if not sender:
            await ctx.quarantine(msg.call_id, "no user in the From URI: nobody to attribute it to")
            return 400
        ctype = (msg.get("Content-Type") or "text/plain").lower()
        if not ctype.startswith("text/"):
            return 415
        try:
            text = msg.body.decode("utf-8")
        except UnicodeDecodeError:
            text = msg.body.decode("latin-1")
        try:
            await ctx.receive(
                InboundMessage(
                    external_id=msg.call_id,
                    sender=sender,
                    text=text.strip(),
                    sender_name=sipmsg.display_name(msg.first("From")),
                )
            )
        except InvalidInbound as exc:  # kept with the reason; the sender is told 400
            await ctx.quarantine(msg.call_id, str(exc), msg.body)
            return 400
        return 200
