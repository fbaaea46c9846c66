"""WhatsApp channel, inbound: signed webhook messages stored per second.

``switchboard serve`` runs as its own process with the WhatsApp plugin installed as
users install it (its entry point) and ``graph_url`` pointed at the loopback Graph API
stand-in in this process. This process posts N webhooks, each one text message from one of
500 senders with its ``X-Hub-Signature-256``, at most C at a time; the runner checks each
signature on the raw bytes, stores the message (contact resolved, interaction saved,
hooks run) and only then answers 200. Rate: N / the time from the first post to the last
200. Then the same N rows go through a bare SQLAlchemy insert loop (one transaction per
row, no HTTP, no checks) on an empty database of the same kind: the ratio says what the
whole path costs. Target (issue #17): 1,000 messages/s.
Usage: python bench/whatsapp_bench.py [--messages 5000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine
from ingest import bare_loop

from switchboard.testing import free_port
from switchboard_whatsapp.testing import (
    APP_SECRET,
    PHONE_ID,
    TOKEN,
    VERIFY_TOKEN,
    graph_api,
    signature,
    text_message,
    webhook_body,
)


def start(url: str, graph: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = folder / "bench.toml"
    config.write_text(f"""
[switchboard]
database_url = "{url}"
default_region = "US"
[plugins.whatsapp]
phone_number_id = "{PHONE_ID}"
access_token = "{TOKEN}"
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
graph_url = "{graph}"
""")
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("switchboard") or "switchboard",
            "--log-level",
            "WARNING",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--channels",
            "whatsapp",
        ],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            health = httpx.get(f"{base}/api/health", timeout=1).json()
            if health.get("channels", {}).get("whatsapp", {}).get("state") == "running":
                return proc, base
        except (httpx.TransportError, ValueError):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the runner did not start the WhatsApp channel")
        time.sleep(0.2)


async def post_all(base: str, n: int, concurrency: int) -> float:
    bodies = [
        webhook_body(messages=[text_message(f"1202555{i % 500:04d}", f"m{i}", ident=f"wamid.B{i}")])
        for i in range(n)
    ]
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def one(body: bytes) -> None:
            async with slots:
                r = await client.post(
                    "/whatsapp/webhook",
                    content=body,
                    headers={"X-Hub-Signature-256": signature(body)},
                )
                assert r.status_code == 200, r.text

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print(
        f"WhatsApp inbound benchmark on {machine()}; {args.messages} webhooks, C={args.concurrency}"
    )
    with graph_api() as graph:
        for backend in args.backends.split(","):
            with database(backend) as url, tempfile.TemporaryDirectory() as folder:
                proc, base = start(url, graph.url, Path(folder))
                try:
                    elapsed = asyncio.run(post_all(base, args.messages, args.concurrency))
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
            with database(backend) as url:
                bare = bare_loop(url, args.messages)
            rate, bare_rate = args.messages / elapsed, args.messages / bare
            print(
                f"  {backend:10s} signed webhooks stored: {rate:7.0f} msg/s; bare insert loop "
                f"{bare_rate:7.0f} rows/s; ratio {rate / bare_rate:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
