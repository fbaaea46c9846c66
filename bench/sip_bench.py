"""SIP benchmark: SIPp callers through Kamailio into an IVR prompt, and the screen pop.

1. Capacity. SIPp places calls at ``--rate`` calls/s with at most N at once; the IVR
   plugin answers each with a flow: a 3 s menu prompt that the caller's RFC 2833 digit
   "1" (sent after 1.5 s) interrupts, then an announcement that lasts the rest of the call
   (long enough that N calls are up at once), then it hangs up. A step passes when SIPp
   reports no failed call, every call's IVR path has the digit, and N calls were up at
   once. Reported:
   the highest N that passes, call setup time (INVITE → 200, SIPp's response-time
   trace) p50/p95, the media clock's send-interval jitter p99, and CPU time used.
   The same SIPp load (there the caller hangs up) runs against a bare pyVoIP answering
   script that plays a prompt and reads digits (bench/_pyvoip_ivr.py); the ratio of the
   capacities is printed.
2. Screen pop. The runner (HTTP API in a thread) takes calls at ``--pop-rate`` calls/s; an
   SSE client on /api/events notes when each ``call.ringing`` arrives; SIPp's message
   trace gives when each INVITE left the caller. Reported: p50/p95/p99 of the difference.

Kamailio runs without record-routing here (``-A NO_RECORD_ROUTE``) so that the same load
can run against pyVoIP, whose in-dialog requests ignore route sets.

    uv run python bench/sip_bench.py [--steps 50,100,150,200] [--rate 20] [--hold 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import wave
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _common import machine

from switchboard.app import create_app
from switchboard.core import settings_classes
from switchboard.plugins import Plugins
from switchboard.testing import LoopbackPlugin, make_config, open_switchboard, serve_in_thread
from switchboard_ivr import IvrPlugin
from switchboard_sip import SipChannel, SipSettings
from switchboard_sip.media import tone
from switchboard_sip.testing import Kamailio, Sipp, caller_scenario, free_udp_port
from switchboard_sip.ua import LegState

TOKEN = "bench-admin-token-0123456789"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def sip_config(kam: Kamailio, user: str, rtp: tuple[int, int]) -> dict[str, Any]:
    return {
        "server": "127.0.0.1",
        "port": kam.port,
        "username": user,
        "password": kam.password,
        "local_port": free_udp_port(),
        "rtp_port_low": rtp[0],
        "rtp_port_high": rtp[1],
        "record": False,
    }


async def run_sipp(
    folder: Path, kam: Kamailio, service: str, n: int, args: Any, hangup: str = "caller"
) -> dict[str, Any]:
    scenario = caller_scenario(
        "12025550143",
        talk_ms=int(hold_for(n, args) * 1000),
        digits="1",
        digit_delay_ms=1500,
        audio=False,
        hangup=hangup,
    )
    sipp = Sipp(folder, f"load{n}", scenario)
    total = n * 2
    extra = ["-s", service, "-r", str(args.rate), "-l", str(n), "-m", str(total)]
    extra += ["-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1"]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    result = await sipp.run(f"127.0.0.1:{kam.port}", *extra, timeout=total / args.rate + 120)
    wall = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    rtts: list[float] = []
    for path in folder.glob(f"load{n}_*_rtt.csv"):
        with path.open() as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) >= 2 and row[1].replace(".", "").isdigit():
                    rtts.append(float(row[1]))
    failed = 0
    for path in folder.glob(f"load{n}_*_.csv"):
        rows = list(csv.DictReader(path.open(), delimiter=";"))
        if rows:
            failed = int(rows[-1].get("FailedCall(C)") or 0)
    return {
        "ok": result.ok,
        "errors": result.errors[-600:],
        "total": total,
        "failed": failed,
        "setup_p50": percentile(rtts, 50),
        "setup_p95": percentile(rtts, 95),
        "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "wall": wall,
        "folder": folder,
    }


def hold_for(n: int, args: Any) -> float:
    """Long enough calls that N are up at once at this call rate."""
    return max(args.hold, n / args.rate + 1)


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)


IVR_FLOW = """
start = "greeting"

[nodes.greeting]
type = "menu"
prompt = "menu.wav"
timeout = 10
retries = 0
options = { "1" = "info" }

