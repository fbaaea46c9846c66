"""How long `switchboard ivr check` takes on a 200-node flow (target: under 1 s).

100 menus chained (each with a way back and an agent leaf), text prompts rendered by
espeak-ng into a cache: the first run speaks them all, later runs find them cached.

    uv run python bench/ivr_check.py [--nodes 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _common import machine

from switchboard_ivr.flow import build_flow
from switchboard_ivr.tts import Speaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "ivr" / "tests"))
from test_ivr_flow import AGENTS, big_flow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    doc = big_flow(args.nodes)
    print(f"IVR flow check on {machine()}, {datetime.now():%Y-%m-%d}")
    with tempfile.TemporaryDirectory() as cache:
        speak = Speaker(Path(cache))
        started = time.perf_counter()
        build_flow(doc, agents=AGENTS, render=speak)
        first = time.perf_counter() - started
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            build_flow(doc, agents=AGENTS, render=speak)
            times.append(time.perf_counter() - started)
        structure = []
        for _ in range(args.runs):
            started = time.perf_counter()
            build_flow(doc, agents=AGENTS)
            structure.append(time.perf_counter() - started)
    print(
        f"{len(doc['nodes'])} nodes: first check (speaking {len(doc['nodes']) // 2} prompts) "
        f"{first:.2f} s; cached prompts median {statistics.median(times) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms; without prompt rendering median "
        f"{statistics.median(structure) * 1000:.1f} ms (target < 1 s)"
    )


if __name__ == "__main__":
    main()
