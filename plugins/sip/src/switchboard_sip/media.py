"""RTP media: SDP offers and answers, RTP streams, one media clock, WAV prompts and recordings.

Audio inside Switchboard is 16-bit signed linear PCM, 8 kHz mono, in frames of 20 ms (320
bytes). On the wire it is G.711 (PCMU or PCMA, payload types and names from
``pyVoIP.RTP.PayloadType``) with RFC 2833 telephone-events for DTMF.

Instead of pyVoIP's two threads per RTP stream that each sleep for the next packet
(drifting, and choppy under load: pyVoIP issues #159, #181), one asyncio task (the
:class:`MediaClock`) sends the next frame of every stream every 20 ms on an absolute
schedule, and receiving is an asyncio datagram protocol. pyVoIP's own RTP packet parser
ignores the CSRC count and header extensions and its PCMA encoder encodes PCMU; both are
replaced here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import logging
import os
import random
import re
import struct
import time
import wave
from collections.abc import Callable
from pathlib import Path

import attrs
import pylibsrtp

from switchboard_sip._compat import PayloadType, audioop

log = logging.getLogger("switchboard.sip.media")

RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = b"\x00" * FRAME_BYTES
DTMF_KEYS = "0123456789*#ABCD"
CODECS = {"PCMU": PayloadType.PCMU, "PCMA": PayloadType.PCMA}


class MediaError(Exception):
    """An SDP we cannot answer (no common codec, no audio), or a prompt we cannot read."""


#: SDES crypto suites (RFC 4568) we take, with libsrtp's profile for each; all key 30 bytes
SUITES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
KEY_BYTES = 30  # 16-byte master key and 14-byte salt
_CRYPTO = re.compile(r"crypto:([0-9]{1,9}) ([A-Z0-9_]{1,40}) inline:([A-Za-z0-9+/=]{1,100})")


@attrs.frozen
class Crypto:
    """One SDES ``a=crypto`` line: its tag, suite and master key+salt (RFC 4568)."""

    tag: int
    suite: str
    key: bytes = attrs.field(repr=False)

    @classmethod
    def new(cls, suite: str = "AES_CM_128_HMAC_SHA1_80", tag: int = 1) -> Crypto:
        return cls(tag, suite, os.urandom(KEY_BYTES))

    def line(self) -> str:
        return f"a=crypto:{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"

    def session(self, outbound: bool) -> pylibsrtp.Session:
        ssrc = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
        return pylibsrtp.Session(
            policy=pylibsrtp.Policy(key=self.key, ssrc_type=ssrc, srtp_profile=SUITES[self.suite])
        )


@attrs.frozen
class Sdp:
    """What we need of a session description: where to send audio, and how."""

    address: str
    port: int
    payload: int  # the G.711 payload type chosen
    event_payload: int | None  # telephone-event payload type, if offered
    profile: str = "RTP/AVP"  # RTP/SAVP: SRTP or nothing
    crypto: Crypto | None = None  # the first a=crypto line with a suite we take
    # what the far end will do (RFC 3264 §6.1): sendonly or inactive put us on hold
    direction: str = "sendrecv"

    @property
    def holds(self) -> bool:
        """Whether this description puts the other side on hold (RFC 3264 §8.4)."""
        return self.direction in ("sendonly", "inactive")


#: Our direction answering theirs (RFC 3264 §6.1).
ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


#: Static payload types (RFC 3551) by name, to say what an offer held that we cannot take.
STATIC_NAMES = {0: "PCMU", 3: "GSM", 4: "G723", 8: "PCMA", 9: "G722", 18: "G729"}
_NUMBER = re.compile(r"[0-9]{1,5}")
_HOST = re.compile(r"[A-Za-z0-9.:_-]{1,253}")  # an IPv4/IPv6 address or a host name


def parse_sdp(body: bytes, codecs: list[str]) -> Sdp:
    """Pick the first of our ``codecs`` that the offer (or answer) carries. Raises
    :class:`MediaError` with the reason for anything else (numbers are ASCII digits in
    range, the address is an address, the audio port is not 0: a declined stream)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MediaError("SDP body is not UTF-8") from None
    address = None
    port = None
    formats: list[int] = []
    names: dict[int, str] = {}
    in_audio = False
    profile = "RTP/AVP"
    crypto: Crypto | None = None
    suites: list[str] = []
    direction = "sendrecv"
    for line in text.replace("\r\n", "\n").split("\n"):
        key, _, value = line.strip().partition("=")
        if key == "c" and (address is None or in_audio):
            parts = value.split()
            if len(parts) >= 3:
                address = parts[2].split("/")[0]
                if not _HOST.fullmatch(address):
                    raise MediaError(f"bad SDP connection address {address[:60]!r}")

        elif key == "m":
            parts = value.split()
            in_audio = bool(parts) and parts[0] == "audio" and port is None
            if in_audio:
                port_text = parts[1].split("/")[0] if len(parts) >= 4 else ""
                if not _NUMBER.fullmatch(port_text) or not 0 < int(port_text) < 65536:
                    raise MediaError(f"malformed SDP media line {line.strip()[:80]!r}")
                port = int(port_text)
                profile = parts[2]
                formats = [int(p) for p in parts[3:] if _NUMBER.fullmatch(p) and int(p) < 128]
        elif key == "a" and in_audio and value.startswith("rtpmap:"):
            pt_text, _, rest = value[len("rtpmap:") :].partition(" ")
            if _NUMBER.fullmatch(pt_text):
                names[int(pt_text)] = rest.split("/")[0].strip()
        elif key == "a" and value in ANSWER_DIRECTION and (in_audio or port is None):
            direction = value  # a media-level line overrides the session's
        elif key == "a" and in_audio and value.startswith("crypto:"):
            found = _CRYPTO.match(value)
            if found is None:
                raise MediaError(f"malformed SDP crypto line {line.strip()[:80]!r}")
            suites.append(found.group(2))
            if crypto is None and found.group(2) in SUITES:
                try:
                    key_bytes = base64.b64decode(found.group(3), validate=True)
                except binascii.Error:
                    raise MediaError("SDP crypto key is not base64") from None
                if len(key_bytes) != KEY_BYTES:
                    raise MediaError(f"SDP crypto key of {len(key_bytes)} bytes, not 30")
                crypto = Crypto(int(found.group(1)), found.group(2), key_bytes)
    if address is None or port is None:
        raise MediaError("SDP has no audio stream with a connection address")
    offered = {
        (names.get(pt) or STATIC_NAMES.get(pt) or f"payload {pt}").upper(): pt for pt in formats
    }
    for codec in codecs:
        if codec.upper() in offered:
            chosen = offered[codec.upper()]
            break
    else:
        raise MediaError(f"no common codec: offered {sorted(offered)}, we accept {codecs}")
    event = next((pt for pt in formats if names.get(pt, "").lower() == "telephone-event"), None)
    if address == "0.0.0.0":  # RFC 2543's hold: no media either way
        direction = "inactive"
    if profile == "RTP/SAVP" and crypto is None:
        raise MediaError(f"SRTP offered without a crypto suite we take: {suites or 'none'}")
    if profile not in ("RTP/AVP", "RTP/SAVP"):
        raise MediaError(f"unsupported media profile {profile[:40]}")
    return Sdp(
        address=address,
        port=port,
        payload=chosen,
        event_payload=event,
        profile=profile,
        crypto=crypto,
        direction=direction,
    )


