"""The far side of bench/webrtc_bench.py, in a process of its own: a browser softphone stood
in for by aiortc (signed in to the console, its WebSocket, a peer connection per call that
rings, a 600 Hz tone as its microphone), and latency probes: callers with our own SIP user
agent through Kamailio whose calls ring that softphone too.

On a probe call both ends are in this process, so one clock times a tone burst each way:
sent by the caller's RTP at t0, heard on the browser leg at t1 (SIP to WebRTC through
Switchboard), and back (WebRTC to SIP). Prints "ready" once signed in; reads a line
("stop") once the bench's callers are done, then prints one JSON line.

    python bench/_browser_peers.py URL TOKEN KAM_HOST KAM_PORT SERVICE PROBES SECONDS RTP_LOW
"""

from __future__ import annotations

import asyncio
import fractions
import json
import re
import sys
import time
from typing import Any

import av
import httpx
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import connect

from switchboard_sip._compat import audioop
from switchboard_sip.media import FRAME_BYTES, SILENCE, encode, tone
from switchboard_sip.testing import free_udp_port
from switchboard_sip.ua import UserAgent
from switchboard_sip.webrtc import decode_inline, hold_back

BURST = tone(0.2, 1000, 12000)  # 10 frames
LOUD = 2000
PERIOD = 1.0  # a burst every second
PROBE = "12025550199"  # the probes' number: the bench finds their calls by it


class Mic(MediaStreamTrack):
    """20 ms frames on an absolute schedule: a tone, or silence with bursts (probes)."""

    kind = "audio"

    def __init__(self, probe: bool) -> None:
        super().__init__()
        self.probe = probe
        self.pcm = tone(1.0, 600)
        self.n = 0
        self.start: float | None = None
        self.sent: list[float] = []  # when each burst's first frame went out

    async def recv(self) -> av.Packet[Any]:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        await asyncio.sleep(max(0.0, self.start + self.n * 0.02 - loop.time()))
        if self.probe:
            at = self.n % int(PERIOD / 0.02)
            chunk = BURST[at * FRAME_BYTES : (at + 1) * FRAME_BYTES] or SILENCE
            if at == 0 and self.n > 50:
                self.sent.append(time.monotonic())
        else:
            i = self.n % 50
            chunk = self.pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]
        # PCMU (what the offer puts first), encoded here: aiortc only packs it
        packet = av.Packet(encode(chunk.ljust(FRAME_BYTES, b"\x00"), 0))
        packet.pts = self.n * 160
        packet.time_base = fractions.Fraction(1, 8000)
        self.n += 1
        return packet


def onsets(heard: list[tuple[float, int]]) -> list[float]:
    """When loud audio started after quiet (burst onsets)."""
    out, quiet = [], True
    for at, rms in heard:
        if rms > LOUD and quiet:
            out.append(at)
        quiet = rms < LOUD / 4
    return out


def delays(sent: list[float], heard: list[float]) -> list[float]:
    """Each heard onset less the latest burst sent before it (within a period), in ms."""
    out = []
    for at in heard:
        before = [s for s in sent if 0 <= at - s < PERIOD]
        if before:
            out.append((at - max(before)) * 1000)
    return out


