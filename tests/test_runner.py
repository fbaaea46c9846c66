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

from switchboard import (
    ChannelContext,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SwitchboardError,
    hookimpl,
)
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


ADMIN = {"Authorization": "Bearer admin-token-0123456789"}


def channels_of(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/api/health", headers=ADMIN, timeout=5).json()["channels"])


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


def test_outbox_and_event_hub_failures_show_in_health_and_recover(tmp_path: Path) -> None:
    """Found by an outside review: a database error in the outbox's claim ended the
    worker for good, /api/health still said ok, and every later message stayed queued.
    Here the real SQLite file loses its outbox and event tables (renamed by another
    connection) while the service runs, then gets them back."""
    import sqlite3

    sms = LoopbackChannel("sms")
    plugins = Plugins()
    plugins.register(LoopbackPlugin(sms), "loopback")
    config = make_config(
        tmp_path, service_config(tmp_path, events={"retention_days": 1, "prune_interval": 0.1})
    )
    app = create_app(config, plugins=plugins, supervise_backoff=(0.2, 0.5))
    db = config.core.database_url.removeprefix("sqlite:///")

    def health() -> dict[str, Any]:
        return dict(httpx.get(f"{running.url}/api/health", headers=ADMIN, timeout=5).json())

    def rename(old: str, new: str) -> None:
        with sqlite3.connect(db, timeout=30) as conn:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")

    with serve_in_thread(app) as running:
        assert {n: v["state"] for n, v in health()["loops"].items()} == {
            "events": "running",
            "events:prune": "running",
            "outbox": "running",
        }
        rename("outbox", "outbox_away")
        rename("event", "event_away")
        failing = wait_until(
            lambda: (
                (h := health())["loops"]["outbox"]["state"] == "failing"
                and h["loops"]["events"]["state"] == "failing"
                and h["loops"]["events:prune"]["state"] == "failing"
                and h
            )
        )
        assert failing["status"] == "degraded"
        assert "no such table: outbox" in failing["loops"]["outbox"]["last_error"]
        assert "no such table: event" in failing["loops"]["events"]["last_error"]
        # the loop is retried every 0.2-0.5 s and shows `running` during each attempt: the
        # metrics are read again until they catch it between attempts, as health did
        wait_until(
            lambda: (
                'switchboard_loop_state{loop="outbox",state="failing"} 1.0'
                in httpx.get(f"{running.url}/metrics", timeout=5).text
            )
        )

        rename("outbox_away", "outbox")
        rename("event_away", "event")
        wait_until(lambda: health()["status"] == "ok", timeout=15)
        loops = health()["loops"]
        assert loops["outbox"]["restarts"] >= 1 and loops["events"]["restarts"] >= 1
        # the worker is back: a message accepted now is sent
        accepted = httpx.post(
            f"{running.url}/api/messages",
            json={"channel": "sms", "address": "+74951234567", "text": "after the outage"},
            headers=ADMIN,
            timeout=5,
        )
        assert accepted.status_code == 202, accepted.text
        wait_until(lambda: [m.text for m in sms.sent] == ["after the outage"])

        # the pruning loop is back too: events older than retention_days go
        with sqlite3.connect(db, timeout=30) as conn:
            assert conn.execute("SELECT count(*) FROM event").fetchone()[0] > 0
            conn.execute("UPDATE event SET created_at = '2000-01-01 00:00:00.000000'")

        def left() -> int:
            with sqlite3.connect(db, timeout=30) as conn:
                return int(conn.execute("SELECT count(*) FROM event").fetchone()[0])

        wait_until(lambda: left() == 0)


class ErrorsPlugin:
    """A plugin's own routes raise the core's domain errors, as the core's own do."""

    plugin_name = "errors"

    @hookimpl
    def register_routes(self, router: Any) -> None:
        @router.get("/errors/{kind}")
        async def fail(kind: str) -> dict[str, str]:
            errors = {"missing": NotFound, "clash": Conflict, "bad": Invalid, "no": Forbidden}
            raise errors.get(kind, SwitchboardError)(f"{kind}: told to fail")


def test_domain_errors_answer_with_their_status_in_plugin_routes_too(tmp_path: Path) -> None:
    plugins = Plugins()
    assert plugins.register(ErrorsPlugin(), "errors")
    config = make_config(tmp_path, service_config(tmp_path))
    with serve_in_thread(create_app(config, plugins=plugins)) as service:
        answers = {
            kind: httpx.get(f"{service.url}/errors/{kind}")
            for kind in ("missing", "clash", "bad", "no", "other")
        }
    assert {k: r.status_code for k, r in answers.items()} == {
        "missing": 404,
        "clash": 409,
        "bad": 422,
        "no": 403,
        "other": 400,
    }
    assert answers["clash"].json() == {"detail": "clash: told to fail"}
