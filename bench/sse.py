"""One event to 200 connected SSE clients: delay from the event's commit to its arrival.

Runs ``switchboard serve`` (SQLite), connects N clients to ``/api/events`` from another
process (asyncio, raw sockets), then creates contacts over the API at a steady rate; each
``contact.created`` event carries its ``created_at`` (set in the transaction that stores
it), and each client notes when it arrived. Usage: python bench/sse.py [--clients 200]

With ``--nodes 2``: two runners on one PostgreSQL database; the contacts are created on
the first, the clients listen on the second (the fan-out across nodes: LISTEN/NOTIFY).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine, percentile
from _service import TOKEN, service


async def client(
    port: int, delays: list[float], ready: asyncio.Event, count: list[int], expected: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}"
        f"\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    got = 0
    while got < expected:
        line = await reader.readline()
        if not line:
            break
        if b"data: " in line and b"contact.created" in line:  # chunked: size lines between
            now = time.time()
            payload = json.loads(line.split(b"data: ", 1)[1])
            created = datetime.fromisoformat(payload["created_at"]).timestamp()
            delays.append((now - created) * 1000)
            got += 1
        elif line.startswith(b"HTTP/1.1 200"):
            count[0] += 1
            if count[0] == count[1]:
                ready.set()
    writer.close()


def listen(port: int, clients: int, events: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> list[float]:
        delays: list[float] = []
        ready = asyncio.Event()
        count = [0, clients]
        tasks = [
            asyncio.create_task(client(port, delays, ready, count, events)) for _ in range(clients)
        ]
        await asyncio.wait_for(ready.wait(), 60)
        out.put("ready")
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        return delays

    out.put(asyncio.run(main()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--nodes", type=int, default=1, help="2: runners on one PostgreSQL")
    args = parser.parse_args()
    print(machine())
    with contextlib.ExitStack() as stack:
        if args.nodes == 1:
            url, _root = stack.enter_context(service())
            listen_url = url
        else:
            db = stack.enter_context(database("postgresql"))
            url, _root = stack.enter_context(service(db))
            listen_url, _root = stack.enter_context(service(db))
        port = int(listen_url.rsplit(":", 1)[1])
        out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        proc = multiprocessing.Process(target=listen, args=(port, args.clients, args.events, out))
        proc.start()
        assert out.get(timeout=60) == "ready"
        time.sleep(0.5)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers) as api:
            for i in range(args.events):
                r = api.post(
                    "/api/contacts", json={"name": f"Caller {i}", "addresses": [f"+7495{i:07d}"]}
                )
                assert r.status_code == 201, r.text
                time.sleep(1 / args.rate)
        delays = out.get(timeout=120)
        proc.join(10)
    expected = args.clients * args.events
    print(
        f"{args.nodes} node(s), {args.clients} SSE clients, {args.events} events at "
        f"{args.rate:g}/s: "
        f"{len(delays)} of {expected} deliveries; commit → client p50 "
        f"{percentile(delays, 50):.1f} ms, p99 {percentile(delays, 99):.1f} ms, "
        f"max {max(delays):.1f} ms"
    )


if __name__ == "__main__":
    main()
