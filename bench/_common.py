"""Shared set-up for the benchmarks: throwaway stores on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN_DSN = os.environ.get(
    "SWITCHBOARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@contextlib.contextmanager
def database(backend: str) -> Iterator[str]:
    """A URL of an empty database of ``backend`` (``sqlite`` or ``postgresql``)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    import psycopg

    name = f"switchboard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = ""
    with contextlib.suppress(Exception):
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return (
        f"{platform.node()}: {os.cpu_count()} cores, {cpu}; Python "
        f"{platform.python_version()}; {pg}"
    )


def percentile(values: list[float], p: float) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(p * 10) - 1]


def raw_post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """One keep-alive HTTP/1.1 POST as bytes (for :func:`post_all`)."""
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def post_all(base: str, requests: list[bytes], concurrency: int) -> None:
    """Send ``requests`` (from :func:`raw_post`) over ``concurrency`` keep-alive
    connections, each answered 200. A small client writing the requests itself: httpx's
    async client tops out near 160 requests/s here, below the runner."""
    host, port = base.removeprefix("http://").split(":")

    async def connection(mine: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for req in mine:
                writer.write(req)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head[:60]
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
        finally:
            writer.close()

    await asyncio.gather(*(connection(requests[k::concurrency]) for k in range(concurrency)))


def stored(url: str) -> int:
    """How many interactions the database at ``url`` holds."""
    from switchboard.store import Store, interaction_t

    store = Store(url)
    try:
        return store.count(interaction_t)
    finally:
        store.close()


async def post_until_stored(
    base: str, url: str, requests: list[bytes], concurrency: int
) -> tuple[float, float]:
    """:func:`post_all`, then wait until the database at ``url`` holds one interaction per
    request: seconds until the last 200, and until the last one was stored."""
    started = time.perf_counter()
    await post_all(base, requests, concurrency)
    accepted = time.perf_counter() - started
    while await asyncio.to_thread(stored, url) < len(requests):
        await asyncio.sleep(0.01)
    return accepted, time.perf_counter() - started
