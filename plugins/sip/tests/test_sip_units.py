"""The SIP parser, SDP and RTP layers on their own (the wire behaviour is tested end to end
in the other files)."""

from __future__ import annotations

import asyncio
import socket
import struct
import wave
from pathlib import Path

import pytest

from switchboard_sip import message as sipmsg
from switchboard_sip.media import (
    FRAME_BYTES,
    MAX_QUEUED_DIGITS,
    Crypto,
    MediaError,
    RtpStream,
    Sdp,
    decode,
    encode,
    load_prompt,
    make_sdp,
    parse_sdp,
    tone,
)
from switchboard_sip.testing import free_udp_port
from switchboard_sip.ua import digest

INVITE = (
    b"INVITE sip:101@pbx SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2\r\n"
    b"Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n"
    b"Record-Route: <sip:p3;lr>\r\n"
    b'f: "Bob, the caller" <sip:+12025550143@pbx>;tag=abc\r\n'
    b"t: <sip:101@pbx>\r\n"
    b"i: call-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Subject: a folded\r\n  header\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 4\r\n\r\nbody"
)


def test_parser_keeps_repeated_headers_compact_forms_and_folding() -> None:
    msg = sipmsg.parse(INVITE)
    assert msg.method == "INVITE"
    assert len(msg.get_all("Via")) == 2
    assert msg.get_all("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert msg.from_tag == "abc"
    assert sipmsg.display_name(msg.first("From")) == "Bob, the caller"
    assert sipmsg.user_of(sipmsg.uri_of(msg.first("From"))) == "+12025550143"
    assert msg.get("Subject") == "a folded header"
    assert msg.body == b"body"
    assert msg.cseq == (1, "INVITE")


def test_a_dialog_creating_answer_copies_the_record_route_set() -> None:
    ok = sipmsg.parse(sipmsg.response(sipmsg.parse(INVITE), 200, to_tag="xyz"))
    assert ok.get_all("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert ok.to_tag == "xyz"
    assert len(ok.get_all("Via")) == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"INVITE\r\n\r\n", "malformed request line"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP x\r\n\r\n", "malformed header line"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", "missing or empty From header"),
        (b"SIP/2.0 999 Odd\r\n\r\n", "bad status code"),
        (INVITE.replace(b"l: 4", b"l: 40"), "truncated"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "does not match"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: \xff\xfe\r\n\r\n", "not UTF-8"),
        # found by an outside review: these raised a bare ValueError out of parse(), or
        # parsed and failed later, or echoed a bare CR into our answers
        (INVITE.replace(b"l: 4", "l: ²".encode()), "bad Content-Length"),
        (INVITE.replace(b"CSeq: 1 INVITE", "CSeq: ¹ INVITE".encode()), "malformed CSeq"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: " + b"9" * 5000 + b" INVITE"), "CSeq"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE"), "malformed CSeq"),
        (INVITE.replace(b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport", b"v:"), "Via"),
        (INVITE.replace(b"i: call-1", b"i: call-1\rInjected: yes"), "control character"),
        (INVITE.replace(b"i: call-1", b"i: call\x00-1"), "control character"),
        (b"SIP/2.0 2\xc2\xb200 OK\r\n\r\n", "bad status code"),
    ],
)
def test_parser_says_what_is_wrong(data: bytes, reason: str) -> None:
    with pytest.raises(sipmsg.SipParseError, match=reason):
        sipmsg.parse(data)


def test_an_answer_to_an_unparsable_request_never_carries_a_control_character() -> None:
    data = INVITE.replace(b"i: call-1", b"i: call-1\rInjected: yes")
    answer = sipmsg.safe_response(data, 400, "Bad Request (x\r\ny)")
    assert answer is not None
    head = answer.split(b"\r\n\r\n")[0]
    assert b"\r" not in head.replace(b"\r\n", b"")
    assert b"\r\nInjected" not in answer


def test_digest_answers_a_qop_challenge() -> None:
    value = digest(
        'Digest realm="pbx", nonce="n1", qop="auth", opaque="o"', "REGISTER", "sip:pbx", "u", "p"
    )
    assert value.startswith("Digest ")
    assert 'realm="pbx"' in value and "qop=auth" in value and 'opaque="o"' in value


def test_sdp_negotiation_picks_our_preferred_common_codec() -> None:
    offer = make_sdp("10.0.0.1", 4000, ["PCMA", "PCMU"], 1)
    sdp = parse_sdp(offer, ["PCMU", "PCMA"])
    assert (sdp.address, sdp.port, sdp.payload, sdp.event_payload) == ("10.0.0.1", 4000, 0, 101)
    with pytest.raises(MediaError, match="no common codec"):
        parse_sdp(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 18\r\n", ["PCMU"])
    with pytest.raises(MediaError, match="no audio"):
        parse_sdp(b"v=0\r\n", ["PCMU"])


def test_pcma_is_encoded_as_pcma() -> None:
    """pyVoIP encodes PCMA with the PCMU encoder (RTPClient.encode_packet)."""
    pcm = tone(0.02, 440)
    assert encode(pcm, 8) != encode(pcm, 0)
    back = decode(encode(pcm, 8), 8)
    assert (
        max(
            abs(a - b)
            for a, b in zip(struct.unpack("<160h", pcm), struct.unpack("<160h", back), strict=True)
        )
        < 600
    )


async def test_rtp_digits_count_once_without_marker_bit_and_csrc_headers_are_skipped() -> None:
    port = free_udp_port()
    stream = RtpStream("127.0.0.1", port)
    await stream.open()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            stream.set_remote(Sdp("127.0.0.1", s.getsockname()[1], 0, 101))
            # digit 5, three packets of one event (same timestamp), no marker bit
            for end in (0, 0, 0x80):
                s.sendto(
                    struct.pack("!BBHII", 0x80, 101, 1, 1000, 7) + bytes([5, end, 0, 160]),
                    ("127.0.0.1", port),
                )
            # digit 9 with the marker bit, another event
            s.sendto(
                struct.pack("!BBHII", 0x80, 0x80 | 101, 2, 2000, 7) + bytes([9, 0, 0, 160]),
                ("127.0.0.1", port),
            )
            # audio with one CSRC and a header extension: the payload starts after them
            audio = encode(tone(0.02, 440), 0)
            header = struct.pack("!BBHII", 0x91, 0, 3, 3000, 7) + struct.pack("!I", 42)
            header += struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4
            s.sendto(header + audio, ("127.0.0.1", port))
        for _ in range(100):
            if stream.digits.qsize() >= 2 and stream.inbound:
                break
            await asyncio.sleep(0.01)
        assert [stream.digits.get_nowait() for _ in range(stream.digits.qsize())] == ["5", "9"]
        frame = stream.inbound.popleft()
        assert len(frame) == FRAME_BYTES
        assert frame == decode(audio, 0)
    finally:
        stream.close()


def test_prompts_are_converted_to_8k_mono_and_bad_files_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "stereo44k.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"\x00\x10" * 2 * 44100)  # one second
    pcm = load_prompt(path)
    assert abs(len(pcm) - 16000) < 40
    with pytest.raises(MediaError, match="does not exist"):
        load_prompt(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(MediaError, match="not a readable WAV"):
        load_prompt(tmp_path / "bad.wav")


async def test_rtp_from_anyone_but_the_negotiated_peer_is_dropped() -> None:
    """Found by an outside review: packets from any address were taken as digits and
    audio (IVR navigation and audio injected into recordings by sweeping the ports)."""
    port = free_udp_port()
    stream = RtpStream("127.0.0.1", port)
    await stream.open()
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder,
        ):
            peer.bind(("127.0.0.1", 0))
            intruder.bind(("127.0.0.2", 0))  # another host
            stream.set_remote(Sdp("127.0.0.1", peer.getsockname()[1], 0, 101))
            audio = encode(tone(0.02, 440), 0)
            for i in range(40):  # digits and audio from the intruder, more digits than fit
                digit = struct.pack("!BBHII", 0x80, 101, i, 1000 * i, 9) + bytes(
                    [i % 10, 0x80, 0, 1]
                )
                intruder.sendto(digit, ("127.0.0.1", port))
                intruder.sendto(
                    struct.pack("!BBHII", 0x80, 0, i, 160 * i, 9) + audio, ("127.0.0.1", port)
                )
            for i in range(40):  # the peer presses 40 digits nobody collects: bounded
                digit = struct.pack("!BBHII", 0x80, 101, i, 5000 + i, 7) + bytes(
                    [i % 10, 0x80, 0, 1]
                )
                peer.sendto(digit, ("127.0.0.1", port))
        for _ in range(200):
            if stream.foreign_packets >= 80 and stream.digits.full():
                break
            await asyncio.sleep(0.01)
        assert stream.foreign_packets == 80
        assert not stream.inbound
        kept = [stream.digits.get_nowait() for _ in range(stream.digits.qsize())]
        assert len(kept) == MAX_QUEUED_DIGITS
        assert kept == [str(i % 10) for i in range(40 - MAX_QUEUED_DIGITS, 40)]  # the newest
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        ("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport", ("192.0.2.9", 40000)),
        ("SIP/2.0/UDP 10.0.0.1:5070;rport=5071;branch=z9hG4bK1", ("192.0.2.9", 40000)),
        ("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1", ("192.0.2.9", 5070)),
        ("SIP/2.0/UDP pbx.example.com;branch=z9hG4bK1", ("192.0.2.9", 5060)),
        ("SIP/2.0/UDP [2001:db8::1]:5080;branch=z9hG4bK1", ("192.0.2.9", 5080)),
        ("SIP/2.0/UDP 10.0.0.1:99999;branch=z9hG4bK1", ("192.0.2.9", 5060)),
    ],
)
def test_responses_go_where_the_top_via_says(via: str, expected: tuple[str, int]) -> None:
    """RFC 3261 18.2.2 with RFC 3581: to the source address; to its port with rport, else
    to the Via's sent-by port."""
    request = sipmsg.parse(
        INVITE.replace(b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport", f"v: {via}".encode())
    )
    assert sipmsg.reply_address(request, ("192.0.2.9", 40000)) == expected


def test_an_offer_we_cannot_take_says_what_it_held() -> None:
    """Found by an outside review: a G.729-only offer was logged as "offered []"."""
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 18 96\r\na=rtpmap:96 opus/48000/2\r\n"
    )
    with pytest.raises(MediaError, match=r"offered \['G729', 'OPUS'\]"):
        parse_sdp(sdp, ["PCMU", "PCMA"])
    for bad in (b"m=audio 0 RTP/AVP 0", "m=audio ²000 RTP/AVP 0".encode()):
        with pytest.raises(MediaError, match="malformed SDP media line"):
            parse_sdp(sdp.replace(b"m=audio 4000 RTP/AVP 18 96", bad), ["PCMU"])


