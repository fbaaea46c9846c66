"""Fuzzing the SIP edge (Hypothesis): whatever arrives on the SIP or an RTP port, the
parsers answer with their own error or a message every later step can use; nothing else
escapes. A bounded run in `make test`; `make fuzz` runs long."""

from __future__ import annotations

import asyncio
import struct

from hypothesis import given
from hypothesis import strategies as st

from switchboard.testing import mutated
from switchboard_sip import message as sipmsg
from switchboard_sip.media import MAX_QUEUED_DIGITS, MediaError, RtpStream, Sdp, parse_sdp

INVITE = (
    b"INVITE sip:101@pbx SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n"
    b'From: "Bob" <sip:+12025550143@pbx>;tag=abc\r\n'
    b"To: <sip:101@pbx>\r\n"
    b"Call-ID: call-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:bob@10.0.0.1:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n\r\nbody"
)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)
# the characters that matter to a line-based text protocol, and some that must not
ALPHABET = b'\r\n\t :;,<>"=@/[]0123456789abcSIPsipV\x00\x7f\xc2\xb2\xff'


def use(msg: sipmsg.SipMessage) -> None:
    """What the UA does with a parsed message: none of it may raise."""
    assert msg.call_id and msg.cseq[0] >= 0
    _ = (msg.branch, msg.from_tag, msg.to_tag, msg.get_all("Record-Route"))
    if msg.is_request:
        host, port = sipmsg.reply_address(msg, ("192.0.2.1", 5060))
        assert host == "192.0.2.1" and 0 < port < 65536
        answer = sipmsg.response(msg, 200, to_tag="t")
        head = answer.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
        assert b"\r" not in head and b"\x00" not in head
        sipmsg.parse(answer)  # our own answer parses


@given(st.one_of(st.binary(max_size=2000), mutated(INVITE, ALPHABET)))
def test_the_sip_parser_refuses_or_parses_fuzz(data: bytes) -> None:
    try:
        msg = sipmsg.parse(data)
    except sipmsg.SipParseError:
        answer = sipmsg.safe_response(data, 400, "Bad Request")
        if answer is not None:
            head = answer.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
            assert b"\r" not in head and b"\x00" not in head
        return
    use(msg)


@given(st.one_of(st.binary(max_size=600), mutated(SDP, ALPHABET)))
def test_the_sdp_parser_refuses_or_parses_fuzz(body: bytes) -> None:
    try:
        sdp = parse_sdp(body, ["PCMU", "PCMA"])
    except MediaError:
        return
    assert isinstance(sdp, Sdp) and 0 < sdp.port < 65536 and sdp.payload in (0, 8)


def rtp(payload_type: int, payload: bytes, flags: int, marker: bool) -> bytes:
    return struct.pack("!BBHII", flags, payload_type | (0x80 if marker else 0), 1, 160, 7) + payload


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.builds(
                rtp,
                st.sampled_from([0, 8, 101, 13, 127]),
                st.binary(max_size=200),
                st.sampled_from([0x80, 0x90, 0xA0, 0xB0, 0x8F, 0x00]),
                st.booleans(),
            ),
        ),
        max_size=60,
    )
)
def test_rtp_packets_from_the_peer_never_break_the_stream_fuzz(packets: list[bytes]) -> None:
    async def feed() -> None:
        stream = RtpStream("127.0.0.1", 0)
        stream.remote = ("192.0.2.1", 4000)
        for p in packets:
            stream.datagram_received(p, ("192.0.2.1", 4000))
        assert stream.digits.qsize() <= MAX_QUEUED_DIGITS
        assert len(stream.inbound) <= 50

    asyncio.run(feed())