def make_sdp(
    ip: str,
    port: int,
    codecs: list[str],
    session: int,
    event_payload: int = 101,
    *,
    crypto: Crypto | None = None,
    profile: str = "RTP/AVP",
    direction: str = "sendrecv",
    version: int | None = None,
) -> bytes:
    """Our session description; ``version`` (RFC 3264 §8: the same ``session`` and one more
    each time the description changes in a dialog) defaults to ``session``."""
    pts = [int(CODECS[c.upper()].value) for c in codecs]
    lines = [
        "v=0",
        f"o=switchboard {session} {session if version is None else version} IN IP4 {ip}",
        "s=switchboard",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=audio {port} {profile} {' '.join(str(p) for p in [*pts, event_payload])}",
    ]
    for codec, pt in zip(codecs, pts, strict=True):
        lines.append(f"a=rtpmap:{pt} {CODECS[codec.upper()].description}/{RATE}")
    lines += [
        f"a=rtpmap:{event_payload} telephone-event/{RATE}",
        f"a=fmtp:{event_payload} 0-15",
        "a=ptime:20",
        f"a={direction}",
        *([crypto.line()] if crypto is not None else []),
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def encode(pcm: bytes, payload: int) -> bytes:
    return audioop.lin2alaw(pcm, 2) if payload == 8 else audioop.lin2ulaw(pcm, 2)


def decode(data: bytes, payload: int) -> bytes:
    return audioop.alaw2lin(data, 2) if payload == 8 else audioop.ulaw2lin(data, 2)


class PortPool:
    """RTP ports handed out from the configured range (even ports, RTP convention)."""

    def __init__(self, low: int, high: int) -> None:
        self._free = collections.deque(p for p in range(low + low % 2, high + 1, 2))
        random.shuffle(self._free)
        self._size = len(self._free)

    def take(self) -> int:
        if not self._free:
            raise MediaError(f"no free RTP port ({self._size} in the range are in use)")
        return self._free.popleft()

    def give(self, port: int) -> None:
        self._free.append(port)

    @property
    def in_use(self) -> int:
        return self._size - len(self._free)


#: Digits kept for a collector that has not asked yet; older ones are dropped beyond it.
MAX_QUEUED_DIGITS = 32


class Frames:
    """The audio queues of a call leg, whatever carries it (RTP here, WebRTC in
    ``webrtc.BrowserStream``): received 20 ms frames in ``inbound`` (``take_frame`` pops
    the oldest), frames to send queued by ``play`` and ``feed``; ``next_frame`` gives the
    one to send on the media clock's tick (silence when nothing is queued)."""

    def __init__(self) -> None:
        self.inbound: collections.deque[bytes] = collections.deque(maxlen=50)
        self._outbound: collections.deque[bytes] = collections.deque()
        self._drained = asyncio.Event()
        self._drained.set()

    def take_frame(self) -> bytes | None:
        """The oldest received frame, dropping a backlog beyond 100 ms (keeps delay low)."""
        while len(self.inbound) > 5:
            self.inbound.popleft()
        return self.inbound.popleft() if self.inbound else None

    def play(self, pcm: bytes) -> asyncio.Event:
        """Queue 16-bit 8 kHz mono audio; the returned event is set once it is all sent."""
        for i in range(0, len(pcm), FRAME_BYTES):
            self._outbound.append(pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\x00"))
        if self._outbound:
            self._drained.clear()
        return self._drained

    def feed(self, frame: bytes) -> None:
        """Queue one frame of relayed audio (bridging), keeping at most 100 ms queued."""
        while len(self._outbound) > 5:
            self._outbound.popleft()
        self._outbound.append(frame)
        self._drained.clear()

    def stop_playing(self) -> None:
        self._outbound.clear()
        self._drained.set()

    def next_frame(self) -> bytes:
        """The frame to send now (silence when nothing is queued)."""
        frame = self._outbound.popleft() if self._outbound else SILENCE
        if not self._outbound:
            self._drained.set()
        return frame


class RtpStream(Frames, asyncio.DatagramProtocol):
    """One RTP stream (one call leg's audio), bound to a local port.

    Received audio is kept in a short buffer (``take_frame`` pops one 20 ms frame);
    telephone-events become digits in ``digits``. What to send is queued with ``play``;
    the media clock sends one frame per tick, silence when nothing is queued.
    """

    def __init__(self, ip: str, port: int) -> None:
        super().__init__()
        self.ip = ip
        self.port = port
        self.remote: tuple[str, int] | None = None
        self.latched = False  # the peer's packets came from another port: we follow them
        self.payload = 0
        self.event_payload: int | None = 101
        self.transport: asyncio.DatagramTransport | None = None
        self.digits: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_QUEUED_DIGITS)
        self._seq = random.randint(0, 0xFFFF)
        self._ts = random.randint(0, 0x7FFFFFFF)
        self._ssrc = random.randint(1, 0xFFFFFFFF)
        self._last_event: tuple[int, int] | None = None
        self._last_event_ended = False
        self._rx_rest = b""
        # SRTP (SDES): our key (in our SDP) protects what we send, the peer's what we get
        self.local_crypto: Crypto | None = None
        self.profile = "RTP/AVP"
        self.direction = "sendrecv"  # ours, as our last SDP said
        # our o= line: one session id for the dialog, its version counting each new SDP
        self.sdp_session = 0
        self.sdp_version = 0
        self.on_hold = False  # the far end put us on hold (sendonly or inactive)
        self._srtp_tx: pylibsrtp.Session | None = None
        self._srtp_rx: pylibsrtp.Session | None = None
        self.bad_packets = 0
        self.foreign_packets = 0  # from another address than the negotiated peer: dropped
        self.heard = time.monotonic()  # when the peer's last RTP packet came

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.ip, self.port)
        )

    def set_remote(self, sdp: Sdp) -> None:
        self.remote = (sdp.address, sdp.port)
        self.latched = False
        self.payload = sdp.payload
        self.event_payload = sdp.event_payload
        self.on_hold = sdp.holds
        # keys stay for the call: a re-INVITE repeats them
        if sdp.crypto is not None and self.local_crypto is not None and self._srtp_rx is None:
            self._srtp_rx = sdp.crypto.session(outbound=False)
            self._srtp_tx = self.local_crypto.session(outbound=True)

    @property
    def encrypted(self) -> bool:
        return self._srtp_tx is not None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self._outbound.clear()
        self._drained.set()

    # -- receiving ------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # Only the peer the SDP named may speak on this port (symmetric RTP): anyone
        # sweeping the even ports must not inject digits or audio into a call or recording.
        if addr[:2] != self.remote:
            if self.remote is None or self.latched or addr[0] != self.remote[0]:
                self.foreign_packets += 1
                return
            # symmetric RTP: the peer's host sends from another port than its SDP named
            # (a NAT rewrote it): latch to that source once, and answer there
            log.info("RTP %s: latched to %s:%s (SDP said %s)", self.port, *addr[:2], self.remote[1])
            self.remote = (addr[0], addr[1])
            self.latched = True
        if len(data) < 12 or data[0] >> 6 != 2:
            self.bad_packets += 1
            return
        if self._srtp_rx is not None:
            if 200 <= data[1] <= 204:
                return  # SRTCP multiplexed on the RTP port (RFC 5761): not read
            try:
                data = self._srtp_rx.unprotect(data)
            except pylibsrtp.Error:  # forged, replayed or corrupt: not the peer's audio
                self.bad_packets += 1
                return
        self.heard = time.monotonic()
        cc = data[0] & 0x0F
        offset = 12 + 4 * cc
        if data[0] & 0x10:  # header extension
            if len(data) < offset + 4:
                self.bad_packets += 1
                return
            offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
        end = len(data)
        if data[0] & 0x20 and end > offset:  # padding
            end -= data[-1]
        payload = data[offset:end]
        pt = data[1] & 0x7F
        if pt == self.event_payload or (self.event_payload is None and pt == 101):
            self._event(payload, struct.unpack_from("!I", data, 4)[0], bool(data[1] & 0x80))
        elif pt in (0, 8) and payload:
            # cut into 20 ms frames whatever the far side's packet time
            pcm = self._rx_rest + decode(payload, pt)
            while len(pcm) >= FRAME_BYTES:
                frame, pcm = pcm[:FRAME_BYTES], pcm[FRAME_BYTES:]
                self.inbound.append(frame)
            self._rx_rest = pcm
        else:
            self.bad_packets += 1

    def _event(self, payload: bytes, timestamp: int, marker: bool) -> None:
        """RFC 2833/4733: an event's packets share its RTP timestamp; the digit counts once,
        at its first packet, whatever the marker bit says (pyVoIP waits for the marker:
        #55). A new digit with the same timestamp (replayed captures do that) is still a
        new event, and so is a marked packet after the end of the previous one."""
        if len(payload) < 4 or payload[0] >= len(DTMF_KEYS):
            self.bad_packets += 1
            return
        key = (timestamp, payload[0])
        if key == self._last_event and not (marker and self._last_event_ended):
            self._last_event_ended = self._last_event_ended or bool(payload[1] & 0x80)
            return
        self._last_event = key
        self._last_event_ended = bool(payload[1] & 0x80)
        if self.digits.full():  # nobody collects them (no IVR listening): keep the newest
            self.digits.get_nowait()
        self.digits.put_nowait(DTMF_KEYS[payload[0]])

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and such
        log.debug("RTP %s:%s: %s", self.ip, self.port, exc)

    # -- sending --------------------------------------------------------------------------

    def tick(self) -> bytes:
        """Send the next frame (the media clock calls this every 20 ms); return it."""
        frame = self.next_frame()
        if (
            self.transport is not None
            and self.remote is not None
            and self.direction in ("sendrecv", "sendonly")
        ):
            header = struct.pack(
                "!BBHII", 0x80, self.payload, self._seq & 0xFFFF, self._ts & 0xFFFFFFFF, self._ssrc
            )
            packet = header + encode(frame, self.payload)
            if self._srtp_tx is not None:
                packet = self._srtp_tx.protect(packet)
            self.transport.sendto(packet, self.remote)
        self._seq += 1
        self._ts += FRAME_SAMPLES
        return frame


