"""SIP's transport layer (RFC 3261 §18): UDP, TCP and TLS, each behind one interface.

A transport takes whole SIP messages to send (:meth:`Transport.send`) and hands whole
messages it received to the layer above (``receive(data, addr)``). Over UDP a message is a
datagram; over TCP and TLS it is framed by its ``Content-Length`` (:class:`StreamFramer`).

Streams are bounded as datagrams are: a message larger than ``max_message_size`` closes its
connection, a message must arrive whole within ``message_timeout`` of its first byte (a
peer trickling bytes — slowloris — is cut off), connections nobody uses are closed after
``idle_timeout``, and at most ``max_connections`` are open at once. A TLS handshake that
fails is logged with the peer and the reason, and the requests waiting for that peer fail
at once (``on_error``) instead of timing out. Keep-alives: a CRLFCRLF ping is answered with
a CRLF pong (RFC 5626 §3.5.1).

Connections are reused: a message to an address goes over the connection open to it,
whichever side opened it, and a response goes back over the connection its request came
on (RFC 3261 §18.2.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

from switchboard import Tasks
from switchboard_sip import message as sipmsg

log = logging.getLogger("switchboard.sip")

Addr = tuple[str, int]
Receive = Callable[[bytes, Addr], None]
OnError = Callable[[Addr, str], None]

PING = b"\r\n\r\n"
PONG = b"\r\n"
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


class FramingError(ValueError):
    """A stream that cannot be split into SIP messages: the connection is closed."""


class StreamFramer:
    """Split a TCP/TLS byte stream into SIP messages by their ``Content-Length`` (RFC 3261
    §18.3: required on streams). Bytes between messages that are only CRLFs are keep-alives:
    :meth:`feed` reports each ``CRLFCRLF`` ping so that the caller can answer it."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.buffer = bytearray()

    @property
    def partial(self) -> bool:
        """Whether part of a message is waiting for the rest."""
        return bool(self.buffer)

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """Add ``data``; return the messages it completed and the number of pings."""
        self.buffer += data
        messages: list[bytes] = []
        pings = 0
        while True:
            stripped = len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))
            if stripped:
                pings += bytes(self.buffer[:stripped]).count(PING)
                del self.buffer[:stripped]
            if not self.buffer:
                return messages, pings
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > self.max_size:
                    raise FramingError(f"headers longer than {self.max_size} bytes")
                return messages, pings
            head = bytes(self.buffer[:end])
            length = self._content_length(head)
            total = end + 4 + length
            if total > self.max_size:
                raise FramingError(
                    f"a message of {total} bytes exceeds the {self.max_size}-byte limit"
                )
            if len(self.buffer) < total:
                return messages, pings
            messages.append(bytes(self.buffer[:total]))
            del self.buffer[:total]

    @staticmethod
    def _content_length(head: bytes) -> int:
        for line in head.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in (b"content-length", b"l"):
                text = value.strip()
                if not sipmsg.LENGTH.fullmatch(text.decode("ascii", "replace")):
                    raise FramingError(f"bad Content-Length {text[:40]!r}")
                return int(text)
        raise FramingError("no Content-Length (required on TCP and TLS)")


class Transport:
    """One transport of the user agent; subclasses do UDP and streams (TCP, TLS)."""

    name = "UDP"  # as written in Via
    reliable = False  # no retransmissions over it (RFC 3261 §17.1.1.2)

    def __init__(self, receive: Receive, on_error: OnError, max_message_size: int) -> None:
        self.receive = receive
        self.on_error = on_error
        self.max_message_size = max_message_size
        self.local_port = 0

    @property
    def scheme_param(self) -> str:
        """The ``;transport=`` URI parameter naming it (empty for UDP, the default)."""
        return "" if self.name == "UDP" else f";transport={self.name.lower()}"

    async def start(self, ip: str, port: int) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def send(self, data: bytes, addr: Addr) -> None:
        raise NotImplementedError

    def keepalive(self, addr: Addr) -> None:
        """Keep the NAT binding (and the connection) to ``addr`` open: a CRLFCRLF ping."""
        self.send(PING, addr)

    def health(self) -> dict[str, Any]:
        return {"transport": self.name.lower()}


class UdpTransport(Transport, asyncio.DatagramProtocol):
    name = "UDP"
    reliable = False

    def __init__(self, receive: Receive, on_error: OnError, max_message_size: int) -> None:
        super().__init__(receive, on_error, max_message_size)
        self._transport: asyncio.DatagramTransport | None = None
        self._closed: asyncio.Future[None] | None = None

    async def start(self, ip: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(ip, port)
        )
        self.local_port = self._transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            assert self._closed is not None
            await self._closed  # the socket is closed (port free) once this is done

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def send(self, data: bytes, addr: Addr) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if not data.strip(b"\r\n\x00 "):
            return  # a keep-alive
        self.receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket: %s", exc)


class _Connection:
    """One TCP or TLS connection: its writer, and when it last carried a message."""

    def __init__(self, addr: Addr, writer: asyncio.StreamWriter, incoming: bool) -> None:
        self.addr = addr
        self.writer = writer
        self.incoming = incoming
        self.used = asyncio.get_running_loop().time()


