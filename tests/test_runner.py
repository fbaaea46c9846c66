"""Channel supervision in the running service: failing channels restart with backoff and
show their state in /api/health."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
from sbservice import service_config

from switchboard import ChannelContext
from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import LoopbackChannel, LoopbackPlugin, make_config, serve_in_thread


class DownAtFirst(LoopbackChannel):
    """A channel whose server refuses the first two connection attempts."""

    attempts = 0

    async def start(self, ctx: ChannelContext) -> None:
        self.attempts += 1
        if self.attempts <= 2:
            raise ConnectionRefusedError(f"registrar down (attempt {self.attempts})")
        await super().start(ctx)


class CrashesOnce(LoopbackChannel):
    """A channel whose reader task dies once after starting."""

    async def start(self, ctx: ChannelContext) -> None:
        await super().start(ctx)
        if self.started == 1:
            ctx.spawn(self._reader(), name="reader")

    async def _reader(self) -> None:
        await asyncio.sleep(0.05)
        raise ConnectionResetError("server closed the connection")


def channels_of(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/api/health", timeout=5).json()["channels"])


def wait_until(check, timeout: float = 10.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def test_failing_channels_are_restarted_with_backoff(tmp_path: Path) -> None:
    down, crashes, fine = DownAtFirst("down"), CrashesOnce("crashes"), LoopbackChannel("fine")
    plugins = Plugins()
    plugins.register(LoopbackPlugin(down, crashes, fine), "loopback")
    app = create_app(
        make_config(tmp_path, service_config(tmp_path)),
        plugins=plugins,
        supervise_backoff=(0.5, 1.0),
    )
    with serve_in_thread(app) as running:
        first = channels_of(running.url)
        assert first["fine"]["state"] == "running"
        assert first["down"]["state"] == "failing"
        # attempt 1, or 2 on a slow machine where the first backoff ended before this check
        assert re.fullmatch(
            r"ConnectionRefusedError: registrar down \(attempt [12]\)", first["down"]["last_error"]
        )
        health = httpx.get(f"{running.url}/api/health").json()
        assert health["status"] == "degraded"

        recovered = wait_until(
            lambda: (c := channels_of(running.url))["down"]["state"] == "running" and c
        )
        assert recovered["down"]["restarts"] == 2
        assert (down.attempts, down.started) == (3, 1)
        assert down.stopped == 2  # each failed start was cleaned up

        assert wait_until(lambda: crashes.stopped >= 1)  # the crash stopped it...
        again = wait_until(
            lambda: (
                (c := channels_of(running.url))["crashes"]["state"] == "running"
                and crashes.started == 2
                and c
            )
        )
        assert again["crashes"]["restarts"] == 1  # ...and it was started again
        assert httpx.get(f"{running.url}/api/health").json()["status"] == "ok"
    assert (fine.stopped, down.stopped, crashes.stopped) == (1, 3, 2)