class Loop:
    """Audio played round and round, a 20 ms frame at a time (music on hold)."""

    def __init__(self, pcm: bytes) -> None:
        usable = len(pcm) - len(pcm) % FRAME_BYTES
        self.pcm = pcm[:usable] or SILENCE
        self.at = 0

    def frame(self) -> bytes:
        frame = self.pcm[self.at : self.at + FRAME_BYTES]
        self.at = (self.at + FRAME_BYTES) % len(self.pcm)
        return frame


def default_music_on_hold() -> bytes:
    """A soft two-note chime every four seconds, when no ``music_on_hold`` WAV is set."""
    return tone(0.25, 660.0, 2000) + tone(0.25, 523.0, 2000) + b"\x00" * (FRAME_BYTES * 175)


class Recorder:
    """A stereo WAV recording of a bridged call: left the customer, right the agent."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(RATE)
        self._buffer: list[bytes] = []

    def write(self, left: bytes | None, right: bytes | None) -> None:
        a = audioop.tostereo(left or SILENCE, 2, 1, 0)
        b = audioop.tostereo(right or SILENCE, 2, 0, 1)
        self._buffer.append(audioop.add(a, b, 2))
        if len(self._buffer) >= 50:  # about once a second
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._wav.writeframesraw(b"".join(self._buffer))
            self._buffer.clear()

    def close(self) -> None:
        self.flush()
        self._wav.close()


class MonoRecorder(Recorder):
    """A mono WAV of one side (voicemail)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._wav.setnchannels(1)

    def write(self, left: bytes | None, right: bytes | None = None) -> None:
        self._buffer.append(left or SILENCE)
        if len(self._buffer) >= 50:
            self.flush()


