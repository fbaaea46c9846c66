"""VK channel: inbound updates stored per second (Bots Long Poll and Callback API), and the
outbound pace under VK's rate-limit errors.

``switchboard serve`` runs as its own process with the VK plugin (its entry point) and
``api_url`` pointed at the loopback VK API stand-in (a process of its own for the outbound
part, so nothing this process does bunches its clock).

- Long poll: N ``message_new`` updates from 500 users wait at the stand-in's long poll
  server; the rate is N / the time until the last is stored (each message's contact found
  or created and named through ``users.get`` once per user, the position saved after each
  batch).
- Callback: N events POSTed over 32 keep-alive connections (the secret checked, the body
  kept, ``ok``), the rate until the last ``ok`` and until the last message is stored.
- The bare insert loop: the same N rows, one transaction each, no HTTP.
- Outbound: M messages to M users queued first, then sent at ``requests_per_second = R``
  while every 20th ``messages.send`` answers error 6 (too many requests per second):
  the attempt rate, the busiest second, what was lost or sent twice.
Target (issue #18): 1,000 updates/s stored, each way; the outbound rate held, 0 lost.

Usage: python bench/vk_bench.py [--updates 5000] [--messages 400] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

from switchboard import Switchboard
from switchboard.testing import serve_process

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine, post_all, raw_post, stored
from ingest import bare_loop
from whatsapp_outbound_bench import busiest_second

from switchboard_vk import CALLBACK_PATH
from switchboard_vk.testing import SECRET, message_new, runner_config, vk_api


def updates(n: int, secret: str | None = None) -> list[dict[str, object]]:
    return [message_new(100_000 + i % 500, f"m{i}", i + 1, secret=secret) for i in range(n)]


def long_poll(url: str, n: int) -> float:
    """Seconds from N updates waiting at the long poll server to the last one stored."""
    with vk_api() as vk, tempfile.TemporaryDirectory() as folder:
        config = runner_config(Path(folder), vk.url, url, vk="long_poll_wait = 2")
        proc, _ = serve_process(config, "vk")
        try:
            while not any(m == "groups.getLongPollServer" for _, m in vk.calls):
                time.sleep(0.05)
            time.sleep(0.5)  # its first poll waits at the server
            started = time.perf_counter()
            vk.push(*updates(n))
            while stored(url) < n:
                time.sleep(0.01)
            return time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def callback(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Seconds until the last ``ok``, and until the last message was stored."""
    with vk_api() as vk, tempfile.TemporaryDirectory() as folder:
        config = runner_config(Path(folder), vk.url, url, vk='mode = "callback"')
        proc, base = serve_process(config, "vk")
        try:
            requests = [raw_post(CALLBACK_PATH, json.dumps(u).encode()) for u in updates(n, SECRET)]
            started = time.perf_counter()
            asyncio.run(post_all(base, requests, concurrency))
            answered = time.perf_counter() - started
            while stored(url) < n:
                time.sleep(0.01)
            return answered, time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


async def queue(config: Path, m: int) -> None:
    sb = await Switchboard.open(config)
    try:
        await asyncio.gather(
            *(sb.outbox.enqueue("vk", address=f"vk:{200_000 + i}", text=f"n{i}") for i in range(m))
        )
    finally:
        await sb.close()


def stand_in(expect: int, pipe: Connection) -> None:
    """The VK API stand-in in a process of its own: every 20th send answers error 6."""
    with vk_api() as vk:
        vk.throttle_every = 20
        pipe.send(vk.url)
        deadline = time.monotonic() + 3600
        while len(vk.sent) < expect and time.monotonic() < deadline:
            time.sleep(0.5)
        sends = [t for t, m in vk.calls if m == "messages.send"]
        pipe.send((sends, [s["peer_id"] for s in vk.sent]))


def outbound(url: str, m: int, rate: float) -> str:
    ours, theirs = multiprocessing.Pipe()
    helper = multiprocessing.Process(target=stand_in, args=(m, theirs))
    helper.start()
    api_url = ours.recv()
    with tempfile.TemporaryDirectory() as folder:
        config = runner_config(
            Path(folder),
            api_url,
            url,
            vk=f"requests_per_second = {rate}\nmax_concurrency = 8",
            more="[switchboard.outbox]\nbackoff_initial = 0.5\nbackoff_max = 4.0\n"
            "batch_size = 200\npoll_interval = 0.2\n",
        )
        asyncio.run(queue(config, m))
        proc, _ = serve_process(config, "vk")
        try:
            if not ours.poll(m / rate * 3 + 60):
                raise SystemExit("not all sent in time")
            attempts, peers = ours.recv()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            helper.join(30)
    attempts.sort()
    count = Counter(peers)
    span = attempts[-1] - attempts[0]
    return (
        f"{len(attempts)} sends ({len(attempts) - len(peers)} answered error 6) in {span:.1f} s: "
        f"{(len(attempts) - 1) / span:.1f}/s (configured {rate:g}); busiest second "
        f"{busiest_second(attempts)}; lost {m - len(count)}; sent twice "
        f"{sum(c - 1 for c in count.values())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    n = args.updates
    print(f"VK benchmark on {machine()}; {n} updates, {args.messages} sends")
    for backend in args.backends.split(","):
        with database(backend) as url:
            polled = long_poll(url, n)
        with database(backend) as url:
            answered, kept = callback(url, n, args.concurrency)
        with database(backend) as url:
            bare = n / bare_loop(url, n)
        with database(backend) as url:
            sent = outbound(url, args.messages, args.rate)
        print(
            f"  {backend:10s} long poll stored {n / polled:6.0f}/s; callback ok {n / answered:6.0f}/s,"
            f" stored {n / kept:6.0f}/s; bare insert loop {bare:6.0f} rows/s; "
            f"ratios {n / polled / bare:.2f} / {n / kept / bare:.2f}\n  {'':10s} outbound: {sent}",
            flush=True,
        )


if __name__ == "__main__":
    main()
