"""SIP's transaction layer (RFC 3261 §17): client transactions and the server INVITE
transaction's final response.

A client transaction sends a request and waits for its final response, matched by the top
Via's branch and the CSeq method (never by status code alone: an OPTIONS answered while an
INVITE waits cannot be taken for the INVITE's answer). Over UDP the request is resent at
T1, 2*T1... up to T2 (an INVITE until its first provisional response); over TCP and TLS it is
sent once. A transport error to the destination (a refused connection, a failed TLS
handshake) ends the transaction at once with ``503`` and the reason (RFC 3261 §8.1.3.1).

A server INVITE transaction keeps its final response for 64*T1 (Timer H) so that a
retransmitted INVITE is answered with it again, without reaching the dialog layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from switchboard_sip.message import SipMessage
from switchboard_sip.transport import Addr, Transport

T1 = 0.5
T2 = 4.0


class SipError(Exception):
    """A SIP request that did not succeed: ``status`` is the final response code (0 when
    there was none, i.e. a timeout), ``reason`` the reason phrase or our explanation,
    without the code (the text is ``"486 Busy Here"``)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}" if status else reason)
        self.status = status
        self.reason = reason


class _Client:
    def __init__(self, dest: Addr, on_provisional: Callable[[SipMessage], None] | None) -> None:
        self.dest = dest
        self.final: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self.provisional = False
        self.on_provisional = on_provisional


class Transactions:
    """The client transactions under way and the server INVITE transactions' answers."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._clients: dict[tuple[str, str], _Client] = {}
        self.sent_final: dict[str, bytes] = {}  # server INVITE branch -> final response

    # -- client ---------------------------------------------------------------------------

    async def request(
        self,
        data: bytes,
        branch: str,
        method: str,
        dest: Addr,
        *,
        timeout: float = 32 * T1,
        on_provisional: Callable[[SipMessage], None] | None = None,
    ) -> SipMessage:
        """Send a request to ``dest`` and return its final response. Raises
        :class:`SipError` 408 when none comes within ``timeout``, 503 on a transport
        error."""
        key = (branch, method)
        client = _Client(dest, on_provisional)
        self._clients[key] = client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        interval = T1
        invite = method == "INVITE"
        try:
            self.transport.send(data, dest)
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise SipError(408, f"no final response to {method} within {timeout:.0f} s")
                resend = not self.transport.reliable and not (invite and client.provisional)
                try:
                    return await asyncio.wait_for(
                        asyncio.shield(client.final), min(interval, left) if resend else left
                    )
                except TimeoutError:
                    if resend:
                        interval = min(interval * 2, T2)
                        self.transport.send(data, dest)
        finally:
            self._clients.pop(key, None)

    def on_response(self, msg: SipMessage) -> bool:
        """Hand a response to its client transaction; False when none waits for it (a
        retransmitted 2xx to an INVITE, whose transaction ended at the first)."""
        client = self._clients.get((msg.branch, msg.cseq[1]))
        if client is None or client.final.done():
            return False
        if msg.status is not None and msg.status < 200:
            client.provisional = True
            if client.on_provisional is not None:
                client.on_provisional(msg)
        else:
            client.final.set_result(msg)
        return True

    def transport_error(self, dest: Addr, reason: str) -> None:
        """End every client transaction bound for ``dest``: it cannot be reached."""
        for client in list(self._clients.values()):
            if client.dest == dest and not client.final.done():
                client.final.set_exception(SipError(503, reason))

    def cancel_all(self) -> None:
        for client in self._clients.values():
            if not client.final.done():
                client.final.cancel()
        self._clients.clear()

    # -- server INVITE --------------------------------------------------------------------

    def remember_final(self, branch: str, response: bytes) -> None:
        """Keep the final response to a server INVITE for its retransmissions, for as long
        as they may come (64*T1, RFC 3261 Timer H), then forget it."""
        self.sent_final[branch] = response
        asyncio.get_running_loop().call_later(64 * T1, self._forget_final, branch, response)

    def _forget_final(self, branch: str, response: bytes) -> None:
        if self.sent_final.get(branch) is response:
            del self.sent_final[branch]

    def final_for(self, branch: str) -> bytes | None:
        """The final response already sent to the INVITE of ``branch``, if any."""
        return self.sent_final.get(branch)
