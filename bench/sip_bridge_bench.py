"""Bridged and recorded SIP calls at scale, and what SRTP costs.

1. Bridged calls. SIPp callers place calls at ``--rate`` calls/s through Kamailio to the
   SIP channel, with at most N at once; Switchboard rings one agent, a SIPp phone that
   answers every call and plays G.711 audio; each call is bridged (two legs) and recorded
   as a stereo WAV; the caller hangs up after the hold time. A step passes when SIPp
   reports no failed call on either side and N calls were bridged at once. Reported:
   setup time (caller's INVITE to its 200) p50/p95, the media clock's send-interval
   jitter p99, Switchboard's CPU per call-second, and both channels' loudness in sampled
   recordings. ``--profile`` samples the process with py-spy at the largest step and
   prints where the time goes.
2. SRTP cost. N bridged pairs of RTP streams in one process (the channel's own RtpStream
   and MediaClock on loopback), plain and with SDES-SRTP on both legs, for ``--seconds``:
   CPU per call-second of each and their ratio. (SIPp 3.6 from Debian has no SRTP, so
   this part is measured on the media layer, not with outside callers.)
3. TLS call setups. Callers in a process of their own (bench/_tls_caller.py: our user
   agent over TLS, one connection) call at ``--tls-rates`` calls/s for ``--seconds``
   through Kamailio's TLS port; Switchboard (also over TLS) bridges each to a SIPp agent
   (UDP) and records it. Reported per rate: calls answered of attempted, setup p50/p95
   (INVITE to 200 as the caller sees it), failures by reason.

    uv run python bench/sip_bridge_bench.py [--steps 100,200,250,300] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import machine

from switchboard.testing import LoopbackPlugin, open_switchboard
from switchboard_sip import SipChannel, SipSettings
from switchboard_sip.media import Crypto, MediaClock, RtpStream, Sdp, tone
from switchboard_sip.testing import (
    Kamailio,
    Sipp,
    agent_scenario,
    caller_scenario,
    free_udp_port,
    pcm_rms,
)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def setup_times(folder: Path) -> list[float]:
    """The callers' setup times (INVITE to 200, ms) SIPp traced with ``-trace_rtt``."""
    rtts: list[float] = []
    for path in folder.glob("caller_*_rtt.csv"):
        with path.open() as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) >= 2 and row[1].replace(".", "").isdigit():
                    rtts.append(float(row[1]))
    return rtts


def sipp_failed(folder: Path, name: str) -> int:
    failed = 0
    for path in folder.glob(f"{name}_*_.csv"):
        rows = list(csv.DictReader(path.open(), delimiter=";"))
        if rows:
            failed = int(rows[-1].get("FailedCall(C)") or 0)
    return failed


def profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling this process (collapsed stacks), if py-spy can be run."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("  (no py-spy on PATH: uv tool install py-spy, or pip install py-spy)")
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-r",
            "50",
            "-f",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_profile(path: Path, top: int = 12) -> list[tuple[str, float]]:
    """Self time by function from py-spy's collapsed stacks, as shares of all samples."""
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        name = leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
        own[name] = own.get(name, 0) + int(count)
        total += int(count)
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return [(name, count / total) for name, count in ranked]


async def open_bench_switchboard(folder: Path, **sip: Any) -> Any:
    """A runner with the SIP channel (these ``[plugins.sip]`` settings at a loopback
    Kamailio) and one agent, alice, at extension 101."""
    return await open_switchboard(
        folder,
        LoopbackPlugin(SipChannel(), plugin_name="sip", settings=SipSettings),
        config={
            "switchboard": {"agents": [{"name": "alice", "extension": "101"}]},
            "plugins": {"sip": {"server": "127.0.0.1", "local_port": free_udp_port(), **sip}},
        },
    )