[nodes.info]
type = "play"
prompt = "info.wav"
"""


async def switchboard_step(root: Path, n: int, args: Any) -> dict[str, Any]:
    """The SIP channel driven by the IVR plugin: a 3 s menu prompt that the caller's digit
    interrupts, then an announcement as long as the call, then our hang-up."""
    folder = root / f"sb{n}"
    folder.mkdir(parents=True)
    write_wav(folder / "menu.wav", tone(3.0, 440))
    write_wav(folder / "info.wav", tone(hold_for(n, args), 330))
    (folder / "flow.toml").write_text(IVR_FLOW)
    kam = Kamailio(folder / "kamailio", record_route=False).start()
    sb = await open_switchboard(
        folder,
        LoopbackPlugin(SipChannel(), plugin_name="sip", settings=SipSettings),
        IvrPlugin(),
        config={
            "plugins": {
                "sip": sip_config(kam, kam.user, (20000, 29998)),
                "ivr": {"flow": str(folder / "flow.toml")},
            }
        },
    )
    try:
        ua = sb.channels["sip"].channel.ua
        ua.clock.lateness_ms.clear()
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                up = sum(1 for leg in ua.legs.values() if leg.state is LegState.ANSWERED)
                peak = max(peak, up)
                await asyncio.sleep(0.1)

        sampler = asyncio.ensure_future(sample())
        out = await run_sipp(folder / "sipp", kam, kam.user, n, args, hangup="callee")
        sampler.cancel()
        await asyncio.sleep(1)
        late = list(ua.clock.lateness_ms)
        intervals = [20 + b - a for a, b in itertools.pairwise(late)]
        calls = sb.store.list_calls(limit=out["total"] + 10)
        digits = sum(
            1 for c in calls if ("greeting", "1") in [(s.node, s.digits) for s in c.ivr_path]
        )
        out.update(
            answered=len(calls),
            digits=digits,
            peak=peak,
            jitter_p99=percentile([abs(i - 20) for i in intervals], 99),
            lateness_p99=percentile(late, 99),
        )
        out["pass"] = out["ok"] and out["failed"] == 0 and digits == out["total"] and peak >= n
        return out
    finally:
        await sb.close()
        kam.stop()


async def pyvoip_step(root: Path, n: int, args: Any) -> dict[str, Any]:
    folder = root / f"pv{n}"
    kam = Kamailio(folder / "kamailio", record_route=False).start()
    stats_file = folder / "pyvoip.json"
    port = free_udp_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("_pyvoip_ivr.py")),
            "127.0.0.1",
            str(kam.port),
            "bare",
            str(port),
            "40000",
            "49998",
            str(stats_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(3)  # pyVoIP registers, then starts its receive thread after 1 s
        pid_cpu0 = _proc_cpu(proc.pid)
        out = await run_sipp(folder / "sipp", kam, "bare", n, args)  # the caller hangs up
        out["cpu"] = _proc_cpu(proc.pid) - pid_cpu0
        await asyncio.sleep(2)
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        out.update(
            answered=stats.get("answered", 0),
            digits=stats.get("digits", 0),
            peak=stats.get("peak", 0),
        )
        out["pass"] = (
            out["ok"] and out["failed"] == 0 and out["digits"] == out["total"] and out["peak"] >= n
        )
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        kam.stop()


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sse_reader(
    url: str, seen: dict[str, float], stop: threading.Event, ready: threading.Event
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
    with contextlib.suppress(httpx.HTTPError):
        _read_sse(url, headers, seen, stop, ready)


def _read_sse(
    url: str,
    headers: dict[str, str],
    seen: dict[str, float],
    stop: threading.Event,
    ready: threading.Event,
) -> None:
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
        client.stream("GET", url + "/api/events", headers=headers) as response,
    ):
        ready.set()
        kind = None
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:") and kind == "call.ringing":
                now = time.time()
                data = json.loads(line[5:])
                seen.setdefault(data["data"]["call"]["call_id"], now)


def invite_times(folder: Path) -> dict[str, float]:
    """When each INVITE left SIPp, from its -trace_msg log."""
    sent: dict[str, float] = {}
    for path in folder.glob("*_messages.log"):
        stamp = None
        outgoing = False
        invite = False
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("-----"):
                stamp = datetime.strptime(
                    line.rsplit(" ", 2)[-2] + " " + line.rsplit(" ", 1)[-1], "%Y-%m-%d %H:%M:%S.%f"
                ).timestamp()
                outgoing = invite = False
            elif line.startswith("UDP message sent"):
                outgoing = True
            elif outgoing and line.startswith("INVITE "):
                invite = True
            elif invite and line.startswith("Call-ID:") and stamp is not None:
                sent.setdefault(line.split(":", 1)[1].strip(), stamp)
    return sent


async def screen_pop(root: Path, args: Any) -> dict[str, Any]:
    folder = root / "pop"
    folder.mkdir(parents=True)
    write_wav(folder / "menu.wav", tone(3.0, 440))
    write_wav(folder / "info.wav", tone(3.0, 330))
    (folder / "flow.toml").write_text(IVR_FLOW)
    kam = Kamailio(folder / "kamailio", record_route=False).start()
    plugins = Plugins()
    plugins.register(LoopbackPlugin(SipChannel(), plugin_name="sip", settings=SipSettings), "sip")
    plugins.register(IvrPlugin(), "ivr")
    config = make_config(
        folder,
        {
            "switchboard": {"tokens": [{"token": TOKEN, "role": "admin"}]},
            "plugins": {
                "sip": sip_config(kam, kam.user, (20000, 29998)),
                "ivr": {"flow": str(folder / "flow.toml")},
            },
        },
        await settings_classes(plugins),
    )
    seen: dict[str, float] = {}
    stop = threading.Event()
    ready = threading.Event()
    try:
        with serve_in_thread(create_app(config, plugins=plugins)) as running:
            await asyncio.sleep(1)  # the channel registers
            reader = threading.Thread(
                target=sse_reader, args=(running.url, seen, stop, ready), daemon=True
            )
            reader.start()
            ready.wait(10)
            sipp = Sipp(
                folder / "sipp", "pop", caller_scenario("12025550143", talk_ms=1000, audio=False)
            )
            total = int(args.pop_rate * args.pop_seconds)
            result = await sipp.run(
                f"127.0.0.1:{kam.port}",
                "-s",
                kam.user,
                "-r",
                str(args.pop_rate),
                "-m",
                str(total),
                "-trace_msg",
                timeout=args.pop_seconds + 60,
            )
            await asyncio.sleep(1)
            stop.set()
    finally:
        kam.stop()
    sent = invite_times(folder / "sipp")
    delays = [(seen[c] - sent[c]) * 1000 for c in sent if c in seen]
    return {
        "ok": result.ok,
        "calls": total,
        "popped": len(delays),
        "p50": percentile(delays, 50),
        "p95": percentile(delays, 95),
        "p99": percentile(delays, 99),
        "max": max(delays) if delays else float("nan"),
    }


async def capacity(
    root: Path, steps: list[int], args: Any, step_fn: Any, name: str
) -> tuple[int, list[dict[str, Any]]]:
    best = 0
    results = []
    for n in steps:
        out = await step_fn(root, n, args)
        out["n"] = n
        results.append(out)
        print(
            f"  {name} N={n}: {'pass' if out['pass'] else 'FAIL'}; {out['total']} calls, failed {out['failed']}, "
            f"digits {out['digits']}/{out['total']}, peak {out['peak']}, setup p50 {out['setup_p50']:.1f} ms "
            f"p95 {out['setup_p95']:.1f} ms"
            + (f", send jitter p99 {out['jitter_p99']:.2f} ms" if "jitter_p99" in out else "")
            + f", CPU {out['cpu']:.1f} s in {out['wall']:.1f} s",
            flush=True,
        )
        if not out["pass"]:
            if not out["ok"]:
                print("    " + out["errors"].strip().replace("\n", "\n    ")[:400])
            break
        best = n
    return best, results


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="100,200,400,800")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--hold", type=float, default=4.0)
    parser.add_argument("--pop-rate", type=float, default=10.0)
    parser.add_argument("--pop-seconds", type=float, default=30.0)
    parser.add_argument("--pyvoip-steps", default="25,50,100,150,200")
    parser.add_argument("--skip-pyvoip", action="store_true")
    parser.add_argument("--skip-switchboard", action="store_true")
    parser.add_argument("--skip-pop", action="store_true")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    print(f"SIP benchmark on {machine()}, {datetime.now():%Y-%m-%d}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(
            f"capacity at {args.rate:g} calls/s, IVR prompt + digit, hold at least {args.hold:g} s (N/rate + 1 s):"
        )
        ours = 0
        if not args.skip_switchboard:
            ours, _ = await capacity(root, steps, args, switchboard_step, "switchboard")
        if not args.skip_pyvoip:
            pv_steps = [int(x) for x in args.pyvoip_steps.split(",")]
            bare, _ = await capacity(root, pv_steps, args, pyvoip_step, "bare pyVoIP")
            if ours and bare:
                print(
                    f"capacity: switchboard {ours} (at least: the largest step tried), "
                    f"bare pyVoIP {bare} concurrent calls; ratio {ours / bare:.1f}"
                )
        if args.skip_pop:
            return
        pop = await screen_pop(root, args)
        print(
            f"screen pop at {args.pop_rate:g} calls/s: {pop['popped']}/{pop['calls']} calls, INVITE → call.ringing on "
            f"/api/events p50 {pop['p50']:.1f} ms, p95 {pop['p95']:.1f} ms, p99 {pop['p99']:.1f} ms, "
            f"max {pop['max']:.1f} ms (SIPp ok: {pop['ok']})"
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
