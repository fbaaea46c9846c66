"""POST /api/messages sustained, with SQLite: wrk on loopback against ``switchboard serve``.

Every 202 is an interaction + outbox row committed before the answer (group-committed
across concurrent requests); the outbox worker sends them meanwhile through a loopback
channel. Usage: python bench/api.py [--seconds 15] [--connections 64]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine
from _service import TOKEN, service

from switchboard.store import Store, interaction_t

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"channel": "bench", "address": "+7495%07d", "text": "benchmark message %d"}',
    counter % 5000, counter)
  return wrk.format(nil, "/api/messages", nil, body)
end
""".replace("TOKEN", TOKEN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    print(machine())
    with service() as (url, root), tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(LUA)
        script.flush()
        warm = subprocess.run(
            ["wrk", "-t1", "-c8", "-d3s", "-s", script.name, url], capture_output=True, text=True
        )
        assert warm.returncode == 0, warm.stderr
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
        ).stdout
        store = Store(f"sqlite:///{root / 'bench.db'}")
        stored = store.count(interaction_t)
        store.close()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, flags=re.M))
    warm_total = int(re.search(r"(\d+) requests in", warm.stdout).group(1))  # type: ignore[union-attr]
    print(
        f"POST /api/messages, SQLite, {args.connections} connections, {args.seconds} s: "
        f"{rate:.0f} requests/s ({total} requests, "
        f"{errors.group(1) if errors else 0} non-2xx); latency p50 {lat.get('50')} "
        f"p99 {lat.get('99')}; stored {stored} messages for {total + warm_total} answered "
        f"(with the warm-up)"
    )


if __name__ == "__main__":
    main()
