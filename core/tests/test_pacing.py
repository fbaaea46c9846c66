"""The pacer: never over its rate in any second, evenly spaced, a gap per recipient."""

from __future__ import annotations

import asyncio
import itertools
import time

from switchboard import Pacer


def test_the_pacer_never_exceeds_its_rate_nor_bunches_late_sends() -> None:
    async def run() -> tuple[list[float], list[tuple[float, str]]]:
        pacer = Pacer(rate=40, gap=0.3)
        went: list[tuple[float, str]] = []

        async def sender(k: int) -> None:
            for i in range(12):
                await pacer.wait(f"r{(k + i) % 6}")
                went.append((time.monotonic(), f"r{(k + i) % 6}"))

        tasks = [asyncio.create_task(sender(k)) for k in range(8)]
        await asyncio.sleep(0.5)
        time.sleep(0.3)  # the event loop stalls: the sends waiting must not burst after it
        await asyncio.gather(*tasks)
        return sorted(t for t, _ in went), went

    times, went = asyncio.run(run())
    assert len(times) == 96
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / 40 - 0.002  # evenly spaced, the stall included
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 40
    for who in {r for _, r in went}:
        mine = sorted(t for t, r in went if r == who)
        assert min(b - a for a, b in itertools.pairwise(mine)) >= 0.3 - 0.002
