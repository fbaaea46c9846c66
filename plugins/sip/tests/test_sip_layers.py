"""The UA's layers on their own, over real loopback sockets: stream framing and its bounds
(oversized, slowloris, too many connections, failed TLS handshakes), keep-alives, client
transactions (retransmission over UDP only, transport errors at once), registration
(digest, NAT discovery) and the dialog's session timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from switchboard_sip import message as sipmsg
from switchboard_sip.dialog import Leg
from switchboard_sip.testing import free_udp_port
from switchboard_sip.transaction import SipError, Transactions
from switchboard_sip.transport import (
    PING,
    PONG,
    FramingError,
    StreamFramer,
    StreamTransport,
    UdpTransport,
    client_context,
    server_context,
)
from switchboard_sip.ua import UserAgent


def options(n: int = 1, body: bytes = b"") -> bytes:
    return (
        f"OPTIONS sip:switchboard@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKlayer{n}\r\n"
        "From: <sip:probe@127.0.0.1>;tag=a\r\nTo: <sip:switchboard@127.0.0.1>\r\n"
        f"Call-ID: layer-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- framing ---------------------------------------------------------------------------------


def test_framer_splits_messages_across_and_within_chunks() -> None:
    framer = StreamFramer(4096)
    one, two = options(1, b"hello"), options(2)
    stream = PING + one + two
    got: list[bytes] = []
    pings = 0
    for i in range(0, len(stream), 7):  # dribbled in 7-byte pieces
        messages, n = framer.feed(stream[i : i + 7])
        got += messages
        pings += n
    assert got == [one, two] and pings == 1 and not framer.partial
    assert sipmsg.parse(got[0]).body == b"hello"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (options(1).replace(b"Content-Length: 0\r\n", b""), "no Content-Length"),
        (options(1).replace(b"Content-Length: 0", b"Content-Length: -5"), "bad Content-Length"),
        (options(1).replace(b"Content-Length: 0", b"Content-Length: 900000"), "exceeds"),
        (b"OPTIONS sip:x SIP/2.0\r\nX-Pad: " + b"A" * 5000, "headers longer than"),
    ],
    ids=["no-length", "bad-length", "huge-body", "endless-headers"],
)
def test_framer_refuses_what_cannot_be_framed(data: bytes, error: str) -> None:
    with pytest.raises(FramingError, match=error):
        StreamFramer(4096).feed(data)


# -- stream bounds ---------------------------------------------------------------------------


class Received:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, tuple[str, int]]] = []
        self.errors: list[tuple[tuple[str, int], str]] = []

    def receive(self, data: bytes, addr: tuple[str, int]) -> None:
        self.messages.append((data, addr))

    def error(self, addr: tuple[str, int], reason: str) -> None:
        self.errors.append((addr, reason))


@pytest.fixture
async def tcp() -> AsyncIterator[tuple[StreamTransport, Received]]:
    got = Received()
    transport = StreamTransport(
        got.receive, got.error, 4096, message_timeout=0.5, idle_timeout=30, max_connections=3
    )
    await transport.start("127.0.0.1", 0)
    try:
        yield transport, got
    finally:
        await transport.stop()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the far end closed the connection within ``seconds``."""
    try:
        while await asyncio.wait_for(reader.read(4096), seconds):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def test_a_slowloris_connection_is_cut_and_others_go_on(
    tcp: tuple[StreamTransport, Received], caplog: pytest.LogCaptureFixture
) -> None:
    transport, got = tcp
    slow_r, slow_w = await asyncio.open_connection("127.0.0.1", transport.local_port)
    good_r, good_w = await asyncio.open_connection("127.0.0.1", transport.local_port)
    slow_w.write(options(1)[:40])  # and never the rest
    good_w.write(options(2))
    with caplog.at_level(logging.DEBUG, logger="switchboard.sip"):
        assert await closed_within(slow_r, 3)
    assert [sipmsg.parse(m).call_id for m, _ in got.messages] == ["layer-2"]
    assert "not complete within 0.5 s" in caplog.text
    good_w.write(options(3))  # the other connection still carries messages
    await asyncio.sleep(0.2)
    assert len(got.messages) == 2 and not good_r.at_eof()
    good_w.close()
    slow_w.close()


