"""Mailing benchmark: N recipients into a local aiosmtpd sink (target: 10,000 at 300 msg/s
or more, with peak memory flat in the number of recipients).

The Switchboard (SQLite store, email channel with a pool of ``--pool`` SMTP connections)
creates the mailing (renders the template for everyone, stores one message and outbox row
each), then its outbox sends them. The sink is aiosmtpd in its own process, so that it
does not share the interpreter with what is measured. The same number of messages then
goes through a bare aiosmtplib loop over the same number of connections (no store, no
template), and the ratio is printed. Memory: the process's resident set is sampled while
sending; the mailing is run at two sizes to show whether it grows with the recipients.

    uv run python bench/mailing_bench.py [--sizes 2000,10000] [--pool 4]

For the memory figure, run one size per process (``--sizes 2000``, then ``--sizes
10000``) and compare the peak RSS lines.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import tempfile
import time
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from _common import machine

from switchboard import Address
from switchboard.testing import LoopbackPlugin, free_port, open_switchboard
from switchboard_email import EmailChannel, EmailSettings
from switchboard_mailings import MailingsPlugin

HTML = (
    "<html><body><p>Hello {{ contact.name }},</p><p>our {{ season }} offer:</p>"
    '<a href="https://shop.example.com/sale">see it</a></body></html>'
)


def sink(port: int, ready: Any, counter: Any) -> None:
    """aiosmtpd accepting everything (a separate process)."""
    from aiosmtpd.controller import Controller

    class Count:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with counter.get_lock():
                counter.value += 1
            return "250 OK"

    controller = Controller(Count(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run_mailing(n: int, port: int, pool: int, counter: Any) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        settings = {
            "from_address": "news@example.com",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_pool_size": pool,
        }
        plugin = MailingsPlugin()
        sb = await open_switchboard(
            folder,
            LoopbackPlugin(EmailChannel(), plugin_name="email", settings=EmailSettings),
            plugin,
            config={
                "switchboard": {
                    "templates": {
                        "offer": {
                            "subject": "{{ season }} offer for {{ contact.name }}",
                            "text": "Hello {{ contact.name }}, see https://shop.example.com/sale",
                            "html": HTML,
                        }
                    },
                    "outbox": {"batch_size": 200, "poll_interval": 0.05},
                },
                "plugins": {
                    "email": settings,
                    "mailings": {
                        "public_url": "https://crm.example.com",
                        "link_secret": "bench-secret-0123456789",
                    },
                },
            },
        )
        mailings = plugin.mailings
        assert mailings is not None
        try:

            def contacts() -> list[int]:
                with sb.store.write() as conn:
                    return [
                        sb.store.create_contact(
                            f"Customer {i}", [Address("email", f"c{i}@example.org")], conn=conn
                        ).id
                        or 0
                        for i in range(n)
                    ]

            ids = await asyncio.to_thread(contacts)
            await mailings.change_list("all", ids, [])
            before = counter.value
            started = time.perf_counter()
            mailing = await mailings.create(
                name="bench",
                channel="email",
                template="offer",
                audience="all",
                variables={"season": "Winter"},
            )
            created = time.perf_counter() - started
            base = rss_mb()
            peak = base
            worker = asyncio.ensure_future(sb.outbox.run())
            sending = time.perf_counter()
            while counter.value - before < n:
                peak = max(peak, rss_mb())
                await asyncio.sleep(0.1)
            sent_in = time.perf_counter() - sending
            sb.outbox.stop()
            await worker
            stats = await mailings.stats(mailing["id"])
            while not stats["finished"]:  # the last group's outcomes being recorded
                await asyncio.sleep(0.05)
                stats = await mailings.stats(mailing["id"])
            assert stats["sent"] == n and stats["failed"] == 0, stats
            return {
                "create_s": created,
                "send_s": sent_in,
                "rate": n / sent_in,
                "rss_base": base,
                "rss_growth": peak - base,
            }
        finally:
            await sb.close()


async def bare(n: int, port: int, pool: int, counter: Any) -> float:
    """The same number of messages over ``pool`` connections with aiosmtplib alone."""
    before = counter.value

    async def connection(share: range) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        try:
            for i in share:
                msg = EmailMessage()
                msg["From"] = "news@example.com"
                msg["To"] = f"c{i}@example.org"
                msg["Subject"] = f"Winter offer for Customer {i}"
                msg.set_content(f"Hello Customer {i}, see https://shop.example.com/sale")
                msg.add_alternative(
                    HTML.replace("{{ contact.name }}", f"Customer {i}"), subtype="html"
                )
                await smtp.send_message(msg)
        finally:
            await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection(range(k, n, pool)) for k in range(pool)))
    elapsed = time.perf_counter() - started
    assert counter.value - before == n
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--pool", type=int, default=4)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"Mailing benchmark on {machine()}, {datetime.now():%Y-%m-%d}; pool {args.pool}")
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    counter = ctx.Value("l", 0)
    server = ctx.Process(target=sink, args=(port, ready, counter), daemon=True)
    server.start()
    try:
        assert ready.wait(15), "aiosmtpd did not start"
        for n in sizes:
            r = await run_mailing(n, port, args.pool, counter)
            print(
                f"  {n} recipients: mailing created in {r['create_s']:.2f} s; sent in "
                f"{r['send_s']:.2f} s = {r['rate']:.0f} msg/s; RSS {r['rss_base']:.0f} MB at the "
                f"start of sending, grew {r['rss_growth']:.1f} MB while sending",
                flush=True,
            )
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  peak RSS of this process so far: {peak_mb:.0f} MB", flush=True)
            rate = await bare(n, port, args.pool, counter)
            print(
                f"  bare aiosmtplib, same {n} messages, {args.pool} connections: {rate:.0f} msg/s "
                f"(switchboard / bare = {r['rate'] / rate:.2f})",
                flush=True,
            )
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    asyncio.run(main())
