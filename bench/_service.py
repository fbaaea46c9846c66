"""Start ``switchboard serve`` as a subprocess for a benchmark, with a loopback channel
plugin installed through a real entry point."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from switchboard.testing import free_port, write_distribution

TOKEN = "bench-admin-token-0123456789"

PLUGIN = """
from switchboard import hookimpl
from switchboard.testing import LoopbackChannel

CHANNEL = LoopbackChannel("bench")


@hookimpl
def register_channels(register):
    register(CHANNEL)
"""


@contextlib.contextmanager
def service(database_url: str | None = None, extra: str = "") -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        site = write_distribution(
            root / "site",
            "switchboard-bench",
            {"sb_bench": PLUGIN},
            entry_points={"bench": "sb_bench"},
        )
        db = database_url or f"sqlite:///{root / 'bench.db'}"
        config = root / "bench.toml"
        config.write_text(f"""
[switchboard]
database_url = "{db}"
default_region = "RU"
[[switchboard.agents]]
name = "anna"
[[switchboard.tokens]]
token = "{TOKEN}"
role = "admin"
[switchboard.http]
sse_queue_size = 10000
{extra}
""")
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(site), "SWITCHBOARD_PLUGINS": "bench"}
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
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the service did not start")
                time.sleep(0.1)
            yield url, root
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