async def test_oversized_and_unframed_streams_are_closed(
    tcp: tuple[StreamTransport, Received], caplog: pytest.LogCaptureFixture
) -> None:
    transport, got = tcp
    for data in (options(1) + b"X" * 5000, options(2).replace(b"Content-Length: 0\r\n", b"")):
        reader, writer = await asyncio.open_connection("127.0.0.1", transport.local_port)
        with caplog.at_level(logging.WARNING, logger="switchboard.sip"):
            writer.write(options(9).replace(b"Content-Length: 0", b"Content-Length: 5000"))
            writer.write(data)
            assert await closed_within(reader, 3)
        writer.close()
    assert got.messages == []
    assert "exceeds the 4096-byte limit" in caplog.text


async def test_connections_beyond_the_limit_are_refused(
    tcp: tuple[StreamTransport, Received],
) -> None:
    transport, _ = tcp
    held = [await asyncio.open_connection("127.0.0.1", transport.local_port) for _ in range(3)]
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", transport.local_port)
    assert await closed_within(reader, 2)
    assert transport.refused_connections == 1
    assert transport.health()["connections"] == 3
    for _, w in [*held, (reader, writer)]:
        w.close()


async def test_a_ping_gets_a_pong(tcp: tuple[StreamTransport, Received]) -> None:
    transport, got = tcp
    reader, writer = await asyncio.open_connection("127.0.0.1", transport.local_port)
    writer.write(PING)
    assert await asyncio.wait_for(reader.readexactly(2), 2) == PONG
    assert got.messages == []
    writer.close()


async def test_a_failed_tls_handshake_is_logged_with_the_peer_and_others_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, ca_file = tmp_path / "cert.pem", tmp_path / "ca.pem"
    cert_file.write_bytes(
        b"".join(b.bytes() for b in (cert.private_key_pem, *cert.cert_chain_pems))
    )
    ca.cert_pem.write_to_path(str(ca_file))
    got = Received()
    transport = StreamTransport(
        got.receive,
        got.error,
        4096,
        client_ssl=client_context(ca_file=str(ca_file)),
        server_ssl=server_context(str(cert_file), None),
        message_timeout=1.0,
    )
    await transport.start("127.0.0.1", 0)
    try:
        with caplog.at_level(logging.WARNING, logger="switchboard.sip"):
            reader, writer = await asyncio.open_connection("127.0.0.1", transport.local_port)
            writer.write(b"OPTIONS sip:x SIP/2.0\r\n\r\n")  # plain text to a TLS port
            assert await closed_within(reader, 3)
            writer.close()
        assert transport.handshake_failures == 1
        assert "TLS handshake from 127.0.0.1:" in caplog.text
        # a client that checks the certificate is served
        trusting = client_context(ca_file=str(ca_file))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", transport.local_port, ssl=trusting, server_hostname="localhost"
        )
        writer.write(options(1))
        await asyncio.sleep(0.3)
        assert [sipmsg.parse(m).call_id for m, _ in got.messages] == ["layer-1"]
        writer.close()
    finally:
        await transport.stop()


# -- transactions ----------------------------------------------------------------------------


