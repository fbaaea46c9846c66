"""Browser softphone legs at scale: SIP callers bridged to WebRTC legs, audio both ways.

A runner (console and SIP channel, SQLite) in this process; Kamailio; one agent whose calls
ring in the browser. The browser is stood in for by aiortc in a process of its own
(bench/_browser_peers.py: signed in to the console, its WebSocket, a peer connection per
call, a tone as the microphone), as the issue allows. SIPp callers place calls at
``--rate`` calls/s, at most N at once, each playing G.711 audio for the hold time; each is
bridged to a browser leg and recorded. A step passes when SIPp reports no failed call, N
calls were bridged at once, and the sampled recordings have audio on both channels.

Reported per step: setup (caller's INVITE to its 200) p50/p95; the time from the
``call.ringing`` event to the ring message at the browser p50/p99; the media clock's
send-interval jitter p99 (Switchboard's side of both legs); the RFC 3550 interarrival jitter
the browser legs measured, p99 over legs; the one-way delay through Switchboard each way,
timed with tone bursts on probe calls (SIP caller and browser in one process, one clock);
CPU of the runner per call-second.

    uv run python bench/webrtc_bench.py [--steps 25,50,100] [--rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _browser_peers import PROBE, delays, onsets
from _common import machine
from sip_bridge_bench import cpu_seconds, percentile, setup_times, sipp_failed

import switchboard.softphones
from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import LoopbackPlugin, make_config, serve_in_thread
from switchboard_console import ConsolePlugin, ConsoleSettings
from switchboard_console.softphone import WebSocketLink
from switchboard_sip import SipChannel, SipSettings
from switchboard_sip._compat import audioop
from switchboard_sip.testing import Kamailio, Sipp, caller_scenario, free_udp_port, pcm_rms

TOKEN = "alice-bench-token-0123456789"
HERE = Path(__file__).parent


class Probed:
    """Inside the runner, on each probe call: when audio came in and went out on each
    leg, with its loudness, to time the bursts through Switchboard alone."""

    def __init__(self) -> None:
        self.hooked: set[int] = set()
        self.sip_in: list[tuple[float, int]] = []
        self.browser_out: list[tuple[float, int]] = []
        self.browser_in: list[tuple[float, int]] = []
        self.sip_out: list[tuple[float, int]] = []

    def hook(self, channel: Any) -> None:
        for bridge in list(channel.bridges):
            call = bridge.session.call if bridge.session else None
            if call is None or PROBE not in (call.from_address or "") or id(bridge) in self.hooked:
                continue
            self.hooked.add(id(bridge))
            self._hook(bridge.customer.stream, bridge.agent.stream)

    def _hook(self, sip: Any, browser: Any) -> None:
        received, tick, put = sip.datagram_received, sip.tick, browser.track.put

        def sip_received(data: bytes, addr: Any) -> None:
            received(data, addr)
            if sip.inbound:
                self.sip_in.append((time.monotonic(), audioop.rms(sip.inbound[-1], 2)))

        def sip_tick() -> bytes:
            frame: bytes = tick()
            self.sip_out.append((time.monotonic(), audioop.rms(frame, 2)))
            return frame

        def browser_put(frame: bytes) -> None:
            self.browser_out.append((time.monotonic(), audioop.rms(frame, 2)))
            put(frame)

        heard = self.browser_in

        class Heard(collections.deque):  # type: ignore[type-arg]
            def append(self, frame: bytes) -> None:
                heard.append((time.monotonic(), audioop.rms(frame, 2)))
                super().append(frame)

        sip.datagram_received, sip.tick, browser.track.put = sip_received, sip_tick, browser_put
        browser.inbound = Heard(maxlen=50)

    def figures(self) -> dict[str, list[float]]:
        return {
            "sip_to_webrtc": delays(onsets(self.sip_in), onsets(self.browser_out)),
            "webrtc_to_sip": delays(onsets(self.browser_in), onsets(self.sip_out)),
        }


def runner_app(folder: Path, kam: Kamailio, n: int, jitter_frames: int) -> Any:
    plugins = Plugins()
    assert plugins.register(ConsolePlugin(), "console")
    sip = LoopbackPlugin(SipChannel(), plugin_name="sip", settings=SipSettings)
    assert plugins.register(sip, "sip")
    data = {
        "switchboard": {
            "agents": [{"name": "alice", "ring": "browser"}],
            "tokens": [{"token": TOKEN, "agent": "alice"}],
        },
        "plugins": {
            "console": {"secret": "bench-console-secret-0123"},
            "sip": {
                "server": kam.host,
                "port": kam.port,
                "username": kam.user,
                "password": kam.password,
                "local_port": free_udp_port(),
                "rtp_port_low": 20000,
                "rtp_port_high": 20000 + 8 * n + 200,
                "max_calls": n + 50,
                "ring_timeout": 30,
                "browser_jitter_frames": jitter_frames,
            },
        },
    }
    config = make_config(folder, data, {"console": ConsoleSettings, "sip": SipSettings})
    return create_app(config, plugins=plugins)


async def step(root: Path, n: int, args: Any) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"webrtc{n}-", dir=root))
    kam = Kamailio(folder / "kamailio").start()
    # one agent takes every call here: lift the per-agent bound on browser legs
    switchboard.softphones.MAX_LEGS_PER_AGENT = n + 20
    hold = max(args.hold, n / args.rate + 4)
    window = n / args.rate + hold  # from the first call to the last hang-up
    try:
        with serve_in_thread(runner_app(folder, kam, n, args.jitter_frames)) as svc:
            sb = svc.switchboard
            channel = sb.channels["sip"].channel
            for _ in range(150):
                if channel.ua is not None:
                    break
                await asyncio.sleep(0.1)
            peers = subprocess.Popen(
                [sys.executable, str(HERE / "_browser_peers.py"), svc.url, TOKEN, kam.host,
                 str(kam.port), kam.user, str(args.probes), str(window), "40000"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert peers.stdout is not None
            assert (await asyncio.to_thread(peers.stdout.readline)).strip() == "ready"
            channel.ua.clock.lateness_ms.clear()
            peak = 0
            probed = Probed()
            sent_rings: dict[str, float] = {}
            send = WebSocketLink.send

            async def timed_send(link: Any, message: Any) -> None:
                await send(link, message)
                if message.get("type") == "ring" and message.get("call"):
                    sent_rings[message["call"]] = time.time()

            WebSocketLink.send = timed_send  # type: ignore[method-assign]

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, len(channel.bridges))
                    svc.loop.call_soon_threadsafe(probed.hook, channel)
                    await asyncio.sleep(0.1)

            sampler = asyncio.ensure_future(sample())
            caller = Sipp(
                folder / "sipp", "caller", caller_scenario("12025550143", talk_ms=int(hold * 1000))
            )
            extra = ["-s", kam.user, "-r", str(args.rate), "-l", str(n), "-m", str(n)]
            extra += ["-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1"]
            cpu0, started = cpu_seconds(), time.monotonic()
            result = await caller.run(f"{kam.host}:{kam.port}", *extra, timeout=window + 120)
            wall = time.monotonic() - started
            cpu = cpu_seconds() - cpu0
            sampler.cancel()
            out_text = await asyncio.to_thread(peers.communicate, "stop\n", timeout=120)
            far = json.loads(out_text[0].strip().splitlines()[-1])
            await asyncio.sleep(2)
            late = list(channel.ua.clock.lateness_ms)
            rtts = setup_times(folder / "sipp")
            ringing = {
                e.data["call"]["call_id"]: e.created_at.timestamp()
                for e in sb.events.read_since(0, 10 * n + 100)
                if e.type == "call.ringing"
            }
            to_ring = [
                (at - ringing[call]) * 1000 for call, at in far["rings"].items() if call in ringing
            ]
            to_socket = [
                (at - ringing[call]) * 1000 for call, at in sent_rings.items() if call in ringing
            ]
            inside = probed.figures()
            WebSocketLink.send = send  # type: ignore[method-assign]
            calls = sb.store.list_calls(limit=n + args.probes + 10)
            answered = [c for c in calls if c.agent_id is not None]
            recorded = [c for c in answered if c.recording is not None]
            sampled = random.Random(n).sample(recorded, min(10, len(recorded)))
            audible = sum(
                1
                for c in sampled
                if c.recording is not None
                and pcm_rms(c.recording.path, 0) > 100
                and pcm_rms(c.recording.path, 1) > 100
            )
            intervals = [20 + b - a for a, b in itertools.pairwise(late)]
            out = {
                "n": n,
                "jitter_frames": args.jitter_frames,
                "failed": sipp_failed(folder / "sipp", "caller"),
                "answered": len(answered),
                "peak": peak,
                "setup_p50": percentile(rtts, 50),
                "setup_p95": percentile(rtts, 95),
                "ring_p50": percentile(to_ring, 50),
                "ring_p99": percentile(to_ring, 99),
                "ring_sent_p50": percentile(to_socket, 50),
                "ring_sent_p99": percentile(to_socket, 99),
                "clock_jitter_p99": percentile([abs(i - 20) for i in intervals], 99),
                "leg_jitter_p99": percentile(far["jitter_ms"], 99),
                "to_browser_p50": percentile(far["sip_to_browser_ms"], 50),
                "to_browser_p95": percentile(far["sip_to_browser_ms"], 95),
                "to_sip_p50": percentile(far["browser_to_sip_ms"], 50),
                "to_sip_p95": percentile(far["browser_to_sip_ms"], 95),
                "inside_to_webrtc_p50": percentile(inside["sip_to_webrtc"], 50),
                "inside_to_webrtc_p95": percentile(inside["sip_to_webrtc"], 95),
                "inside_to_sip_p50": percentile(inside["webrtc_to_sip"], 50),
                "inside_to_sip_p95": percentile(inside["webrtc_to_sip"], 95),
                "latency_samples": len(far["sip_to_browser_ms"]) + len(far["browser_to_sip_ms"]),
                "cpu_ms_per_call_s": 1000 * cpu / (len(answered) * hold) if answered else 0,
                "cpu_share": cpu / wall,
                "browser_legs_heard": f"{far['legs_heard']}/{far['legs']}",
                "audible": f"{audible}/{len(sampled)}",
            }
            if not result.ok:
                out["errors"] = result.errors[:600]
            out["pass"] = result.ok and out["failed"] == 0 and peak >= n and audible == len(sampled)
            return out
    finally:
        kam.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="25,50,100")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--jitter-frames", type=int, default=1, help="browser_jitter_frames")
    args = parser.parse_args()
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.steps.split(",")]:
            out = await step(Path(tmp), n, args)
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
