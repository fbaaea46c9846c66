"""Several ``switchboard serve`` processes on one PostgreSQL database, as an operator runs
them on several machines (here: one machine, a port each): what the fault tests of
tests/test_nodes_faults.py stand on."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import attrs
import httpx

from switchboard.testing import serve_process

ADMIN = "admin-token-0123456789"
TAKEOVER_SECONDS = 2.0


def node_config(
    folder: Path, database_url: str, body: str = "", outbox: str = "", core: str = ""
) -> Path:
    """A runner's configuration: the shared database, an admin token, a short takeover
    bound; ``body``: more TOML (a channel's table); ``outbox``: more outbox settings;
    ``core``: more ``[switchboard]`` keys."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "switchboard.toml"
    config.write_text(f"""
[switchboard]
database_url = "{database_url}"
default_region = "RU"
{core}

[[switchboard.tokens]]
token = "{ADMIN}"
role = "admin"
name = "ops"

[switchboard.nodes]
takeover_seconds = {TAKEOVER_SECONDS}

[switchboard.outbox]
poll_interval = 0.05
{outbox}
{body}
""")
    return config


@attrs.define
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    def health(self) -> dict[str, Any]:
        answer = httpx.get(
            f"{self.url}/api/health", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5
        )
        return dict(answer.json())

    def holds(self, singleton: str) -> bool:
        try:
            return singleton in self.health()["singletons"]["held"]
        except (httpx.TransportError, ValueError, KeyError):
            return False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as when a machine dies."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_nodes(
    tmp_path: Path,
    database_url: str,
    body: str | list[str],
    channel: str,
    count: int = 3,
    outbox: str = "",
    core: str = "",
) -> list[Node]:
    """``count`` runners with ``channel`` running, each with a folder of its own;
    ``body``: the same TOML for all, or each one's."""
    nodes: list[Node] = []
    try:
        for n in range(count):
            name = "abc"[n] if n < 3 else f"n{n}"
            own = body[n] if isinstance(body, list) else body
            config = node_config(tmp_path / f"node-{name}", database_url, own, outbox, core)
            proc, url = serve_process(config, channel)
            nodes.append(Node(name, proc, url))
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def holder(nodes: list[Node], singleton: str, within: float = 20.0) -> tuple[Node, float]:
    """The live node holding ``singleton``, and when it was seen holding it (monotonic)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        held = [node for node in nodes if node.alive and node.holds(singleton)]
        assert len(held) <= 1, f"{singleton} held by {[n.name for n in held]}"
        if held:
            return held[0], time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"no node holds {singleton} after {within:.0f} s")
