"""WhatsApp channel, inbound: signed webhook messages stored per second.

``switchboard serve`` runs as its own process with the WhatsApp plugin installed as
users install it (its entry point) and ``graph_url`` pointed at the loopback Graph API
stand-in in this process. This process posts N webhooks over C keep-alive connections (a
small asyncio client writing the requests itself: httpx's client tops out near 160
requests/s here, below the runner), each one text message from one of 500 senders with its
``X-Hub-Signature-256``; the runner checks each signature on the raw bytes, keeps the body
(one row of the plugin's table, concurrent bodies in one transaction), answers 200, and
its reader stores the messages (contact resolved, interaction saved, hooks run). Rates:
N / the time from the first post to the last 200, and to the last message stored. Then the same N rows go through a bare SQLAlchemy insert loop (one transaction per
row, no HTTP, no checks) on an empty database of the same kind: the ratio says what the
whole path costs. Target (issue #17): 1,000 messages/s.
Usage: python bench/whatsapp_bench.py [--messages 5000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine, post_until_stored, raw_post
from ingest import bare_loop

from switchboard_whatsapp import WEBHOOK_PATH
from switchboard_whatsapp.testing import (
    graph_api,
    signature,
    start_runner,
    text_message,
    webhook_body,
)


async def post_webhooks(base: str, url: str, n: int, concurrency: int) -> tuple[float, float]:
    """Seconds until the last 200, and until the last message was stored."""
    requests = [
        raw_post(WEBHOOK_PATH, body, {"X-Hub-Signature-256": signature(body)})
        for body in (
            webhook_body(
                messages=[text_message(f"1202555{i % 500:04d}", f"m{i}", ident=f"wamid.B{i}")]
            )
            for i in range(n)
        )
    ]
    return await post_until_stored(base, url, requests, concurrency)


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
                proc, base = start_runner(Path(folder), graph.url, url)
                try:
                    accepted, elapsed = asyncio.run(
                        post_webhooks(base, url, args.messages, args.concurrency)
                    )
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
            with database(backend) as url:
                bare = bare_loop(url, args.messages)
            rate, bare_rate = args.messages / elapsed, args.messages / bare
            print(
                f"  {backend:10s} answered 200: {args.messages / accepted:6.0f} msg/s; "
                f"stored: {rate:6.0f} msg/s; bare insert loop {bare_rate:6.0f} rows/s; "
                f"ratio {rate / bare_rate:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