class StreamTransport(Transport):
    """TCP, or TLS when given an SSL context for the client side (and one for the server
    side to take TLS connections on ``local_port``; without it only the connections we
    open, and the ones the far end opens with ``alias`` reuse, RFC 5923, carry requests)."""

    def __init__(
        self,
        receive: Receive,
        on_error: OnError,
        max_message_size: int,
        *,
        client_ssl: ssl.SSLContext | None = None,
        server_ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        message_timeout: float = 10.0,
        idle_timeout: float = 600.0,
        max_connections: int = 1024,
        connect_timeout: float = 8.0,
    ) -> None:
        super().__init__(receive, on_error, max_message_size)
        self.name = "TLS" if client_ssl is not None else "TCP"
        self.reliable = True
        self.client_ssl = client_ssl
        self.server_ssl = server_ssl
        self.server_hostname = server_hostname
        self.message_timeout = message_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.connections: dict[Addr, _Connection] = {}
        self._connecting: dict[Addr, list[bytes]] = {}
        self._server: asyncio.Server | None = None
        self._tasks = Tasks(log)
        self.refused_connections = 0
        self.handshake_failures = 0

    async def start(self, ip: str, port: int) -> None:
        if self.client_ssl is not None and self.server_ssl is None:
            self.local_port = port  # nothing listens: the port only names us in Via
            return
        self._server = await asyncio.start_server(
            self._accepted, ip, port, limit=self.max_message_size + 1
        )
        self.local_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            conn.writer.close()
        await self._tasks.cancel_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        self.connections.clear()
        self._connecting.clear()

    def health(self) -> dict[str, Any]:
        return {
            "transport": self.name.lower(),
            "connections": len(self.connections),
            "refused_connections": self.refused_connections,
            "tls_handshake_failures": self.handshake_failures,
        }

    # -- sending --------------------------------------------------------------------------

    def send(self, data: bytes, addr: Addr) -> None:
        conn = self.connections.get(addr)
        if conn is not None and not conn.writer.is_closing():
            conn.used = asyncio.get_running_loop().time()
            conn.writer.write(data)
            return
        if data == PING:
            return  # no connection to keep alive
        queued = self._connecting.get(addr)
        if queued is not None:
            if len(queued) < 64:
                queued.append(data)
            return
        self._connecting[addr] = [data]
        self._tasks.spawn(self._connect(addr), name=f"sip-connect-{addr[0]}:{addr[1]}")

    async def _connect(self, addr: Addr) -> None:
        host, port = addr
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    ssl=self.client_ssl,
                    server_hostname=(self.server_hostname or host) if self.client_ssl else None,
                    limit=self.max_message_size + 1,
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            queued = self._connecting.pop(addr, [])
            reason = self._reason(exc)
            if isinstance(exc, ssl.SSLError):
                self.handshake_failures += 1
                reason = f"TLS handshake with {host}:{port} failed: {reason}"
            else:
                reason = f"cannot connect over {self.name} to {host}:{port}: {reason}"
            log.warning("%s (%d messages not sent)", reason, len(queued))
            self.on_error(addr, reason)
            return
        conn = _Connection(addr, writer, incoming=False)
        self.connections[addr] = conn
        for data in self._connecting.pop(addr, []):
            writer.write(data)
        await self._serve(conn, reader)

    @staticmethod
    def _reason(exc: BaseException) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {exc.verify_message}"
        if isinstance(exc, TimeoutError):
            return "timed out"
        return str(exc) or type(exc).__name__

    # -- receiving ------------------------------------------------------------------------

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr: Addr = (str(peer[0]), int(peer[1]))
        if len(self.connections) >= self.max_connections:
            self.refused_connections += 1
            if self.refused_connections in (1, 10, 100) or self.refused_connections % 1000 == 0:
                log.warning(
                    "refusing a %s connection from %s:%s: %d open (max_connections); %d refused",
                    self.name,
                    *addr,
                    len(self.connections),
                    self.refused_connections,
                )
            writer.close()
            return
        if self.server_ssl is not None:
            try:
                await writer.start_tls(self.server_ssl, ssl_handshake_timeout=self.message_timeout)
            except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
                self.handshake_failures += 1
                log.warning(
                    "TLS handshake from %s:%s failed: %s", addr[0], addr[1], self._reason(exc)
                )
                writer.close()
                return
        conn = _Connection(addr, writer, incoming=True)
        self.connections[addr] = conn
        await self._tasks.spawn(self._serve(conn, reader), name=f"sip-conn-{addr[0]}:{addr[1]}")

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        framer = StreamFramer(self.max_message_size)
        loop = asyncio.get_running_loop()
        why = "closed by the peer"
        try:
            while True:
                # a message under way must be whole within message_timeout; between
                # messages a connection may rest up to idle_timeout
                wait = self.message_timeout if framer.partial else self.idle_timeout
                try:
                    data = await asyncio.wait_for(reader.read(65_536), wait)
                except TimeoutError:
                    if framer.partial:
                        why = f"a message not complete within {self.message_timeout:g} s"
                    elif loop.time() - conn.used >= self.idle_timeout:
                        why = f"idle for {self.idle_timeout:g} s"
                    else:
                        continue  # we sent on it lately: keep it
                    break
                if not data:
                    break
                conn.used = loop.time()
                try:
                    messages, pings = framer.feed(data)
                except FramingError as exc:
                    why = str(exc)
                    log.warning(
                        "closing the %s connection with %s:%s: %s",
                        self.name,
                        *conn.addr,
                        exc,
                    )
                    break
                for _ in range(pings):
                    conn.writer.write(PONG)
                for message in messages:
                    self.receive(message, conn.addr)
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            why = self._reason(exc)
        finally:
            if self.connections.get(conn.addr) is conn:
                del self.connections[conn.addr]
            conn.writer.close()
            log.debug("%s connection with %s:%s closed: %s", self.name, *conn.addr, why)


def client_context(
    *,
    verify: bool = True,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """The TLS context for connections we open: the system's CAs (or ``ca_file``), the
    certificate and host name checked unless ``verify`` is off, an optional client
    certificate."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def server_context(cert_file: str, key_file: str | None) -> ssl.SSLContext:
    """The TLS context for connections the far end opens to us (our certificate)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