def _offer(profile: str, crypto: str) -> bytes:
    return (
        "v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        f"m=audio 4000 {profile} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n{crypto}"
    ).encode()


KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # 30 bytes (RFC 4568's example)


def test_sdes_crypto_lines_are_read_and_bounded() -> None:
    sdp = parse_sdp(
        _offer(
            "RTP/SAVP",
            "a=crypto:1 AES_CM_256_HMAC_SHA1_80 inline:"
            + KEY
            + "\r\n"  # a suite we do not take: skipped
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^20|1:4\r\n",
        ),
        ["PCMU"],
    )
    assert sdp.profile == "RTP/SAVP" and sdp.crypto is not None
    assert (sdp.crypto.tag, sdp.crypto.suite, len(sdp.crypto.key)) == (
        2,
        "AES_CM_128_HMAC_SHA1_32",
        30,
    )
    assert parse_sdp(_offer("RTP/AVP", ""), ["PCMU"]).crypto is None
    for body, error in [
        (_offer("RTP/SAVP", ""), "SRTP offered without a crypto suite we take"),
        (_offer("RTP/SAVP", "a=crypto:1 F8_128_HMAC_SHA1_80 inline:" + KEY + "\r\n"), "we take"),
        (_offer("RTP/AVP", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n"), "3 bytes"),
        (_offer("RTP/AVP", "a=crypto:x AES inline:%%%\r\n"), "malformed SDP crypto line"),
        (_offer("UDP/TLS/RTP/SAVPF", ""), "unsupported media profile"),
    ]:
        with pytest.raises(MediaError, match=error):
            parse_sdp(body, ["PCMU"])


async def test_srtp_audio_round_trips_and_forged_packets_are_dropped() -> None:
    """Two streams with SDES keys talk; a packet that is not SRTP under the peer's key is
    counted and dropped, never played or recorded."""
    a, b = RtpStream("127.0.0.1", free_udp_port()), RtpStream("127.0.0.1", free_udp_port())
    await a.open()
    await b.open()
    try:
        a.local_crypto, b.local_crypto = Crypto.new(), Crypto.new()
        a.set_remote(Sdp("127.0.0.1", b.port, 0, 101, "RTP/SAVP", b.local_crypto))
        b.set_remote(Sdp("127.0.0.1", a.port, 0, 101, "RTP/SAVP", a.local_crypto))
        assert a.encrypted and b.encrypted
        a.play(tone(0.1, 440))
        for _ in range(5):
            a.tick()
        # a plain RTP packet from the peer's own address (as a spoofed source would be)
        assert a.transport is not None
        a.transport.sendto(
            struct.pack("!BBHII", 0x80, 0, 1, 160, 5) + encode(tone(0.02), 0), ("127.0.0.1", b.port)
        )
        for _ in range(100):
            if len(b.inbound) >= 5 and b.bad_packets:
                break
            await asyncio.sleep(0.01)
        assert b.bad_packets == 1
        frames = list(b.inbound)
        assert len(frames) == 5
        assert all(f != b"\x00" * FRAME_BYTES for f in frames)  # the tone, decrypted
    finally:
        a.close()
        b.close()


async def test_rtp_latches_to_the_peers_host_on_another_port_once() -> None:
    """Symmetric RTP: a peer behind NAT sends from another port than its SDP names; the
    stream follows it (and answers there), but only the negotiated host, and only once."""
    stream = RtpStream("127.0.0.1", free_udp_port())
    await stream.open()
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as natted,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere,
        ):
            natted.bind(("127.0.0.1", 0))
            other.bind(("127.0.0.1", 0))
            elsewhere.bind(("127.0.0.2", 0))
            stream.set_remote(Sdp("127.0.0.1", 9, 0, 101))  # the SDP names port 9
            audio = struct.pack("!BBHII", 0x80, 0, 1, 160, 7) + encode(tone(0.02), 0)
            elsewhere.sendto(audio, ("127.0.0.1", stream.port))
            await asyncio.sleep(0.05)
            natted.sendto(audio, ("127.0.0.1", stream.port))
            await asyncio.sleep(0.05)
            other.sendto(audio, ("127.0.0.1", stream.port))
            await asyncio.sleep(0.05)
            assert stream.remote == natted.getsockname()
            assert stream.foreign_packets == 2 and len(stream.inbound) == 1
            stream.tick()  # and our audio goes where theirs comes from
            natted.settimeout(1)
            assert len(natted.recv(2048)) == 12 + 160
    finally:
        stream.close()
