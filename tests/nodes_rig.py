"""Several ``switchboard serve`` processes on one PostgreSQL database, each on a host of
its own as an operator runs them: here each runner is in a Linux network namespace with
its own address (``ip netns`` and a veth pair each, set up by the test and torn down
after; root only). What the fault tests of tests/test_nodes_faults.py and
tests/test_nodes_sip.py stand on.

    this namespace: the test, PostgreSQL (127.0.0.1:5432, reached from the nodes through
    socat at SERVICES:5432), the stand-ins, Kamailio, SIPp — all listening on SERVICES
        ├── veth ── node a: 10.78.1.2
        ├── veth ── node b: 10.78.2.2
        └── veth ── node c: 10.78.3.2
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import attrs
import httpx

from switchboard.testing import missing_tool, serve_process

ADMIN = "admin-token-0123456789"
TAKEOVER_SECONDS = 2.0
SERVICES = "10.78.0.1"  # this namespace's address for the nodes (on lo)
HTTP_PORT = 8080  # every node's API: the same port, on its own address


class NodeNetwork:
    """A network namespace per node, joined to this one by a veth pair (the node is
    10.78.N.2, this side 10.78.N.1); this namespace also answers at :data:`SERVICES`,
    where PostgreSQL is relayed by socat (PostgreSQL itself listens on loopback only)."""

    def __init__(self, count: int, tag: str = "sbn") -> None:
        if os.geteuid() != 0:
            missing_tool("needs root for network namespaces (ip netns)")
        for tool in ("ip", "socat"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                missing_tool(f"needs {tool}: scripts/system-deps (iproute2, socat)")
        self.count = count
        self.tag = tag
        self.relay: subprocess.Popen[bytes] | None = None

    def namespace(self, n: int) -> str:
        return f"{self.tag}-{n}"

    def address(self, n: int) -> str:
        return f"10.78.{n + 1}.2"

    def _ip(self, *args: str, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)

    def start(self) -> NodeNetwork:
        self.stop()  # what a killed run left behind
        try:
            self._ip("addr", "add", f"{SERVICES}/32", "dev", "lo")
            for n in range(self.count):
                ns, host = self.namespace(n), f"{self.tag}{n}h"
                for step in (
                    ["netns", "add", ns],
                    ["link", "add", host, "type", "veth", "peer", "eth0", "netns", ns],
                    ["addr", "add", f"10.78.{n + 1}.1/24", "dev", host],
                    ["link", "set", host, "up"],
                    ["-n", ns, "addr", "add", f"{self.address(n)}/24", "dev", "eth0"],
                    ["-n", ns, "link", "set", "eth0", "up"],
                    ["-n", ns, "link", "set", "lo", "up"],
                    ["-n", ns, "route", "add", "default", "via", f"10.78.{n + 1}.1"],
                ):
                    self._ip(*step)
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise RuntimeError(f"cannot build the nodes' network: {exc.stderr!r}") from None
        self.relay = subprocess.Popen(
            [
                "socat",
                f"TCP-LISTEN:5432,bind={SERVICES},fork,reuseaddr",
                "TCP:127.0.0.1:5432",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def database_url(self, pg_url: str) -> str:
        """``pg_url`` as the nodes reach it (through the relay)."""
        return pg_url.replace("@127.0.0.1:", f"@{SERVICES}:")

    def command(self, n: int, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(n), *args]

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.terminate()
            self.relay.wait(5)
            self.relay = None
        for n in range(self.count):
            self._ip("netns", "del", self.namespace(n), check=False)
            self._ip("link", "del", f"{self.tag}{n}h", check=False)
        self._ip("addr", "del", f"{SERVICES}/32", "dev", "lo", check=False)


TELEGRAM_TOKEN = "4242:TEST-TOKEN"


def telegram_table(url: str) -> str:
    """``[plugins.telegram]`` polling the Bot API stand-in at ``url``."""
    return f"""
[plugins.telegram]
token = "{TELEGRAM_TOKEN}"
base_url = "{url}/bot"
base_file_url = "{url}/file/bot"
poll_timeout = 1
"""


def node_config(
    folder: Path,
    database_url: str,
    body: str = "",
    outbox: str = "",
    core: str = "",
    takeover: float = TAKEOVER_SECONDS,
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
takeover_seconds = {takeover}

[switchboard.outbox]
poll_interval = 0.05
{outbox}
{body}
""")
    return config


@attrs.define
class Node:
    name: str
    address: str
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}"

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
    net: NodeNetwork,
    pg_url: str,
    body: str | list[str],
    channel: str,
    outbox: str = "",
    core: str = "",
    takeover: float = TAKEOVER_SECONDS,
) -> list[Node]:
    """A runner in each of ``net``'s namespaces with ``channel`` running, each with a
    folder of its own; ``body``: the same TOML for all, or each one's."""
    nodes: list[Node] = []
    try:
        for n in range(net.count):
            own = body[n] if isinstance(body, list) else body
            folder = tmp_path / f"node-{'abcdefgh'[n]}"
            node_config(folder, net.database_url(pg_url), own, outbox, core, takeover)
            nodes.append(start_node(net, n, folder, channel))
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def start_node(net: NodeNetwork, n: int, folder: Path, channel: str) -> Node:
    """``switchboard serve`` with ``folder``'s configuration in namespace ``n`` (again,
    after a kill), once ``channel`` runs."""
    address = net.address(n)
    proc, _ = serve_process(
        folder / "switchboard.toml",
        channel,
        host=address,
        port=HTTP_PORT,
        prefix=net.command(n),
        log=folder / "runner.log",
    )
    return Node("abcdefgh"[n], address, proc)


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