async def test_udp_requests_are_retransmitted_stream_ones_are_not() -> None:
    # a UDP peer that counts and never answers
    udp_peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_peer.bind(("127.0.0.1", 0))
    udp_peer.setblocking(False)
    got = Received()
    udp = UdpTransport(got.receive, got.error, 4096)
    await udp.start("127.0.0.1", 0)
    try:
        with pytest.raises(SipError, match="408"):
            await Transactions(udp).request(
                options(1), "z9hG4bKlayer1", "OPTIONS", udp_peer.getsockname(), timeout=2.0
            )
        sent = 0
        with contextlib.suppress(BlockingIOError):
            while udp_peer.recv(4096):
                sent += 1
        assert sent >= 3  # at 0, 0.5 and 1.5 s
    finally:
        await udp.stop()
        udp_peer.close()

    counted: list[bytes] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            counted.append(data)
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    stream = StreamTransport(got.receive, got.error, 4096)
    await stream.start("127.0.0.1", 0)
    try:
        with pytest.raises(SipError, match="408"):
            await Transactions(stream).request(
                options(2),
                "z9hG4bKlayer2",
                "OPTIONS",
                server.sockets[0].getsockname()[:2],
                timeout=2.0,
            )
        assert b"".join(counted) == options(2)  # once
    finally:
        await stream.stop()
        server.close()
        await server.wait_closed()


async def test_an_unreachable_stream_peer_fails_the_transaction_at_once() -> None:
    got = Received()
    stream = StreamTransport(got.receive, got.error, 4096)
    await stream.start("127.0.0.1", 0)
    transactions = Transactions(stream)
    stream.on_error = transactions.transport_error
    closed = ("127.0.0.1", free_udp_port())  # nobody listens there
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(SipError, match=r"503 cannot connect over TCP to 127\.0\.0\.1"):
            await transactions.request(options(1), "z9hG4bKlayer1", "OPTIONS", closed, timeout=30)
        assert loop.time() - started < 2
    finally:
        await stream.stop()


async def test_a_tls_client_refuses_a_certificate_it_cannot_check(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0, ssl=server_ctx)
    got = Received()
    stream = StreamTransport(got.receive, got.error, 4096, client_ssl=client_context())
    await stream.start("127.0.0.1", 0)
    transactions = Transactions(stream)
    stream.on_error = transactions.transport_error
    try:
        with pytest.raises(SipError, match=r"TLS handshake with 127\.0\.0\.1:.*certificate verify"):
            await transactions.request(
                options(1), "z9hG4bKlayer1", "OPTIONS", server.sockets[0].getsockname()[:2]
            )
        assert stream.handshake_failures == 1
    finally:
        await stream.stop()
        server.close()
        await server.wait_closed()


# -- registration and dialog ------------------------------------------------------------------


def bare_ua(**settings: Any) -> UserAgent:
    """A user agent on loopback (not started unless the test starts it)."""
    defaults: dict[str, Any] = {
        "server": "127.0.0.1",
        "port": 5060,
        "username": "sb",
        "password": "",
        "ip": "127.0.0.1",
        "local_port": 0,
        "rtp_ports": (40000, 40010),
        "codecs": ["PCMU"],
    }
    return UserAgent(**(defaults | settings))


