"""Messenger / Instagram channels: webhook messages stored per second, and the outbound pace.

Inbound: ``switchboard serve`` runs as its own process with the Meta plugin installed as
users install it (its entry point) and ``graph_url`` pointed at the loopback Graph API
stand-in, in a process of its own (Meta's API is another machine: its work must not slow
the posting client). This process posts N signed webhooks over C keep-alive connections
(the small asyncio client of ``_common``), each one Messenger text message from one of
500 people; the runner checks each signature on the raw bytes, keeps the body (one row,
concurrent bodies in one transaction), answers 200, and its reader stores the messages;
the first message of each person also has the profile looked up in the background (500
lookups, counted at the stand-in). Rates: N
/ the time from the first post to the last 200, and to the last message stored; beside
them the same N rows through a bare SQLAlchemy insert loop (one transaction per row, no
HTTP, no checks) on an empty database of the same kind. Target (issue #19): 1,000/s.

Outbound: the stand-in runs in a process of its own and answers every K-th Send API
request with Meta's rate-limit error (code 613). N messages to N people (each wrote
first, so the window is open) are queued through the outbox, then a runner with
``messages_per_second = R`` sends them. Figures as in ``whatsapp_outbound_bench``: the
attempt rate against R while the queue was full, the busiest second, lost and sent twice
(0 and 0 expected).

Usage: python bench/meta_bench.py [--messages 10000] [--outbound 1000] [--rate 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from switchboard import InboundMessage, Switchboard

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine, post_until_stored, raw_post
from ingest import bare_loop
from whatsapp_outbound_bench import busiest_second, statuses

from switchboard_meta import WEBHOOK_PATH
from switchboard_meta.testing import (
    meta_graph,
    runner_config,
    signature,
    start_runner,
    text_event,
    webhook_body,
)


async def post_webhooks(base: str, url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Seconds until the last 200, and until the last message was stored."""
    requests = [
        raw_post(WEBHOOK_PATH, body, {"X-Hub-Signature-256": signature(body)})
        for body in (
            webhook_body([text_event(f"69000000000{i % 500:05d}", f"m{i}", mid=f"m_B{i}")])
            for i in range(n)
        )
    ]
    return await post_until_stored(base, url, requests, concurrency)