async def bridged_step(root: Path, n: int, args: Any, profile_it: bool) -> dict[str, Any]:
    folder = root / f"bridge{n}"
    folder.mkdir(parents=True)
    kam = Kamailio(folder / "kamailio").start()
    hold = max(args.hold, n / args.rate + 2)
    total = n * 2
    rtp_low = 20000
    sb = await open_bench_switchboard(
        folder,
        port=kam.port,
        username=kam.user,
        password=kam.password,
        rtp_port_low=rtp_low,
        rtp_port_high=rtp_low + 8 * n + 100,
        max_calls=n + 50,
        ring_timeout=30,
        record=True,
    )
    spy: subprocess.Popen[bytes] | None = None
    try:
        ua = sb.channels["sip"].channel.ua
        agent = Sipp(folder / "sipp", "agent", agent_scenario(answer_after_ms=100))
        await agent.start(None, "-m", str(total), "-l", str(n + 20), "-fd", "1")
        kam.route("101", agent.port)
        ua.clock.lateness_ms.clear()
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                up = sum(1 for s in sb.channels["sip"].channel.bridges)
                peak = max(peak, up)
                await asyncio.sleep(0.1)

        sampler = asyncio.ensure_future(sample())
        caller = Sipp(
            folder / "sipp", "caller", caller_scenario("12025550143", talk_ms=int(hold * 1000))
        )
        extra = ["-s", kam.user, "-r", str(args.rate), "-l", str(n), "-m", str(total)]
        extra += ["-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1"]
        cpu0, started = cpu_seconds(), time.monotonic()
        if profile_it:
            spy = profile(os.getpid(), int(n / args.rate + hold * 0.8), folder / "profile.txt")
        result = await caller.run(
            f"127.0.0.1:{kam.port}", *extra, timeout=total / args.rate + hold + 120
        )
        wall = time.monotonic() - started
        cpu = cpu_seconds() - cpu0
        sampler.cancel()
        agent_result = await agent.wait(30)
        await asyncio.sleep(2)
        rtts = setup_times(folder / "sipp")
        late = list(ua.clock.lateness_ms)
        intervals = [20 + b - a for a, b in itertools.pairwise(late)]
        calls = sb.store.list_calls(limit=total + 10)
        answered = [c for c in calls if c.agent_id is not None]
        recorded = [c for c in answered if c.recording is not None]
        sample_calls = random.Random(n).sample(recorded, min(10, len(recorded)))
        audible = sum(
            1
            for c in sample_calls
            if c.recording is not None
            and pcm_rms(c.recording.path, 0) > 100
            and pcm_rms(c.recording.path, 1) > 100
        )
        call_seconds = len(answered) * hold
        out = {
            "n": n,
            "total": total,
            "failed": sipp_failed(folder / "sipp", "caller"),
            "agent_failed": sipp_failed(folder / "sipp", "agent") if agent_result.ok else -1,
            "answered": len(answered),
            "peak": peak,
            "setup_p50": percentile(rtts, 50),
            "setup_p95": percentile(rtts, 95),
            "jitter_p99": percentile([abs(i - 20) for i in intervals], 99),
            "cpu_ms_per_call_s": 1000 * cpu / call_seconds if call_seconds else float("nan"),
            "cpu_share": cpu / wall,
            "audible": f"{audible}/{len(sample_calls)}",
        }
        out["pass"] = result.ok and out["failed"] == 0 and out["answered"] == total and peak >= n
        if spy is not None:
            spy.wait(60)
            out["profile"] = summarize_profile(folder / "profile.txt")
        return out
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        await sb.close()
        kam.stop()


async def srtp_cost(n: int, seconds: float) -> dict[str, float]:
    """CPU per call-second of N bridged pairs, plain and SRTP (both legs encrypted)."""
    out: dict[str, float] = {}
    for mode in ("plain", "srtp"):
        clock = MediaClock()
        streams: list[RtpStream] = []
        for _ in range(n):
            pair = [RtpStream("127.0.0.1", free_udp_port()) for _ in range(2)]
            for s in pair:
                await s.open()
            if mode == "srtp":
                pair[0].local_crypto, pair[1].local_crypto = Crypto.new(), Crypto.new()
            for a, b in (pair, pair[::-1]):
                a.set_remote(Sdp("127.0.0.1", b.port, 0, 101, "RTP/AVP", b.local_crypto))
            for s in pair:
                s.play(tone(seconds + 1, 440))
                clock.streams.add(s)
            streams += pair

            def relay(a: RtpStream = pair[0], b: RtpStream = pair[1]) -> None:
                for src, dst in ((a, b), (b, a)):
                    frame = src.take_frame()
                    if frame is not None:
                        dst.feed(frame)

            clock.tickers.add(relay)
        clock.start()
        await asyncio.sleep(1)  # settle
        cpu0 = cpu_seconds()
        await asyncio.sleep(seconds)
        cpu = cpu_seconds() - cpu0
        received = sum(len(s.inbound) for s in streams)
        await clock.stop()
        for s in streams:
            s.close()
        out[f"{mode}_ms_per_call_s"] = 1000 * cpu / (n * seconds)
        out[f"{mode}_bad"] = float(sum(s.bad_packets for s in streams))
        out[f"{mode}_received"] = float(received)
    out["ratio"] = out["srtp_ms_per_call_s"] / out["plain_ms_per_call_s"]
    return out