async def main() -> None:
    url, token, kam_host, kam_port, service = sys.argv[1:6]
    probes, seconds, rtp_low = int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        form = await c.get("/console/login")
        csrf_login = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf_login
        await c.post("/console/login", data={"token": token, "csrf": csrf_login.group(1)})
        page = await c.get("/console/contacts")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found
        cookie = f"switchboard_console={c.cookies['switchboard_console']}"
    ws_url = url.replace("http://", "ws://") + "/console/softphone"
    rings: dict[str, float] = {}  # call id -> when its ring came (wall clock)
    calls_of: dict[str, str] = {}  # leg -> call id
    pcs: dict[str, RTCPeerConnection] = {}
    probe_calls: dict[str, dict[str, Any]] = {}  # call id -> the probe's leg and timings
    heard_levels: dict[str, list[int]] = {}
    tasks: set[asyncio.Task[Any]] = set()
    jitters: list[float] = []

    async def finish(pc: RTCPeerConnection) -> None:
        """RFC 3550 interarrival jitter of what the leg received, then close it."""
        for stat in (await pc.getStats()).values():
            if stat.type == "inbound-rtp":
                jitters.append(stat.jitter / 8)  # RTP timestamp units at 8 kHz -> ms
        await pc.close()

    def listener(leg: str, probe: dict[str, Any] | None) -> Any:
        levels = heard_levels.setdefault(leg, [])

        def heard(pcm: bytes) -> None:
            rms = audioop.rms(pcm, 2)
            levels.append(rms)
            if probe is not None:
                probe["browser_heard"].append((time.monotonic(), rms))

        return heard

    async with connect(ws_url, additional_headers={"Cookie": cookie}, origin=url) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "hello", "csrf": found.group(1)}))
        assert json.loads(await ws.recv())["type"] == "ready"
        print("ready", flush=True)

        async def answer(ring: dict[str, Any]) -> None:
            probe = probe_calls.get(ring.get("call") or "")
            pc = RTCPeerConnection()
            pcs[ring["leg"]] = pc
            mic = Mic(probe is not None)
            if probe is not None:
                probe["browser_mic"] = mic
            pc.addTrack(mic)
            # a browser's own buffer (Chrome's NetEq) adapts to the network; on loopback it
            # holds little, so the stand-in holds the least aiortc can (one packet); and
            # decodes as Switchboard does, on its loop (the stand-in must not starve it)
            receiver = pc.getTransceivers()[0].receiver
            hold_back(receiver, 1)
            decode_inline(receiver, listener(ring["leg"], probe))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=ring["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await ws.send(
                json.dumps({"type": "answer", "leg": ring["leg"], "sdp": pc.localDescription.sdp})
            )

        async def signalling() -> None:
            async for raw in ws:
                m = json.loads(raw)
                if m["type"] == "ring":
                    rings[m.get("call") or m["leg"]] = time.time()
                    calls_of[m["leg"]] = m.get("call") or ""
                elif m["type"] == "offer":
                    tasks.add(asyncio.ensure_future(answer({**m, "call": calls_of.get(m["leg"])})))
                elif m["type"] == "ended":
                    pc = pcs.pop(m["leg"], None)
                    if pc is not None:
                        tasks.add(asyncio.ensure_future(finish(pc)))

        reader = asyncio.ensure_future(signalling())
        ua = UserAgent(
            server=kam_host, port=int(kam_port), username=PROBE, password="",
            ip="127.0.0.1", local_port=free_udp_port(), rtp_ports=(rtp_low, rtp_low + 400),
            codecs=["PCMA"], max_calls=0, session_expires=0,
        )  # fmt: skip
        await ua.start()

        async def probe_call(i: int) -> None:
            await asyncio.sleep(seconds / 3 + i * 0.5)  # under load, once it has built up
            leg = await ua.start_call(service, display=f"probe {i}")
            info: dict[str, Any] = {"sip_sent": [], "sip_heard": [], "browser_heard": []}
            probe_calls[leg.call_id] = info
            await ua.wait_answer(leg, 30)
            stream = leg.stream
            assert stream is not None
            n = 0

            def tick() -> None:  # our media clock's tick: queue silence or a burst frame
                nonlocal n
                at = n % int(PERIOD / 0.02)
                if at == 0 and n > 50:
                    info["sip_sent"].append(time.monotonic())
                stream.feed(BURST[at * FRAME_BYTES : (at + 1) * FRAME_BYTES] or SILENCE)
                n += 1

            received = stream.datagram_received

            def timed(data: bytes, addr: tuple[str, int]) -> None:
                received(data, addr)
                now = time.monotonic()
                while stream.inbound:  # nobody else reads this caller's audio
                    info["sip_heard"].append((now, audioop.rms(stream.inbound.popleft(), 2)))

            stream.datagram_received = timed  # type: ignore[method-assign]
            ua.clock.tickers.add(tick)
            await asyncio.sleep(seconds / 3)
            ua.clock.tickers.discard(tick)
            await leg.hangup()

        await asyncio.gather(*(probe_call(i) for i in range(probes)))
        await asyncio.to_thread(sys.stdin.readline)  # the bench's "stop": its callers are done
        for pc in list(pcs.values()):
            await finish(pc)
        pcs.clear()
        to_browser, to_sip = [], []
        for info in probe_calls.values():
            mic = info.get("browser_mic")
            to_browser += delays(info["sip_sent"], onsets(info["browser_heard"]))
            if mic is not None:
                to_sip += delays(mic.sent, onsets(info["sip_heard"]))
        audible = sum(1 for levels in heard_levels.values() if levels and max(levels) > LOUD)
        reader.cancel()
        await ua.stop()
    print(json.dumps({
        "rings": rings, "jitter_ms": jitters, "sip_to_browser_ms": to_browser,
        "browser_to_sip_ms": to_sip, "legs_heard": audible, "legs": len(heard_levels),
    }))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