class MediaClock:
    """Every 20 ms, on an absolute schedule: each stream sends a frame, each tick callback
    runs (bridges relaying audio and writing recordings). Send-interval lateness is kept
    for the jitter figure (``lateness_ms``)."""

    def __init__(self) -> None:
        self.streams: set[RtpStream] = set()
        self.tickers: set[Callable[[], None]] = set()
        self.lateness_ms: collections.deque[float] = collections.deque(maxlen=100_000)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sip-media-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = FRAME_MS / 1000
        due = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            if self.streams:
                self.lateness_ms.append((now - due) * 1000)
            if now - due > 0.2:  # the loop was stalled: skip ahead, do not burst
                due = now
            due += period
            for ticker in list(self.tickers):
                try:
                    ticker()
                except Exception:  # one broken bridge must not stop every call's audio
                    log.exception("media ticker failed")
            for stream in list(self.streams):
                stream.tick()


def load_prompt(path: str | os.PathLike[str]) -> bytes:
    """A WAV file as 16-bit 8 kHz mono PCM (converted from any rate, width or channels)."""
    p = Path(path)
    try:
        with wave.open(str(p), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            data = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise MediaError(f"prompt {p} does not exist") from None
    except (wave.Error, EOFError) as exc:
        raise MediaError(f"prompt {p} is not a readable WAV file: {exc}") from None
    if width == 1:
        data = audioop.bias(data, 1, -128)
    if width != 2:
        data = audioop.lin2lin(data, width, 2)
    if channels == 2:
        data = audioop.tomono(data, 2, 0.5, 0.5)
    elif channels != 1:
        raise MediaError(f"prompt {p} has {channels} channels; use mono or stereo")
    if rate != RATE:
        data, _ = audioop.ratecv(data, 2, 1, rate, RATE, None)
    return data


def tone(seconds: float, freq: float = 440.0, volume: int = 8000) -> bytes:
    """A sine tone (the tests' audio)."""
    import math

    n = int(seconds * RATE)
    return b"".join(
        struct.pack("<h", int(volume * math.sin(2 * math.pi * freq * i / RATE))) for i in range(n)
    )
