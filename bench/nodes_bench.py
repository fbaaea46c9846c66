"""Several runners: how fast singleton work moves, and what each runner and PostgreSQL
spend per inbound message (the figures the per-node model in docs/benchmarks.md uses).

Three ``switchboard serve`` processes on one PostgreSQL, each in a network namespace of
its own (tests/nodes_rig.py; root), with the Telegram channel polling a loopback Bot API
stand-in:

- **takeover**: ``--rounds`` times, the runner holding ``telegram:poll`` is SIGKILLed (or
  stopped with SIGTERM) and the time until another runner's ``/api/health`` says it holds
  the poller is taken (health polled every 10 ms over the live runners); the killed one
  is started again before the next round. Run at ``takeover_seconds`` 5 (the default)
  and 2.
- **cost per message**: ``--messages`` updates are queued at the stand-in at once; the
  time until all are stored, and the CPU the polling runner, the two waiting runners and
  every PostgreSQL process used meanwhile (from /proc).

    .venv/bin/python bench/nodes_bench.py [--rounds 8] [--messages 5000]   (as root)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from _common import database, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nodes_rig import (
    SERVICES,
    TELEGRAM_TOKEN,
    Node,
    NodeNetwork,
    start_node,
    start_nodes,
    telegram_table,
)

from switchboard_telegram.testing import BotApi, bot_api

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (and its waited-for children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICKS


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def holder(nodes: list[Node]) -> Node | None:
    for node in nodes:
        if node.alive and node.holds("telegram:poll"):
            return node
    return None


def takeover(
    net: NodeNetwork, pg: str, folder: Path, url: str, seconds: float, args: argparse.Namespace
) -> None:
    body = telegram_table(url)
    nodes = start_nodes(folder, net, pg, body, "telegram", takeover=seconds)
    try:
        for how in ("SIGKILL", "SIGTERM"):
            times = []
            for _ in range(args.rounds):
                while (first := holder(nodes)) is None:
                    time.sleep(0.01)
                index = nodes.index(first)
                started = time.monotonic()
                if how == "SIGKILL":
                    first.kill()
                else:
                    first.stop()
                others = [n for n in nodes if n is not first]
                while holder(others) is None:
                    time.sleep(0.01)
                times.append(time.monotonic() - started)
                nodes[index] = start_node(net, index, folder / f"node-{'abc'[index]}", "telegram")
            print(
                f"  takeover_seconds {seconds:g}, holder {how}: takeover p50 "
                f"{statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)}",
                flush=True,
            )
    finally:
        for node in nodes:
            node.stop()


def cost(
    net: NodeNetwork, pg: str, folder: Path, api: BotApi, url: str, args: argparse.Namespace
) -> None:
    body = telegram_table(url)
    nodes = start_nodes(folder, net, pg, body, "telegram")
    engine = sa.create_engine(pg.replace("postgresql://", "postgresql+psycopg://"))
    try:
        while (polling := holder(nodes)) is None:
            time.sleep(0.01)
        time.sleep(1.0)
        n = args.messages
        for i in range(n):
            api.push({"message": api.message(2000 + i % 200, f"m{i}", message_id=i + 1)})
        pg_pids = postgres_pids()
        before = {node.name: cpu_seconds(node.proc.pid) for node in nodes}
        pg_before = sum(cpu_seconds(p) for p in pg_pids)
        started = time.monotonic()

        def stored() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        sa.text("SELECT count(*) FROM interaction WHERE channel = 'telegram'")
                    ).scalar_one()
                )

        while stored() < n:
            time.sleep(0.05)
        took = time.monotonic() - started
        spent = {node.name: cpu_seconds(node.proc.pid) - before[node.name] for node in nodes}
        pg_spent = sum(cpu_seconds(p) for p in postgres_pids()) - pg_before
        waiting = [spent[node.name] for node in nodes if node is not polling]
        print(
            f"  {n} updates stored in {took:.2f} s = {n / took:.0f}/s by the polling runner; "
            f"CPU per message: polling runner {spent[polling.name] / n * 1000:.2f} ms, "
            f"PostgreSQL {pg_spent / n * 1000:.2f} ms; the waiting runners "
            f"{sum(waiting) / took * 100 / len(waiting):.1f} % of a core each",
            flush=True,
        )
    finally:
        engine.dispose()
        for node in nodes:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    print(f"Several runners on {machine()}, {datetime.now():%Y-%m-%d %H:%M}")
    net = NodeNetwork(3, tag="sbb").start()
    try:
        with (
            bot_api(TELEGRAM_TOKEN, host=SERVICES) as (api, url),
            tempfile.TemporaryDirectory() as tmp,
        ):
            for seconds in (5.0, 2.0):
                with database("postgresql") as pg:
                    takeover(net, pg, Path(tmp) / f"t{seconds:g}", url, seconds, args)
            with database("postgresql") as pg:
                cost(net, pg, Path(tmp) / "cost", api, url, args)
    finally:
        net.stop()


if __name__ == "__main__":
    main()