async def test_registration_answers_the_challenge_and_learns_its_address_behind_nat() -> None:
    """A registrar (a scripted UDP peer) challenges, then answers with our Via's
    ``received``/``rport`` naming another address, as behind NAT: the agent registers
    again with that address and unbinds the private one (RFC 3581, RFC 3261 §10.2.2)."""
    registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    registrar.bind(("127.0.0.1", 0))
    registrar.setblocking(False)
    ua = bare_ua(port=registrar.getsockname()[1], password="pw")
    await ua.start()
    loop = asyncio.get_running_loop()
    seen: list[sipmsg.SipMessage] = []

    async def serve() -> None:
        while True:
            data, addr = await loop.sock_recvfrom(registrar, 65535)
            if not data.strip():
                continue  # a keep-alive
            msg = sipmsg.parse(data)
            seen.append(msg)
            if msg.get("Authorization") is None:
                reply = sipmsg.response(
                    msg,
                    401,
                    headers=[("WWW-Authenticate", 'Digest realm="test", nonce="n1", qop="auth"')],
                )
            else:
                via = msg.get_all("Via")[0].replace(";rport", ";rport=40000")
                via += ";received=203.0.113.7"
                resp = sipmsg.parse(sipmsg.response(msg, 200, to_tag="r"))
                resp.headers = [("Via", via) if k == "Via" else (k, v) for k, v in resp.headers]
                resp.headers.append(("Contact", f"{ua.contact};expires=120"))
                reply = resp.to_bytes()
            registrar.sendto(reply, addr)

    server = asyncio.ensure_future(serve())
    try:
        private = ua.contact
        granted = await ua.register()
        assert granted == 120
        assert ua.learned == ("203.0.113.7", 40000)
        assert ua.contact == "<sip:sb@203.0.113.7:40000>"
        assert ua.keepalive_interval == 25.0  # behind NAT: keep the binding
        # REGISTER, challenged; with credentials, 200 naming our public address; again
        # with it (and the private one unbound), challenged; with credentials, 200
        plain, authorized, again, again_authorized = seen[:4]
        assert plain.get("Authorization") is None
        assert (authorized.get("Authorization") or "").startswith('Digest username="sb"')
        assert again.get_all("Contact") == [ua.contact, f"{private};expires=0"]
        assert plain.call_id == again.call_id and again.cseq[0] > authorized.cseq[0]
        assert again_authorized.cseq[0] > again.cseq[0]
    finally:
        server.cancel()
        await ua.stop()
        registrar.close()


def test_session_timers_are_agreed_as_rfc_4028_says() -> None:
    """Who refreshes, by the INVITE's Session-Expires and Supported, or by our 2xx's."""
    ua = bare_ua(session_expires=1800)

    def invite(*headers: str) -> sipmsg.SipMessage:
        return sipmsg.parse(
            (
                "INVITE sip:sb@127.0.0.1 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKt\r\n"
                "From: <sip:a@b>;tag=1\r\nTo: <sip:sb@127.0.0.1>\r\nCall-ID: t\r\n"
                "CSeq: 1 INVITE\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
            ).encode()
        )

    leg = Leg(ua, "t", outgoing=False)
    leg.session_expires = 1800
    leg.agree_timer(
        invite("Supported: timer", "Session-Expires: 600;refresher=uac"), we_are_uac=False
    )
    assert (leg.session_expires, leg.we_refresh) == (600, False)
    assert leg.timer_headers(we_are_uac=False) == [
        ("Session-Expires", "600;refresher=uac"),
        ("Require", "timer"),
    ]
    leg = Leg(ua, "u", outgoing=False)
    leg.session_expires = 1800
    leg.agree_timer(invite(), we_are_uac=False)  # the caller knows no timers: we refresh
    assert (leg.session_expires, leg.we_refresh) == (1800, True)
    assert leg.timer_headers(we_are_uac=False) == [("Session-Expires", "1800;refresher=uas")]
    leg = Leg(ua, "v", outgoing=False)
    leg.session_expires = 1800
    leg.agree_timer(invite("Session-Expires: 30"), we_are_uac=False)  # below the floor
    assert leg.session_expires == 90
    out = Leg(ua, "w", outgoing=True)
    out.session_expires = 1800
    out.agree_timer(invite(), we_are_uac=True)  # a 2xx without Session-Expires: none
    assert out.session_expires == 0 and out.timer_headers(we_are_uac=True) == []


def test_a_2xx_that_leaves_the_refresher_unsaid_makes_us_refresh() -> None:
    """Safer than waiting for refreshes that never come and hanging up a good call."""
    ua = bare_ua()
    ok = sipmsg.parse(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKt\r\n"
        b"From: <sip:sb@x>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: t\r\nCSeq: 1 INVITE\r\n"
        b"Session-Expires: 300\r\n\r\n"
    )
    leg = Leg(ua, "t", outgoing=True)
    leg.session_expires = 1800
    leg.agree_timer(ok, we_are_uac=True)
    assert (leg.session_expires, leg.we_refresh) == (300, True)
