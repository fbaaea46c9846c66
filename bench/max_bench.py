"""MAX channel: inbound updates stored per second (long polling and webhook), and the
outbound pace under MAX's 429s.

``switchboard serve`` runs as its own process with the MAX plugin (its entry point) and
``api_url`` pointed at the loopback MAX Bot API stand-in (a process of its own for the
outbound part, so nothing this process does bunches its clock).

- Long polling: N ``message_created`` updates from 500 users wait at the stand-in; the
  channel takes them 100 a request (MAX's batch) and at most 2 requests a second (MAX's
  limit), storing each batch before saving the marker; the rate runs until the last is
  stored.
- Webhook: N updates POSTed over 32 keep-alive connections (the secret header checked,
  the body kept, 200), the rate until the last 200 and until the last message is stored.
- The bare insert loop: the same N rows, one transaction each, no HTTP.
- Outbound: M messages to M users queued first, then sent at ``requests_per_second = R``
  while every 20th ``POST /messages`` answers 429.
Target (issue #18): 1,000 updates/s stored, each way; the outbound rate held, 0 lost.

Usage: python bench/max_bench.py [--updates 5000] [--messages 400] [--rate 20]
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

from switchboard_max import WEBHOOK_PATH
from switchboard_max.testing import SECRET, max_api, message_created, runner_config


def updates(n: int) -> list[dict[str, object]]:
    return [message_created(100_000 + i % 500, f"m{i}", f"mid.b{i}") for i in range(n)]


def long_poll(url: str, n: int) -> float:
    """Seconds from N updates waiting at the stand-in to the last one stored."""
    with max_api() as mx, tempfile.TemporaryDirectory() as folder:
        config = runner_config(Path(folder), mx.url, url, settings="poll_timeout = 2")
        proc, _ = serve_process(config, "max")
        try:
            while not any(w == "GET /updates" for _, w in mx.calls):
                time.sleep(0.05)
            time.sleep(0.5)  # its first request waits at the stand-in
            started = time.perf_counter()
            mx.push(*updates(n))
            while stored(url) < n:
                time.sleep(0.01)
            return time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def webhook(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Seconds until the last 200, and until the last message was stored."""
    with max_api() as mx, tempfile.TemporaryDirectory() as folder:
        config = runner_config(Path(folder), mx.url, url, settings='mode = "webhook"')
        proc, base = serve_process(config, "max")
        try:
            headers = {"X-Max-Bot-Api-Secret": SECRET}
            requests = [raw_post(WEBHOOK_PATH, json.dumps(u).encode(), headers) for u in updates(n)]
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
            *(
                sb.outbox.enqueue("max", address=f"max:{200_000 + i}", text=f"n{i}")
                for i in range(m)
            )
        )
    finally:
        await sb.close()


def stand_in(expect: int, pipe: Connection) -> None:
    """The MAX stand-in in a process of its own: every 20th send answers 429."""
    with max_api() as mx:
        mx.throttle_every = 20
        pipe.send(mx.url)
        deadline = time.monotonic() + 3600
        while len(mx.sent) < expect and time.monotonic() < deadline:
            time.sleep(0.5)
        sends = [t for t, w in mx.calls if w == "POST /messages"]
        pipe.send((sends, [s["user_id"] for s in mx.sent]))


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
            settings=f"requests_per_second = {rate}\nmax_concurrency = 8",
            more="[switchboard.outbox]\nbackoff_initial = 0.5\nbackoff_max = 4.0\n"
            "batch_size = 200\npoll_interval = 0.2\n",
        )
        asyncio.run(queue(config, m))
        proc, _ = serve_process(config, "max")
        try:
            if not ours.poll(m / rate * 3 + 60):
                raise SystemExit("not all sent in time")
            attempts, users = ours.recv()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            helper.join(30)
    attempts.sort()
    count = Counter(users)
    span = attempts[-1] - attempts[0]
    return (
        f"{len(attempts)} sends ({len(attempts) - len(users)} answered 429) in {span:.1f} s: "
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
    print(f"MAX benchmark on {machine()}; {n} updates, {args.messages} sends")
    for backend in args.backends.split(","):
        with database(backend) as url:
            polled = long_poll(url, n)
        with database(backend) as url:
            answered, kept = webhook(url, n, args.concurrency)
        with database(backend) as url:
            bare = n / bare_loop(url, n)
        with database(backend) as url:
            sent = outbound(url, args.messages, args.rate)
        print(
            f"  {backend:10s} long polling stored {n / polled:6.0f}/s; webhook 200 "
            f"{n / answered:6.0f}/s, stored {n / kept:6.0f}/s; bare insert loop {bare:6.0f} "
            f"rows/s; ratios {n / polled / bare:.2f} / {n / kept / bare:.2f}\n"
            f"  {'':10s} outbound: {sent}",
            flush=True,
        )


if __name__ == "__main__":
    main()
