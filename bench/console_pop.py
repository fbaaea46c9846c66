"""The console's screen pop in a real browser: from a call ringing to its card on screen.

A runner with the console on SQLite; Debian's Chromium (Playwright) signed in as an agent
with the contacts page open; N calls ring for that agent one after another (the voice
channel's ``calls.ringing``: contact resolved, call record and event written in one
transaction). For each, the time from the ``ringing`` call to the card in the page's DOM
(Python's and the page's clocks are the same machine's), and from the event's own time
stamp to the card.

    uv run python bench/console_pop.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import machine
from playwright.async_api import async_playwright

from switchboard import Direction
from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import make_config, serve_in_thread
from switchboard_console import ConsolePlugin, ConsoleSettings

TOKEN = "alice-bench-token-0123456789"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(calls: int, folder: Path) -> None:
    plugins = Plugins()
    plugins.register(ConsolePlugin(), "console")
    config = make_config(
        folder,
        {
            "switchboard": {
                "agents": [{"name": "alice", "extension": "101"}],
                "tokens": [{"token": TOKEN, "agent": "alice"}],
            }
        },
        {"console": ConsoleSettings},
    )
    with serve_in_thread(create_app(config, plugins=plugins)) as service:
        sb = service.switchboard
        alice = sb.store.get_agent("alice").id
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = await browser.new_page()
            await page.goto(service.url + "/console/login")
            await page.fill("input[name=token]", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/console/contacts")
            await page.wait_for_timeout(500)  # the event stream connects
            total: list[float] = []
            from_event: list[float] = []
            for i in range(calls):
                started = time.time() * 1000
                service.call(
                    sb.calls.ringing(
                        "bench",
                        f"pop-{i}",
                        direction=Direction.INBOUND,
                        from_address=f"+7495{1000000 + i}",
                        to_address="100",
                        agents=[alice],
                    )
                )
                card = page.locator(f'[data-call="pop-{i}"]')
                await card.wait_for(timeout=10_000)
                shown, event_at = await card.evaluate(
                    "c => { const v = [Number(c.dataset.shownAt), Number(c.dataset.eventAt)];"
                    " c.remove(); return v; }"
                )
                total.append(shown - started)
                from_event.append(shown - event_at)
            await browser.close()
    for name, values in (("ringing() to card on screen", total), ("event to card", from_event)):
        print(
            f"  {name}: p50 {statistics.median(values):.1f} ms, p95 {pct(values, 0.95):.1f} ms,"
            f" p99 {pct(values, 0.99):.1f} ms, max {max(values):.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    print(f"Console screen pop on {machine()}, {datetime.now():%Y-%m-%d}; {args.calls} calls")
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(args.calls, Path(folder)))


if __name__ == "__main__":
    main()
