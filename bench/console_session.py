"""What the console's shared sign-out costs a page: every console request now asks the
console's own table (``console_signout``) whether its session was signed out, so that a
sign-out holds on every runner. Times a signed-in page (``GET /console/tasks``) over HTTP
with that check, and with the check answered from memory (what one runner did before),
in one run, on SQLite and PostgreSQL.

    uv run python bench/console_session.py [--requests 1000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _common import database, machine

from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import make_config, serve_in_thread
from switchboard_console import ConsolePlugin, ConsoleSettings

TOKEN = "bench-agent-token-0123456789"
ROUNDS = 5


def page_times(url: str, requests: int) -> list[float]:
    with httpx.Client(base_url=url, timeout=10) as c:
        form = c.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed = c.post("/console/login", data={"token": TOKEN, "csrf": csrf.group(1)})
        assert signed.status_code == 303, signed.text
        for _ in range(20):  # warm up
            assert c.get("/console/tasks").status_code == 200
        took = []
        for _ in range(requests):
            started = time.perf_counter()
            assert c.get("/console/tasks").status_code == 200
            took.append(time.perf_counter() - started)
        return took


def summary(took: list[float]) -> str:
    ordered = sorted(took)
    p95 = ordered[int(len(ordered) * 0.95)]
    return f"p50 {statistics.median(took) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"Console page with the sign-out check on {machine()}, {datetime.now():%Y-%m-%d}")
    for backend in args.backends.split(","):
        with database(backend) as url, tempfile.TemporaryDirectory() as folder:
            plugin = ConsolePlugin()
            plugins = Plugins()
            assert plugins.register(plugin, "console")
            data: dict[str, Any] = {
                "switchboard": {
                    "database_url": url,
                    "agents": [{"name": "anna", "extension": "101"}],
                    "tokens": [{"token": TOKEN, "agent": "anna"}],
                },
                "plugins": {"console": {"secret": "bench-console-secret-0123"}},
            }
            config = make_config(Path(folder), data, {"console": ConsoleSettings})
            with serve_in_thread(create_app(config, plugins=plugins)) as service:
                console = plugin.console
                assert console is not None
                check = console.signed_out

                async def from_memory(session_id: str) -> bool:
                    return False  # one runner's in-memory set, empty: no sign-out yet

                shared: list[float] = []
                memory: list[float] = []
                for _ in range(ROUNDS):  # alternated, so that drift hits both alike
                    console.signed_out = check  # type: ignore[method-assign]
                    shared += page_times(service.url, args.requests // ROUNDS)
                    console.signed_out = from_memory  # type: ignore[method-assign]
                    memory += page_times(service.url, args.requests // ROUNDS)
                console.signed_out = check  # type: ignore[method-assign]
            print(f"  {backend}: shared sign-out check {summary(shared)}")
            print(f"  {backend}: check in memory      {summary(memory)}")


if __name__ == "__main__":
    main()
