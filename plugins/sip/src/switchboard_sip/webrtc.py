"""Browser legs: an agent's console softphone as a WebRTC peer terminated here (aiortc).

A :class:`BrowserLeg` stands where a SIP leg to the agent's phone would: it rings (an
offer sent to the agent's softphone through the core's ``Softphones``), answers (the
browser's SDP answer, then ICE and DTLS-SRTP connect), carries audio and ends. Its
:class:`BrowserStream` is shaped as an ``RtpStream`` is for the bridge and the media
clock: 16-bit 8 kHz mono frames of 20 ms in (``take_frame``) and out (``feed``, sent on the
clock's tick), so bridging, hold music and recording work as for a desk phone.

G.711 (PCMU, PCMA) is offered first, so no transcoding is needed; a browser that insists on
Opus gets it, and aiortc transcodes (its encoder resamples our 8 kHz frames, and what it
decodes is resampled here to 8 kHz mono).

Keys pressed on the softphone's keypad come as signalling (browsers send RFC 4733 events
only on an ``RTCDTMFSender``, which aiortc does not read) and are played in-band into the
agent's side of the bridge: the customer's phone (or an IVR behind it) hears the tones.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import math
import queue
import re
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from switchboard import Agent, Softphones
from switchboard_sip.dialog import LegState
from switchboard_sip.media import FRAME_BYTES, FRAME_SAMPLES, RATE, Frames, decode, encode

log = logging.getLogger("switchboard.sip.webrtc")
# aioice logs every ICE check at INFO: a few dozen lines per call
logging.getLogger("aioice").setLevel(logging.WARNING)

MAX_SDP = 64 * 1024  # an SDP answer from a browser: a few KB
DTMF = re.compile(r"[0-9*#A-D]{1,32}")
DTMF_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip
#: the codecs offered to browsers, in order (G.711 first: no transcoding)
OFFERED = ("audio/PCMU", "audio/PCMA", "audio/opus")
#: with the softphone still connected, this long without audio from the browser ends the
#: call (browsers send packets while muted); once the softphone's connection is lost, the
#: shorter grace: its media path may have survived a signalling blip
SILENT_LIMIT = 15.0
LOST_GRACE = 3.0


# -- adapters over aiortc's receiver (docs/softphone.md, "Why aiortc is adapted") ----------
#
# aiortc's audio receiver holds 4 packets (80 ms) before decoding anything, whatever the
# network, and decodes in a thread of its own per call, handing each 20 ms frame back to
# the event loop (a thread hop and a coroutine per frame). For G.711 that costs far more
# than the decoding. aiortc has no setting for either, so these two replace private parts
# of its RTCRtpReceiver before the call starts; if a later aiortc moved them, they do
# nothing and say so (False), and aiortc's own path is used.


def hold_back(receiver: Any, frames: int) -> bool:
    """Make ``receiver`` pass audio on after ``frames`` packets of 20 ms, not 4."""
    name = "_RTCRtpReceiver__jitter_buffer"
    if not isinstance(getattr(receiver, name, None), JitterBuffer):
        return False
    setattr(receiver, name, JitterBuffer(capacity=16, prefetch=frames))
    return True


class _InlineDecoding:
    """Takes the place of an aiortc receiver's decoder queue: each complete frame is decoded
    on the event loop as it comes (G.711 by table, Opus by aiortc's decoder), resampled to
    8 kHz mono and handed to ``sink``. The receiver's decoder thread, which would read the
    queue, waits here until the receiver stops."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink
        self._stopped = threading.Event()
        self._decoder: Any = None
        self._resampler: av.AudioResampler | None = None

    def put(self, task: Any) -> None:
        if task is None:  # the receiver stops
            self._stopped.set()
            return
        codec, encoded = task
        name = codec.mimeType.lower()
        if name in ("audio/pcmu", "audio/pcma"):
            self.sink(decode(encoded.data, 0 if name == "audio/pcmu" else 8))
            return
        if self._decoder is None:
            self._decoder = get_decoder(codec)
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        assert self._resampler is not None
        try:
            frames = self._decoder.decode(encoded)
        except av.FFmpegError as exc:
            log.debug("browser audio: a frame failed to decode: %s", exc)
            return
        for frame in frames:
            for out in self._resampler.resample(frame):
                self.sink(bytes(out.planes[0])[: out.samples * 2])

    def get(self) -> None:
        self._stopped.wait()


def decode_inline(receiver: Any, sink: Callable[[bytes], None]) -> bool:
    """Decode ``receiver``'s audio on the event loop into ``sink`` (see above)."""
    name = "_RTCRtpReceiver__decoder_queue"
    if not isinstance(getattr(receiver, name, None), queue.Queue):
        return False
    setattr(receiver, name, _InlineDecoding(sink))
    return True


def dtmf_tones(digits: str) -> bytes:
    """In-band DTMF: 100 ms of each key's two tones, 60 ms of silence after each."""
    out = bytearray()
    for digit in digits:
        low, high = DTMF_FREQS[digit]
        for n in range(RATE // 10):
            v = 6000 * (
                math.sin(2 * math.pi * low * n / RATE) + math.sin(2 * math.pi * high * n / RATE)
            )
            out += struct.pack("<h", int(v))
        out += b"\x00" * (RATE * 6 // 100 * 2)
    return bytes(out)


class _Outbound(MediaStreamTrack):
    """What we send to the browser: frames the media clock hands over, one per tick."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10)
        self._pts = 0
        # the G.711 payload type once negotiated: frames go out encoded by us, as packets
        # aiortc only packs (it would encode each frame in a thread pool); Opus: frames
        self.payload: int | None = None

    def put(self, frame: bytes) -> None:
        if self.frames.full():  # the sender fell behind: drop the oldest, keep delay low
            self.frames.get_nowait()
        self.frames.put_nowait(frame)

    async def recv(self) -> av.AudioFrame | av.Packet[Any]:
        pcm = await self.frames.get()
        if self.payload is not None:
            packet = av.Packet(encode(pcm, self.payload))
            packet.pts = self._pts
            packet.time_base = fractions.Fraction(1, RATE)
            self._pts += FRAME_SAMPLES
            return packet
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


class BrowserStream(Frames):
    """A browser leg's audio, shaped as ``RtpStream`` for bridges and the media clock."""

    def __init__(self) -> None:
        super().__init__()
        self.digits: asyncio.Queue[str] = asyncio.Queue(maxsize=32)  # never filled: no IVR
        self.on_hold = False
        self.heard = time.monotonic()
        self.track = _Outbound()
        self._rest = b""
        self._keys: collections.deque[bytes] = collections.deque()  # keypad tones, in-band

    def received(self, pcm: bytes) -> None:
        """Audio from the browser, decoded: cut into 20 ms frames."""
        self.heard = time.monotonic()
        pcm = self._rest + pcm
        while len(pcm) >= FRAME_BYTES:
            self.inbound.append(pcm[:FRAME_BYTES])
            pcm = pcm[FRAME_BYTES:]
        self._rest = pcm

    def dtmf(self, digits: str) -> None:
        tones = dtmf_tones(digits)
        for i in range(0, len(tones) - FRAME_BYTES + 1, FRAME_BYTES):
            self._keys.append(tones[i : i + FRAME_BYTES])

    def take_frame(self) -> bytes | None:
        if self._keys:  # keys pressed: their tones instead of the microphone
            if self.inbound:
                self.inbound.popleft()
            return self._keys.popleft()
        return super().take_frame()

    def tick(self) -> bytes:
        """Hand the next frame to aiortc's sender (the media clock calls this every 20 ms)."""
        frame = self.next_frame()
        self.track.put(frame)
        return frame


class BrowserLeg:
    """One call leg to an agent's browser softphone (see the module's docstring)."""

    def __init__(
        self,
        softphones: Softphones,
        agent: Agent,
        call_id: str,
        clock: Any,
        ice_servers: list[dict[str, Any]],
        jitter_frames: int = 1,
    ) -> None:
        assert agent.id is not None
        self.softphones = softphones
        self.agent = agent
        self.agent_id: int = agent.id
        self.call_id = call_id
        self.clock = clock
        self.ice_servers = ice_servers
        self.jitter_frames = jitter_frames
        self.state = LegState.CALLING
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.early = asyncio.Event()  # browsers send no early media: never set
        self.stream: BrowserStream | None = None
        self.end_reason = ""
        self.remote_hangup = False
        self.cut_off: str | None = None
        self.codec = ""
        self.link_up = True
        self.leg_id = ""
        self._inline = False
        self._pc: RTCPeerConnection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"<BrowserLeg {self.agent.name} {self.state}>"

    # -- ringing --------------------------------------------------------------------------

    async def ring(self, info: Mapping[str, Any]) -> None:
        """Ring the agent's softphone with ``info`` (the caller, the call id...) at once,
        then make the peer connection and send its offer (``offer``: ICE gathering takes a
        few milliseconds, more under load, and the browser can ring meanwhile). The leg
        ends at once if the softphone cannot be reached."""
        try:
            self.leg_id = self.softphones.open(self.agent_id, self)
        except (LookupError, OverflowError) as exc:
            self._finish(str(exc))
            return
        self.state = LegState.RINGING
        ring = {"type": "ring", "leg": self.leg_id, **info}
        if not await self.softphones.send(self.agent_id, ring):
            await self._end("the softphone could not be reached")
            return
        servers = [RTCIceServer(**s) for s in self.ice_servers]
        pc = self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers or None))
        stream = self.stream = BrowserStream()
        transceiver = pc.addTransceiver(stream.track, direction="sendrecv")
        if not hold_back(transceiver.receiver, self.jitter_frames):
            log.warning("aiortc's jitter buffer was not found: browser audio is 80 ms late")
        self._inline = decode_inline(transceiver.receiver, stream.received)
        codecs = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences(
            [c for name in OFFERED for c in codecs if c.mimeType == name]
        )
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        await pc.setLocalDescription(await pc.createOffer())
        if self.state is LegState.ENDED:  # declined or gone while we offered
            await pc.close()
            return
        offer = {
            "type": "offer",
            "leg": self.leg_id,
            "sdp": pc.localDescription.sdp,
            "ice_servers": self.ice_servers,
        }
        if not await self.softphones.send(self.agent_id, offer):
            await self._end("the softphone could not be reached")

    # -- from the browser -----------------------------------------------------------------

    async def signal(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        if kind == "answer":
            await self._answer(message.get("sdp"))
        elif kind == "decline":
            if self.state is not LegState.ENDED:
                self.end_reason = "declined"
                await self._end("declined in the softphone", tell=False)
        elif kind == "hangup":
            self.remote_hangup = True
            await self._end("hung up in the softphone", tell=False)
        elif kind == "dtmf":
            digits = message.get("digits")
            if not isinstance(digits, str) or not DTMF.fullmatch(digits):
                raise ValueError("digits: 1 to 32 of 0-9 * # A-D")
            if self.stream is not None and self.state is LegState.ANSWERED:
                self.stream.dtmf(digits)
        else:
            raise ValueError(f"unknown message type {str(kind)[:40]!r}")

    async def _answer(self, sdp: object) -> None:
        if self.state is not LegState.RINGING or self._pc is None:
            raise ValueError("this call is not ringing (or its offer is not out yet)")
        if not isinstance(sdp, str) or not 0 < len(sdp) <= MAX_SDP:
            raise ValueError(f"sdp: an SDP answer of at most {MAX_SDP} bytes")
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:  # aiortc raises ValueError, OperationError... on a bad SDP
            text = str(exc)[:120] or type(exc).__name__
            reason = (
                "no usable audio codec in the softphone's answer (PCMU, PCMA or Opus)"
                if "send parameters" in text  # aiortc: no codec in common
                else f"the softphone's answer was refused: {text}"
            )
            await self._end(reason)
            raise ValueError(reason) from None
        # the codec both sides use (aiortc keeps the negotiated list on the transceiver)
        negotiated = getattr(self._pc.getTransceivers()[0], "_codecs", [])
        self.codec = negotiated[0].mimeType.split("/")[1] if negotiated else "?"
        if self.stream is not None and self.codec in ("PCMU", "PCMA"):
            self.stream.track.payload = 0 if self.codec == "PCMU" else 8
        self.state = LegState.CALLING  # connecting: answered once ICE and DTLS are up
        self._spawn(self._connect_within(10.0))

    async def _connect_within(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.state is LegState.CALLING:
            await self._end(f"the browser's media did not connect within {seconds:.0f} s")

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._inline:  # else decoded as it comes
            self._spawn(self._read(track))

    async def _on_state(self) -> None:
        pc = self._pc
        if pc is None:
            return
        state = pc.connectionState
        if state == "connected" and self.state is LegState.CALLING:
            assert self.stream is not None
            self.state = LegState.ANSWERED
            self.stream.heard = time.monotonic()
            self.clock.streams.add(self.stream)
            self._spawn(self._watch())
            self.answered.set()
            await self.softphones.send(self.agent_id, {"type": "connected", "leg": self.leg_id})
        elif state in ("failed", "closed") and self.state is not LegState.ENDED:
            self.cut_off = self.cut_off or f"the browser's media path {state}"
            await self._end(self.cut_off)

    async def _read(self, track: MediaStreamTrack) -> None:
        """Audio from the browser, resampled to 8 kHz mono frames."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while self.state is not LegState.ENDED:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            stream = self.stream
            if stream is None:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            for out in resampler.resample(frame):
                stream.received(bytes(out.planes[0])[: out.samples * 2])

    async def _watch(self) -> None:
        """End the call once the browser is gone: no audio from it for a while."""
        while self.state is LegState.ANSWERED and self.stream is not None:
            await asyncio.sleep(0.5)
            silent = time.monotonic() - self.stream.heard
            limit = SILENT_LIMIT if self.link_up else LOST_GRACE
            if silent > limit and self.state is LegState.ANSWERED:
                gone = "" if self.link_up else " after its softphone disconnected"
                self.cut_off = f"no audio from the browser for {silent:.0f} s{gone}"
                await self._end(self.cut_off)

    def link_lost(self) -> None:
        """The softphone disconnected: a ringing leg ends; a call in progress goes on as long
        as the browser's audio still comes (a signalling blip), else ends after a grace."""
        self.link_up = False
        if self.state in (LegState.CALLING, LegState.RINGING) and not self.answered.is_set():
            self._spawn(self._end("the softphone disconnected", tell=False))

    def link_restored(self) -> None:
        self.link_up = True

    # -- ending ---------------------------------------------------------------------------

    async def hangup(self) -> None:
        await self._end(self.end_reason or "hung up")

    async def cancel(self) -> None:
        await self._end("answered elsewhere")

    async def _end(self, reason: str, *, tell: bool = True) -> None:
        if self.state is LegState.ENDED:
            return
        self._finish(reason)
        if tell and self.leg_id:
            await self.softphones.send(
                self.agent_id, {"type": "ended", "leg": self.leg_id, "reason": reason}
            )
        pc, self._pc = self._pc, None
        if pc is not None:
            await pc.close()

    def _finish(self, reason: str) -> None:
        self.state = LegState.ENDED
        self.end_reason = self.end_reason or reason
        if self.stream is not None:
            self.clock.streams.discard(self.stream)
            self.stream.track.stop()
        if self.leg_id:
            self.softphones.close(self.leg_id)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.ended.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