def inbound(args: argparse.Namespace) -> None:
    print(f"  inbound: {args.messages} webhooks from 500 people, C={args.concurrency}")
    for backend in args.backends.split(","):
        with (
            graph_process(0, args.messages + 1) as (graph_url, pipe),
            database(backend) as url,
            tempfile.TemporaryDirectory() as folder,
        ):
            proc, base = start_runner(Path(folder), graph_url, url)
            try:
                accepted, elapsed = asyncio.run(
                    post_webhooks(base, url, args.messages, args.concurrency)
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                pipe.send("stop")
                profiles = pipe.recv()[2]
        with database(backend) as url:
            bare = bare_loop(url, args.messages)
        rate, bare_rate = args.messages / elapsed, args.messages / bare
        print(
            f"  {backend:10s} answered 200: {args.messages / accepted:6.0f} msg/s; "
            f"stored: {rate:6.0f} msg/s; bare insert loop {bare_rate:6.0f} rows/s; "
            f"ratio {rate / bare_rate:.2f}; profiles looked up by then {profiles}",
            flush=True,
        )


async def queue(config: Path, n: int) -> None:
    """Each of ``n`` people writes once (the window opens), then gets one message through
    the outbox."""
    sb = await Switchboard.open(config)
    try:
        for start in range(0, n, 500):  # concurrent calls share a transaction
            people = range(start, min(n, start + 500))
            await asyncio.gather(
                *(
                    sb.inbox.receive(
                        "messenger",
                        InboundMessage(f"m_in{i}", f"messenger:{6_100_000_000_000 + i}", "hi"),
                    )
                    for i in people
                )
            )
            await asyncio.gather(
                *(
                    sb.outbox.enqueue(
                        "messenger",
                        address=f"messenger:{6_100_000_000_000 + i}",
                        text=f"your order {i} has shipped",
                    )
                    for i in people
                )
            )
    finally:
        await sb.close()


def stand_in(throttle_every: int, expect: int, pipe: Connection) -> None:
    """The Graph API stand-in in a process of its own (so its work neither slows the
    posting client nor bunches its answers' times): sends its URL, waits until ``expect``
    messages went through or it is told to stop, then sends every attempt ``(time, to)``,
    every success, and how many profiles it was asked for."""
    with meta_graph() as graph:
        graph.throttle_every = throttle_every
        pipe.send(graph.url)
        deadline = time.monotonic() + 3600
        while len(graph.sent) < expect and time.monotonic() < deadline and not pipe.poll(0.5):
            pass
        succeeded = [(s["at"], s["recipient"]["id"]) for s in graph.sent]
        pipe.send((graph.attempts, succeeded, graph.profile_requests))


@contextlib.contextmanager
def graph_process(throttle_every: int, expect: int) -> Iterator[tuple[str, Connection]]:
    """:func:`stand_in` running: its URL and our end of the pipe."""
    ours, theirs = multiprocessing.Pipe()
    graph = multiprocessing.Process(target=stand_in, args=(throttle_every, expect, theirs))
    graph.start()
    try:
        yield ours.recv(), ours
    finally:
        graph.join(30)


def outbound(args: argparse.Namespace) -> None:
    n = args.outbound
    print(
        f"  outbound: {n} messages at messages_per_second={args.rate:g}, every "
        f"{args.throttle_every}th request answered code 613"
    )
    settings = {
        "meta": f"messages_per_second = {args.rate}\nmax_concurrency = 16",
        "more": "[switchboard.outbox]\nbackoff_initial = 0.5\nbackoff_max = 4.0\n"
        "batch_size = 200\npoll_interval = 0.2\n",
    }
    for backend in args.backends.split(","):
        with (
            graph_process(args.throttle_every, n) as (graph_url, pipe),
            database(backend) as url,
            tempfile.TemporaryDirectory() as folder,
        ):
            asyncio.run(queue(runner_config(Path(folder), graph_url, url, **settings), n))
            proc, _ = start_runner(Path(folder), graph_url, url, **settings)
            try:
                if not pipe.poll(n / args.rate * 3 + 60):
                    raise SystemExit("not all sent in time")
                attempted, succeeded, _ = pipe.recv()
                deadline = time.monotonic() + 60
                while (done := statuses(url))["sent"] + done["failed"] < n:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"not all recorded in time: {dict(done)}")
                    time.sleep(0.5)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        attempts = sorted(t for t, _ in attempted)
        first: dict[str, float] = {}
        for t, to in sorted(attempted):
            first.setdefault(to, t)
        drained = max(first.values())
        steady = [t for t in attempts if t <= drained]
        sends = sorted(t for t, _ in succeeded)
        recipients = Counter(to for _, to in succeeded)
        print(
            f"  {backend:10s} {len(attempts)} attempts ({len(attempts) - len(sends)} answered "
            f"613); until every message had its first attempt: "
            f"{(len(steady) - 1) / (drained - steady[0]):.1f} attempts/s (configured "
            f"{args.rate:g}); busiest second {busiest_second(attempts)}; all sent after "
            f"{sends[-1] - attempts[0]:.1f} s; outbound {done['sent']} sent, "
            f"{done['failed']} failed; lost {n - len(recipients)}; sent twice "
            f"{sum(c - 1 for c in recipients.values())}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--outbound", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--throttle-every", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--parts", default="inbound,outbound")
    args = parser.parse_args()
    print(f"Messenger benchmark on {machine()}")
    if "inbound" in args.parts:
        inbound(args)
    if "outbound" in args.parts:
        outbound(args)


if __name__ == "__main__":
    main()
