"""WhatsApp channel, outbound: does the channel hold its configured rate under 429s?

The Graph API stand-in runs in a process of its own and answers every K-th ``/messages``
request with Meta's throughput error (HTTP 429, code 130429 "Rate limit hit"). This process first
queues N template messages to N recipients through the outbox (``sb.outbox.enqueue``, what
a plugin or a mailing does), then starts ``switchboard serve`` in its own process with the
WhatsApp plugin (its entry point) and ``messages_per_second = R`` on the same database; its
outbox sends them, the channel pacing every attempt, the throttled ones retried with the
outbox's backoff.

Figures: the attempt rate (every request the stand-in saw, throttled ones included)
against R while the queue was full (until the last message had its first attempt; the
throttled ones' retries trickle after it, spaced by the backoff), the most attempts in any
one-second window, when the last send succeeded, and what was lost or sent twice (0 and 0
expected: each recipient gets exactly one message, every interaction ends ``sent``).

Usage: python bench/whatsapp_outbound_bench.py [--messages 2000] [--rate 80] [--throttle-every 20]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing
import signal
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

import sqlalchemy as sa

from switchboard import Switchboard
from switchboard.store import interaction_t

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine

from switchboard_whatsapp.testing import graph_api, runner_config, start_runner

TEMPLATE = {"name": "order_update", "language": "en_US", "components": []}


async def queue(config: Path, n: int) -> None:
    """Queue ``n`` template messages, one per recipient, through the outbox."""
    sb = await Switchboard.open(config)
    try:
        for start in range(0, n, 500):  # concurrent enqueues share a transaction
            await asyncio.gather(
                *(
                    sb.outbox.enqueue(
                        "whatsapp",
                        address=f"+1202555{i:04d}",
                        text=f"order {i} has shipped",
                        payload={"whatsapp_template": TEMPLATE},
                    )
                    for i in range(start, min(n, start + 500))
                )
            )
    finally:
        await sb.close()


def statuses(url: str) -> Counter[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(interaction_t.c.status, sa.func.count()).group_by(interaction_t.c.status)
            )
            return Counter({str(status): int(count) for status, count in rows})
    finally:
        engine.dispose()


def busiest_second(times: list[float]) -> int:
    """The most attempts in any window of one second (starting at an attempt)."""
    return max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))


def stand_in(throttle_every: int, expect: int, pipe: Connection) -> None:
    """The Graph API stand-in, in a process of its own (so nothing this process does
    delays its answers and bunches their times): sends its URL, waits until ``expect``
    messages went through, then sends every attempt ``(time, to)`` and every success."""
    with graph_api() as graph:
        graph.throttle_every = throttle_every
        pipe.send(graph.url)
        deadline = time.monotonic() + 3600
        while len(graph.sent) < expect and time.monotonic() < deadline:
            time.sleep(0.5)
        pipe.send((graph.attempts, [(s["at"], s["to"]) for s in graph.sent]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--throttle-every", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    n = args.messages
    print(
        f"WhatsApp outbound benchmark on {machine()}; {n} messages at "
        f"messages_per_second={args.rate:g}, every {args.throttle_every}th request "
        "answered 429 (130429)"
    )
    settings = {
        "whatsapp": f"messages_per_second = {args.rate}\nmax_concurrency = 16",
        "more": "[switchboard.outbox]\nbackoff_initial = 0.5\nbackoff_max = 4.0\n"
        "batch_size = 200\npoll_interval = 0.2\n",
    }
    for backend in args.backends.split(","):
        ours, theirs = multiprocessing.Pipe()
        graph = multiprocessing.Process(target=stand_in, args=(args.throttle_every, n, theirs))
        graph.start()
        graph_url = ours.recv()
        with database(backend) as url, tempfile.TemporaryDirectory() as folder:
            # queued before the runner starts, so the sends start from a full queue
            asyncio.run(queue(runner_config(Path(folder), graph_url, url, **settings), n))
            proc, _ = start_runner(Path(folder), graph_url, url, **settings)
            try:
                if not ours.poll(n / args.rate * 3 + 60):
                    raise SystemExit("not all sent in time")
                attempted, succeeded = ours.recv()
                deadline = time.monotonic() + 60
                while (done := statuses(url))["sent"] + done["failed"] < n:  # recorded
                    if time.monotonic() > deadline:
                        raise SystemExit(f"not all recorded in time: {dict(done)}")
                    time.sleep(0.5)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                graph.join(30)
        attempts = sorted(t for t, _ in attempted)
        first: dict[str, float] = {}
        for t, to in sorted(attempted):
            first.setdefault(to, t)
        drained = max(first.values())  # the last message's first attempt
        steady = [t for t in attempts if t <= drained]
        sends = sorted(t for t, _ in succeeded)
        recipients = Counter(to for _, to in succeeded)
        lost = n - len(recipients)
        twice = sum(c - 1 for c in recipients.values())
        print(
            f"  {backend:10s} {len(attempts)} attempts ({len(attempts) - len(sends)} "
            f"answered 429); until every message had its first attempt: "
            f"{(len(steady) - 1) / (drained - steady[0]):.1f} attempts/s "
            f"(configured {args.rate:g}); busiest second {busiest_second(attempts)}; "
            f"all sent after {sends[-1] - attempts[0]:.1f} s; interactions {dict(done)}; "
            f"lost {lost}; sent twice {twice}",
            flush=True,
        )


if __name__ == "__main__":
    main()
