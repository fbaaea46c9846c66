"""``switchboard serve`` as an operator runs it: a real uvicorn process on a loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from switchboard.store import Store

SWITCHBOARD = shutil.which("switchboard")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_example_config_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    assert SWITCHBOARD
    config = tmp_path / "switchboard.toml"
    shutil.copy(ROOT / "switchboard.example.toml", config)
    port = free_port()
    # every installed plugin: the console is configured in the example, the channels are
    # not (they stay off, and start-up says where their docs are)
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_PLUGINS"}
    proc = subprocess.Popen(
        [SWITCHBOARD, "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/health",
                    headers={"Authorization": "Bearer dev-admin-token-change-me"},
                    timeout=1,
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "service did not come up"
                time.sleep(0.1)
        health = response.json()
        assert response.status_code == 200
        assert health["status"] == "ok"
        assert health["store"] == {
            "ok": True,
            "backend": "sqlite",
            "revision": Store.head_revision(),
            # the plugins' own tables
            "plugin_revisions": {
                "amocrm": "amocrm_0001",
                "bitrix24": "bitrix24_0001",
                "console": "console_0001",
                "mailings": "mailings_0001",
                "max": "max_0001",
                "meta": "meta_0001",
                "odoo": "odoo_0001",
                "speech": "speech_0001",
                "vk": "vk_0001",
                "whatsapp": "whatsapp_0001",
            },
        }
        assert health["outbox_depth"] == 0
        assert (tmp_path / "switchboard.db").exists()  # relative to the config file
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()["info"]["title"] == (
            "Switchboard"
        )
        assert {p["name"] for p in health["plugins"]} == {
            "amocrm",
            "bitrix24",
            "console",
            "email",
            "ivr",
            "mailings",
            "max",
            "meta",
            "odoo",
            "sip",
            "speech",
            "telegram",
            "vk",
            "whatsapp",
        }
        assert {"speech:jobs", "speech:prune"} <= set(health["loops"])
        assert {n: c["state"] for n, c in health["channels"].items()} == {
            "email": "not configured",
            "instagram": "not configured",
            "max": "not configured",
            "messenger": "not configured",
            "sip": "not configured",
            "telegram": "not configured",
            "vk": "not configured",
            "whatsapp": "not configured",
        }
        console = httpx.get(f"http://127.0.0.1:{port}/console/login", timeout=5)
        assert console.status_code == 200 and "Your agent token" in console.text
        # An open event stream must not hold the shutdown up.
        with (
            httpx.Client(timeout=httpx.Timeout(5, read=None)) as client,
            client.stream(
                "GET",
                f"http://127.0.0.1:{port}/api/events",
                headers={"Authorization": "Bearer dev-admin-token-change-me"},
            ) as opened,
        ):
            assert opened.status_code == 200
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=10)
            assert time.monotonic() - started < 10
            assert "event: shutdown" in opened.read().decode()  # a complete response
        # a clean stop on SIGTERM is exit status 0, after the lifespan shutdown ran to the
        # end, with the open stream closed as a complete response
        assert proc.returncode == 0, output
        assert "Application shutdown complete." in output
        assert "ASGI callable returned without completing response" not in output
        for plugin in ("email", "sip", "telegram"):
            assert (
                f"plugin {plugin} is installed but not configured (channel {plugin} stays off):"
                f" add a [plugins.{plugin}] table to {config}; docs: docs/{plugin}.md"
            ) in output
        assert "plugin console is installed but not configured" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_bad_config_stops_start_up_with_one_message(tmp_path: Path) -> None:
    assert SWITCHBOARD
    config = tmp_path / "bad.toml"
    config.write_text("[switchboard]\ndatabase = 'x'\n")
    result = subprocess.run(
        [SWITCHBOARD, "serve", "--config", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SWITCHBOARD_PLUGINS": ""},
    )
    assert result.returncode == 2
    assert f"{config}: 1 problem(s)" in result.stderr
    assert "unknown key(s) database; expected one of: database_url" in result.stderr


@contextlib.contextmanager
def serving(config: Path, port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``switchboard serve`` on ``port``, once it answers /api/health; SIGTERM after."""
    assert SWITCHBOARD
    proc = subprocess.Popen(
        [SWITCHBOARD, "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).is_success
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_a_second_runner_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    """SQLite is for one runner: a second ``switchboard serve`` on the same database file
    stops before binding its port, naming the first one's pid and PostgreSQL."""
    assert SWITCHBOARD
    config = tmp_path / "switchboard.toml"
    shutil.copy(ROOT / "switchboard.example.toml", config)
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_PLUGINS"}
    port = free_port()
    with serving(config, port, env) as first:
        second = subprocess.run(
            [SWITCHBOARD, "serve", "--config", str(config), "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert f"another runner (pid {first.pid}) serves the SQLite database" in second.stderr
        assert "PostgreSQL" in second.stderr
    # the lock goes with the runner: the next one starts
    with serving(config, port, env):
        pass
