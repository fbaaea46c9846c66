"""Inbound ingest through the core (dedupe + resolve + save + hooks), in messages/s.

Compares with a bare SQLAlchemy loop that inserts the same rows, one transaction per row,
on the same backend. Usage: python bench/ingest.py [--backend sqlite|postgresql|both] [-n N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine

from switchboard import InboundMessage, hookimpl
from switchboard.models import utcnow
from switchboard.store import Store, interaction_t
from switchboard.testing import LoopbackChannel, LoopbackPlugin, open_switchboard


class Counter:
    plugin_name = "counter"

    def __init__(self) -> None:
        self.received = 0
        self.created = 0

    @hookimpl
    def message_received(self, interaction, contact):  # type: ignore[no-untyped-def]
        self.received += 1

    @hookimpl
    def contact_created(self, contact):  # type: ignore[no-untyped-def]
        self.created += 1


def messages(n: int, senders: int, dup_every: int = 20) -> list[InboundMessage]:
    out = []
    for i in range(n):
        ext = f"m{i - 1}" if i and i % dup_every == 0 else f"m{i}"  # 5 % redeliveries
        out.append(InboundMessage(ext, f"+1202{i % senders:07d}", text=f"message {i}"))
    return out


async def core_ingest(url: str, msgs: list[InboundMessage], window: int) -> tuple[float, Counter]:
    ch, counter = LoopbackChannel("bench"), Counter()
    with tempfile.TemporaryDirectory() as folder:
        sb = await open_switchboard(
            folder, LoopbackPlugin(ch), counter, config={"switchboard": {"database_url": url}}
        )
        in_flight = asyncio.Semaphore(window)

        async def one(m: InboundMessage) -> None:
            async with in_flight:
                await ch.inject(m)

        started = time.perf_counter()
        await asyncio.gather(*(one(m) for m in msgs))
        elapsed = time.perf_counter() - started
        await sb.close()
    return elapsed, counter


async def core_sequential(url: str, msgs: list[InboundMessage]) -> float:
    ch = LoopbackChannel("bench")
    with tempfile.TemporaryDirectory() as folder:
        sb = await open_switchboard(
            folder, LoopbackPlugin(ch), config={"switchboard": {"database_url": url}}
        )
        started = time.perf_counter()
        for m in msgs:
            await ch.inject(m)
        elapsed = time.perf_counter() - started
        await sb.close()
    return elapsed


def bare_loop(url: str, n: int) -> float:
    store = Store(url)
    store.upgrade()
    contact_id = store.create_contact("bench").id
    started = time.perf_counter()
    with store.engine.connect() as conn:
        for i in range(n):
            with conn.begin():
                conn.execute(
                    sa.insert(interaction_t).values(
                        contact_id=contact_id,
                        channel="bare",
                        direction="inbound",
                        kind="message",
                        status="received",
                        external_id=f"b{i}",
                        address="phone:+12020000000",
                        text=f"message {i}",
                        created_at=utcnow(),
                    )
                )
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgresql", "both"])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--senders", type=int, default=5000)
    parser.add_argument(
        "--window",
        type=int,
        default=200,
        help="messages in flight at once (a channel's steady stream)",
    )
    args = parser.parse_args()
    print(machine())
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    msgs = messages(args.n, args.senders)
    unique = len({m.external_id for m in msgs})
    for backend in backends:
        with database(backend) as url:
            elapsed, counter = asyncio.run(core_ingest(url, msgs, args.window))
        assert counter.received == unique, (counter.received, unique)
        with database(backend) as url:
            seq_n = min(args.n, 3000)
            seq = asyncio.run(core_sequential(url, msgs[:seq_n]))
        with database(backend) as url:
            bare = bare_loop(url, args.n)
        core_rate, bare_rate = args.n / elapsed, args.n / bare
        print(
            f"{backend:10s} core ingest ({args.window} in flight): {core_rate:8.0f} msg/s "
            f"({args.n} messages, {unique} unique, {counter.created} new contacts, "
            f"hooks fired {counter.received})"
        )
        print(f"{backend:10s} core ingest (one at a time):  {seq_n / seq:8.0f} msg/s")
        print(
            f"{backend:10s} bare SQLAlchemy insert loop:  {bare_rate:8.0f} rows/s "
            f"(one transaction per row)"
        )
        print(f"{backend:10s} ratio core/bare: {core_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
