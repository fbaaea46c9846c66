"""Contact lookup by address with 1,000,000 contacts (each with a phone and an email).

Measures ``Store.find_contact_id`` (one probe of the unique (kind, value) index) and
``Store.find_contact`` (the whole card: contact row and its addresses), one call at a time,
for random known addresses and some unknown ones. Usage:
python bench/lookup.py [--backend sqlite|postgresql|both] [--contacts N] [--lookups N]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine, percentile

from switchboard import Address
from switchboard.models import utcnow
from switchboard.store import Store, address_t, contact_t


def phone(i: int) -> str:
    return f"+1202{i:07d}"


def email(i: int) -> str:
    return f"contact{i}@example.com"


def populate(store: Store, n: int) -> None:
    now = utcnow()
    if store.dialect == "postgresql":  # COPY: the way to load a million rows
        raw = store.engine.raw_connection()
        try:
            cur = raw.cursor()
            buf = io.StringIO(
                "".join(f"{i}\tContact {i}\t{now.isoformat()}\n" for i in range(1, n + 1))
            )
            with cur.copy("COPY contact (id, name, created_at) FROM STDIN") as cp:
                cp.write(buf.getvalue())
            rows = "".join(
                f"{i}\tphone\t{phone(i)}\n{i}\temail\t{email(i)}\n" for i in range(1, n + 1)
            )
            with cur.copy("COPY address (contact_id, kind, value) FROM STDIN") as cp:
                cp.write(rows)
            cur.execute("SELECT setval('contact_id_seq', %s)", (n,))
            cur.execute("ANALYZE")
            raw.commit()
        finally:
            raw.close()
        return
    step = 50_000
    with store.write() as conn:
        for start in range(1, n + 1, step):
            ids = range(start, min(n, start + step - 1) + 1)
            conn.execute(
                contact_t.insert(),
                [{"id": i, "name": f"Contact {i}", "created_at": now} for i in ids],
            )
            conn.execute(
                address_t.insert(),
                [
                    r
                    for i in ids
                    for r in (
                        {"contact_id": i, "kind": "phone", "value": phone(i)},
                        {"contact_id": i, "kind": "email", "value": email(i)},
                    )
                ],
            )
        conn.exec_driver_sql("ANALYZE")


def measure(fn, addresses: list[Address]) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for a in addresses:
        t0 = time.perf_counter()
        fn(a)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgresql", "both"])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    args = parser.parse_args()
    print(machine())
    rng = random.Random(7)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with database(backend) as url:
            store = Store(url)
            store.upgrade()
            t0 = time.perf_counter()
            populate(store, args.contacts)
            load = time.perf_counter() - t0
            assert store.count(contact_t) == args.contacts
            targets = []
            for _ in range(args.lookups):
                i = rng.randint(1, args.contacts)
                if rng.random() < 0.1:  # unknown callers
                    targets.append(Address("phone", phone(args.contacts + i)))
                else:
                    targets.append(
                        Address("phone", phone(i))
                        if rng.random() < 0.5
                        else Address("email", email(i))
                    )
            assert store.find_contact_id(Address("phone", phone(42))) == 42
            measure(store.find_contact_id, targets[:1000])  # warm the cache and the pool
            for name, fn in (
                ("find_contact_id", store.find_contact_id),
                ("find_contact (card)", store.find_contact),
            ):
                times = measure(fn, targets)
                print(
                    f"{backend:10s} {name:20s} {args.contacts} contacts: "
                    f"p50 {percentile(times, 50):.3f} ms  p99 {percentile(times, 99):.3f} ms  "
                    f"max {max(times):.3f} ms  ({args.lookups} lookups; load {load:.0f} s)"
                )
            store.close()


if __name__ == "__main__":
    main()
