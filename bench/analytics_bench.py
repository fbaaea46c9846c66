"""Call analytics over 1,000,000 call records (target: each query at most 1 s).

Fills a fresh store (SQLite and PostgreSQL) with N calls spread over 90 days among 20
agents — inbound and outbound, answered, missed, abandoned in an IVR with a path — then
times `GET /api/analytics/calls`' three groupings over the last 30 days and over all 90,
and the console dashboard's call-cost query (customer numbers in six countries, a tariff
of eight prefixes).

    uv run python bench/analytics_bench.py [--calls 1000000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

from _common import database, machine

from switchboard.analytics import call_stats
from switchboard.calls import ivr_step_t
from switchboard.models import Agent
from switchboard.schema import PluginSchema
from switchboard.store import Store, call_t, insert_many, interaction_t
from switchboard_console import Rate, TariffSettings, tables
from switchboard_console.tariff import costs_in

CONSOLE_SCHEMA = PluginSchema(
    "console", files("switchboard_console") / "migrations", tables.metadata
)

START = datetime(2026, 8, 1, tzinfo=UTC)
NUMBER_PREFIXES = ["+7495", "+7812", "+7916", "+1202", "+44207", "+4930"]
TARIFF = TariffSettings(
    rates=[
        Rate("+7495", 0.01, 0.05),
        Rate("+7812", 0.012, 0.08),
        Rate("+79", 0.02, 0.12),
        Rate("+7", 0.03, 0.15),
        Rate("+1", 0.005, 0.1),
        Rate("+44", 0.01, 0.2),
        Rate("+49", 0.01, 0.2),
        Rate("+86", 0.02, 0.3),
    ]
)


def fill(store: Store, n: int) -> None:
    agents = store.sync_agents([Agent(None, f"agent{i}", str(100 + i)) for i in range(20)])
    ids = [a.id for a in agents]
    contact = store.create_contact("Bench customer")
    rng = random.Random(7)
    batch = 20_000
    for first in range(0, n, batch):
        interactions, calls = [], []
        for i in range(first, min(first + batch, n)):
            ringing = START + timedelta(seconds=rng.uniform(0, 90 * 86400))
            inbound = rng.random() < 0.7
            fate = rng.random()
            answered = fate < 0.75
            abandoned = inbound and 0.75 <= fate < 0.85
            wait = rng.uniform(2, 40)
            talk = rng.uniform(20, 600)
            number = f"phone:{rng.choice(NUMBER_PREFIXES)}{rng.randrange(10**6, 10**7)}"
            path = []
            if inbound:
                path = [
                    {"node": "greeting", "digits": rng.choice("120"), "at": ringing.isoformat()}
                ]
                if abandoned:
                    path = [{"node": "greeting", "digits": "", "at": ringing.isoformat()}]
            interactions.append(
                {
                    "contact_id": contact.id,
                    "channel": "sip",
                    "direction": "inbound" if inbound else "outbound",
                    "kind": "call",
                    "status": "ended",
                    "external_id": f"bench-{i}",
                    "created_at": ringing,
                    "updated_at": ringing,
                }
            )
            calls.append(
                {
                    "call_id": f"bench-{i}",
                    "channel": "sip",
                    "direction": "inbound" if inbound else "outbound",
                    "from_address": number if inbound else "101",
                    "to_address": "100" if inbound else number,
                    "agent_id": rng.choice(ids) if answered else None,
                    "ringing_at": ringing,
                    "answered_at": ringing + timedelta(seconds=wait) if answered else None,
                    "ended_at": ringing + timedelta(seconds=wait + (talk if answered else 0)),
                    "disposition": "answered"
                    if answered
                    else ("abandoned" if abandoned else "missed"),
                    "ivr_path": path,
                    "agents_notified": [],
                    "wait_s": wait if answered else None,
                    "talk_s": talk if answered else None,
                    "ivr_last_node": path[-1]["node"] if path else None,
                }
            )
        with store.write() as conn:
            new_ids = insert_many(conn, interaction_t, interactions)
            for c, iid in zip(calls, new_ids, strict=True):
                c["interaction_id"] = iid
            call_ids = insert_many(conn, call_t, calls)
            steps = [
                {
                    "call_record_id": cid,
                    "ringing_at": c["ringing_at"],
                    "node": step["node"],
                    "digits": step["digits"],
                }
                for c, cid in zip(calls, call_ids, strict=True)
                for step in c["ivr_path"]
            ]
            insert_many(conn, ivr_step_t, steps)


def costs_of(store: Any, since: datetime, until: datetime) -> dict[str, Any]:
    """The console's call-cost query, as its page runs it (one read)."""
    with store.read() as conn:
        return costs_in(conn, since, until, TARIFF)


def timed(fn: Any, runs: int = 3) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"Call analytics on {machine()}, {datetime.now():%Y-%m-%d}; {args.calls:,} calls")
    end = START + timedelta(days=90)
    for backend in args.backends.split(","):
        with database(backend) as url:
            store = Store(url)
            store.upgrade(plugins=[CONSOLE_SCHEMA])  # the console's billing index
            started = time.perf_counter()
            fill(store, args.calls)
            if backend == "postgresql":  # what autovacuum would have done by then
                with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
            print(f"  {backend}: filled in {time.perf_counter() - started:.0f} s", flush=True)
            for days in (30, 90):
                since = end - timedelta(days=days)
                for group in ("agent", "day", "ivr_node"):
                    took, rows = timed(lambda st=store, g=group, s=since: call_stats(st, s, end, g))
                    print(
                        f"    last {days} days by {group}: {took * 1000:.0f} ms (median of 3), "
                        f"{len(rows)} rows",
                        flush=True,
                    )
                took, costs = timed(lambda st=store, s=since: costs_of(st, s, end))
                print(
                    f"    last {days} days call costs: {took * 1000:.0f} ms (median of 3), "
                    f"{costs['total']['calls']:,} calls billed",
                    flush=True,
                )
            store.close()


if __name__ == "__main__":
    main()