async def tls_setups(root: Path, rate: float, seconds: float) -> dict[str, Any]:
    folder = root / f"tls{rate:g}"
    folder.mkdir(parents=True)
    kam = Kamailio(folder / "kamailio", tls=True).start()
    sb = await open_bench_switchboard(
        folder,
        port=kam.tls_port,
        transport="tls",
        tls_ca_file=str(kam.ca_file),
        username=kam.user,
        password=kam.password,
        rtp_port_low=20000,
        rtp_port_high=29998,
        max_calls=1000,
    )
    try:
        total = int(rate * seconds)
        agent = Sipp(folder / "sipp", "agent", agent_scenario(answer_after_ms=0, audio=False))
        await agent.start(None, "-m", str(total), "-fd", "1")
        kam.route("101", agent.port)
        caller = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("_tls_caller.py")),
            "127.0.0.1",
            str(kam.tls_port),
            str(kam.ca_file),
            kam.user,
            str(rate),
            str(seconds),
            "2",
            "40000",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(caller.communicate(), seconds + 120)
        await agent.stop()
        result = json.loads(out.decode().strip().splitlines()[-1])
        setups = result["setups_ms"]
        return {
            "rate": rate,
            "attempts": result["attempts"],
            "answered": result["answered"],
            "setup_p50": percentile(setups, 50),
            "setup_p95": percentile(setups, 95),
            "failures": result["failures"],
        }
    finally:
        await sb.close()
        kam.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="100,200,250,300")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--srtp-calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-bridge", action="store_true")
    parser.add_argument("--skip-srtp", action="store_true")
    parser.add_argument("--tls-rates", default="10,20,40")
    args = parser.parse_args()
    print(f"# {datetime.now().isoformat(timespec='minutes')} on {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.skip_bridge:
            steps = [int(s) for s in args.steps.split(",")]
            for i, n in enumerate(steps):
                r = await bridged_step(root, n, args, args.profile and i == len(steps) - 1)
                print(
                    f"bridged {n:4d}: {'PASS' if r['pass'] else 'FAIL'}  calls {r['answered']}/"
                    f"{r['total']} failed {r['failed']} (agent side {r['agent_failed']}) "
                    f"peak {r['peak']}  setup p50 {r['setup_p50']:.0f} ms p95 "
                    f"{r['setup_p95']:.0f} ms  jitter p99 {r['jitter_p99']:.1f} ms  CPU "
                    f"{r['cpu_ms_per_call_s']:.2f} ms/call-s ({r['cpu_share']:.0%} of a core)  "
                    f"audible recordings {r['audible']}"
                )
                for name, share in r.get("profile", []):
                    print(f"    {share:6.1%}  {name}")
        if not args.skip_srtp:
            s = await srtp_cost(args.srtp_calls, args.seconds)
            print(
                f"media layer, {args.srtp_calls} bridged calls: plain "
                f"{s['plain_ms_per_call_s']:.3f} ms/call-s, SRTP both legs "
                f"{s['srtp_ms_per_call_s']:.3f} ms/call-s: x{s['ratio']:.2f} "
                f"(bad packets: plain {s['plain_bad']:.0f}, srtp {s['srtp_bad']:.0f})"
            )
        for rate in [float(r) for r in args.tls_rates.split(",") if r]:
            t = await tls_setups(root, rate, args.seconds)
            print(
                f"TLS calls at {rate:g}/s: answered {t['answered']}/{t['attempts']}  setup "
                f"p50 {t['setup_p50']:.0f} ms p95 {t['setup_p95']:.0f} ms  failures "
                f"{t['failures'] or 'none'}"
            )


if __name__ == "__main__":
    asyncio.run(main())
