"""SIP's dialog layer (RFC 3261 §12-15): a call leg, its state, and the requests inside it.

A :class:`Leg` is one dialog with its RTP stream: an incoming call (we answer or reject
its INVITE) or an outgoing one (we sent the INVITE). The channel works with legs: it
answers, rejects, hangs up, and reads and writes their audio. In-dialog requests (BYE,
re-INVITE) follow the route set the INVITE's ``Record-Route`` headers built, to the remote
target its ``Contact`` named.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from switchboard_sip import message as sipmsg
from switchboard_sip.media import MediaError, RtpStream, parse_sdp
from switchboard_sip.message import SipMessage
from switchboard_sip.transaction import T1, T2, SipError

if TYPE_CHECKING:
    from switchboard_sip.transport import Addr
    from switchboard_sip.ua import UserAgent

log = logging.getLogger("switchboard.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, MESSAGE, UPDATE, REFER"
MIN_SE = 90  # the shortest session interval we take (RFC 4028 §5)


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
        self.peer: Addr | None = None  # where its responses go (incoming legs)
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
        # outgoing: the callee sent SDP in a 18x (early media: a ringback or announcement)
        self.early = asyncio.Event()
        self.local_sdp = b""  # our answer, once made: a 183 and the 200 carry the same
        self.acked = asyncio.Event()
        self.info_digits: asyncio.Queue[str] = asyncio.Queue()
        self.invite_task: asyncio.Task[None] | None = None  # outgoing: the INVITE's
        # a REFER we sent (we the transferor): the final status its NOTIFYs report
        self.refer_result: asyncio.Future[int] | None = None
        # RFC 4028 session timer: the interval agreed (0: none), who refreshes, and when
        # the session was last refreshed (a re-INVITE or UPDATE either way)
        self.session_expires = 0
        self.we_refresh = False
        self.timer_required = False  # the peer said Supported: timer
        self.refreshed_at = time.monotonic()

    @property
    def user(self) -> str | None:
        return sipmsg.user_of(self.remote_uri)

    @property
    def caller_name(self) -> str | None:
        if self.invite is None:
            return None
        return sipmsg.display_name(self.invite.first("From"))

    def refreshed(self) -> None:
        self.refreshed_at = time.monotonic()

    def timer_headers(self, *, we_are_uac: bool) -> list[tuple[str, str]]:
        """``Session-Expires`` (and ``Require: timer`` when the peer supports it) for a
        request or response of ours, naming the refresher by its role in that transaction."""
        if not self.session_expires:
            return []
        refresher = "uac" if self.we_refresh == we_are_uac else "uas"
        headers = [("Session-Expires", f"{self.session_expires};refresher={refresher}")]
        if self.timer_required and not we_are_uac:
            headers.append(("Require", "timer"))
        return headers

    def agree_timer(self, msg: SipMessage, *, we_are_uac: bool) -> None:
        """Take the session timer of an INVITE we answer, or of the 2xx to ours."""
        supported = "timer" in [t.strip().lower() for t in msg.get_all("Supported")]
        value = msg.get("Session-Expires")
        interval = self.session_expires
        refresher = None
        if value:
            number = value.split(";", 1)[0].strip()
            if sipmsg.LENGTH.fullmatch(number):
                interval = max(MIN_SE, min(int(number), 86_400))
            refresher = sipmsg.param(value, "refresher")
        elif we_are_uac:
            self.session_expires = 0  # a 2xx without it: no session timer (RFC 4028 §7.2)
            return
        if not interval:
            return
        if refresher not in ("uac", "uas"):
            # unsaid: we refresh our own INVITE's session; a caller refreshes if it can
            refresher = "uac" if we_are_uac or supported else "uas"
        elif refresher == "uac" and not we_are_uac and not supported:
            refresher = "uas"  # a caller that cannot refresh is not made the refresher
        self.session_expires = interval
        self.timer_required = supported
        self.we_refresh = (refresher == "uac") == we_are_uac
        self.refreshed()

    # -- incoming -------------------------------------------------------------------------

    def send_ringing(self) -> None:
        assert self.invite is not None
        self.ua.send(sipmsg.response(self.invite, 180, to_tag=self.local_tag), self.peer)

    def answer_sdp(self) -> bytes:
        """Our SDP answer for this leg, made once (RFC 3261 §13.2.1: a 183's answer and
        the 200's are the same)."""
        assert self.stream is not None
        if not self.local_sdp:
            self.local_sdp = self.ua.sdp_for(self.stream)
        return self.local_sdp

    def send_progress(self) -> None:
        """183 Session Progress with our SDP: the caller hears what we send before the
        call is answered (early media, RFC 3960), e.g. an agent's ringback. Not for a
        delayed offer (there is no offer to answer yet)."""
        assert self.invite is not None
        if self.state is not LegState.RINGING or self.offer_in_ack or self.stream is None:
            return
        progress = sipmsg.response(
            self.invite,
            183,
            to_tag=self.local_tag,
            headers=[("Contact", self.ua.contact), ("Content-Type", "application/sdp")],
            body=self.answer_sdp(),
        )
        self.ua.send(progress, self.peer)
        self.ua.start_media(self)

    async def answer(self) -> None:
        """Answer an incoming call: 200 OK with our SDP, retransmitted until the ACK."""
        assert self.invite is not None
        assert self.stream is not None
        if self.state is not LegState.RINGING:
            raise SipError(0, f"cannot answer a call that is {self.state}")
        ua = self.ua
        body = self.answer_sdp()
        ok = sipmsg.response(
            self.invite,
            200,
            to_tag=self.local_tag,
            headers=[
                ("Contact", ua.contact),
                ("Allow", ALLOW),
                ("Supported", "timer"),
                *self.timer_headers(we_are_uac=False),
                ("Content-Type", "application/sdp"),
            ],
            body=body,
        )
        self.state = LegState.ANSWERED
        self.refreshed()
        ua.transactions.remember_final(self.invite.branch, ok)
        self.answered.set()
        ua.start_media(self)
        ua.send(ok, self.peer)
        interval = T1
        waited = 0.0
        while not self.acked.is_set() and not self.ended.is_set() and waited < 64 * T1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acked.wait(), interval)
            if not self.acked.is_set():
                waited += interval
                interval = min(interval * 2, T2)
                ua.send(ok, self.peer)
        if not self.acked.is_set() and not self.ended.is_set():
            log.warning("call %s: no ACK for our 200 OK; hanging up", self.call_id)
            await self.hangup()
        elif self.offer_in_ack and not self.ended.is_set():
            # delayed offer (RFC 3264 §5, RFC 3261 §13.2.1): the ACK carries the answer;
            # without a usable one there is no media, so the call ends (BYE)
            try:
                answer = parse_sdp(self.ack.body if self.ack else b"", ua.codecs)
                ua.check_answer(self.stream, answer)
                self.stream.set_remote(answer)
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
        self.ua.transactions.remember_final(self.invite.branch, resp)
        self.ua.send(resp, self.peer)
        self.end(status, reason or sipmsg.REASONS.get(status, ""))

    # -- outgoing -------------------------------------------------------------------------

    def send_ack(self, resp: SipMessage) -> None:
        """ACK for a 2xx: a new transaction along the route set to the remote target."""
        data, _ = self.ua.build_request(
            "ACK",
            self.remote_target,
            call_id=self.call_id,
            from_=f"<{self.local_uri}>;tag={self.local_tag}",
            to=resp.first("To"),
            cseq=resp.cseq[0],
            routes=self.route_set,
        )
        self.ua.send(data)

    async def cancel(self) -> None:
        """CANCEL an outgoing INVITE that is not answered yet."""
        if self.state in (LegState.ANSWERED, LegState.ENDED) or not self.invite_bytes:
            return
        invite = sipmsg.parse(self.invite_bytes)
        headers = [
            ("Via", invite.get_all("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.first("From")),
            ("To", invite.first("To")),
            ("Call-ID", self.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
        ]
        data = sipmsg.serialize(f"CANCEL {invite.uri} SIP/2.0", headers)
        self.end(487, "cancelled")
        with contextlib.suppress(SipError):
            await self.ua.transactions.request(
                data, self.branch, "CANCEL", self.ua.server_addr, timeout=8 * T1
            )

    # -- both -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        timeout: float = 32 * T1,
        *,
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipMessage:
        """A request inside the dialog (BYE, re-INVITE...), along its route set; its 2xx
        response (:class:`SipError` for any other)."""
        self.cseq += 1
        if self.outgoing:
            from_, to = f"<{self.local_uri}>;tag={self.local_tag}", f"<{self.remote_uri}>"
        else:
            assert self.invite is not None
            from_ = f"<{self.local_uri}>;tag={self.local_tag}"
            to = f"{self.invite.first('From')}"
            self.cseq = max(self.cseq, 1)
        if self.remote_tag and "tag=" not in to:
            to = f"{to};tag={self.remote_tag}"
        data, branch = self.ua.build_request(
            method,
            self.remote_target,
            call_id=self.call_id,
            from_=from_,
            to=to,
            cseq=self.cseq,
            routes=self.route_set,
            extra=extra,
            body=body,
        )
        resp = await self.ua.transactions.request(
            data, branch, method, self.ua.server_addr, timeout=timeout
        )
        status = resp.status or 0
        if method == "INVITE":
            if 200 <= status < 300:
                self.send_ack(resp)
            else:
                self.ua.ack_error(data, resp)
        if not 200 <= status < 300:
            raise SipError(status, f"{resp.reason} (to {method})")
        return resp

    async def notify_refer(self, sipfrag: str, *, final: bool = False) -> None:
        """Tell the transferor how the transfer it asked for goes (RFC 3515 §2.4.4): a
        NOTIFY of the ``refer`` event carrying the status line as a message/sipfrag. A
        transferor that already hung up is not an error."""
        state = "terminated;reason=noresource" if final else "active;expires=60"
        with contextlib.suppress(SipError):
            await self.request(
                "NOTIFY",
                timeout=8 * T1,
                extra=[
                    ("Event", "refer"),
                    ("Subscription-State", state),
                    ("Contact", self.ua.contact),
                    ("Content-Type", "message/sipfrag;version=2.0"),
                ],
                body=(sipfrag + "\r\n").encode(),
            )

    async def refer(self, target: str, *, timeout: float = 60.0) -> int:
        """Ask the peer to call ``target`` (a SIP URI) itself: REFER (RFC 3515, we the
        transferor). Returns the final status its NOTIFYs report (200: the peer talks to
        the target; the caller then hangs this leg up, RFC 5589), or raises
        :class:`SipError` when the REFER is refused or nothing final comes in ``timeout``."""
        loop = asyncio.get_running_loop()
        self.refer_result = loop.create_future()
        try:
            await self.request(
                "REFER",
                extra=[
                    ("Refer-To", f"<{target}>"),
                    ("Referred-By", f"<{self.ua.aor}>"),
                    ("Contact", self.ua.contact),
                ],
            )
            return await asyncio.wait_for(asyncio.shield(self.refer_result), timeout)
        except TimeoutError:
            raise SipError(408, f"no final NOTIFY for the REFER within {timeout:.0f} s") from None
        finally:
            self.refer_result = None

    def refer_progress(self, sipfrag: bytes, terminated: bool) -> None:
        """A NOTIFY for our REFER: its message/sipfrag's status line; a final status (or
        the subscription's end) completes :meth:`refer`."""
        first = sipfrag.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("ascii", "replace")
        parts = first.split()
        status = int(parts[1]) if len(parts) > 1 and sipmsg.STATUS.fullmatch(parts[1]) else 0
        done = self.refer_result
        if done is not None and not done.done() and (status >= 200 or terminated):
            done.set_result(status or 500)

    async def reinvite(self, direction: str | None = None) -> None:
        """A re-INVITE with our media (``direction`` ``sendonly`` holds the peer,
        ``sendrecv`` resumes): refreshes the session timer too (RFC 4028)."""
        stream = self.stream
        if stream is None or self.state is not LegState.ANSWERED:
            raise SipError(0, f"cannot re-INVITE a call that is {self.state}")
        if direction is not None:
            stream.direction = direction
        resp = await self.request(
            "INVITE",
            extra=[
                ("Contact", self.ua.contact),
                ("Allow", ALLOW),
                ("Supported", "timer"),
                *self.timer_headers(we_are_uac=True),
                ("Content-Type", "application/sdp"),
            ],
            body=self.ua.sdp_for(stream),
        )
        if resp.body.strip():
            try:
                answer = parse_sdp(resp.body, self.ua.codecs)
                self.ua.check_answer(stream, answer)
            except MediaError as exc:
                log.warning("call %s: re-INVITE answer unusable: %s", self.call_id, exc)
            else:
                stream.set_remote(answer)
        self.refreshed()

    async def hangup(self) -> None:
        """End the leg however far it got: BYE, CANCEL, or a final error response."""
        if self.state is LegState.ENDED:
            return
        if self.state is LegState.ANSWERED:
            self.end(0, "hung up")
            with contextlib.suppress(SipError):
                await self.request("BYE", timeout=4 * T1 * 8)
        elif self.outgoing:
            await self.cancel()
        else:
            self.reject(480)

    def end(self, status: int, reason: str) -> None:
        """Mark the leg ended (with the final status when it never got answered) and free
        its media."""
        if self.state is LegState.ENDED:
            return
        self.state = LegState.ENDED
        self.end_status = status
        self.end_reason = reason
        self.ended.set()
        self.ua.release(self)
