"""Pacing sends to a provider's limits: so many a second in all, and a gap per recipient.

A provider that counts requests a second (WhatsApp's 80 a number, VK's 20 a community
token) answers the ones over with a rate-limit error; sending at its pace costs less than
being throttled and retried.
"""

from __future__ import annotations

import asyncio
import collections
import time


class Pacer:
    """At most ``rate`` sends in any one second, spaced evenly, and ``gap`` seconds between
    two sends to one recipient; a send waits for its slot rather than being refused.

    A slot is taken when the send goes, not when it starts waiting: sends that wake late
    together (a busy event loop) still go one interval apart, never in a burst."""

    def __init__(self, rate: float, gap: float) -> None:
        self.interval = 1.0 / rate
        self.gap = gap
        self._recent: collections.deque[float] = collections.deque(maxlen=max(1, int(rate)))
        self._last: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def wait(self, recipient: str) -> None:
        while True:
            async with self._lock:
                now = time.monotonic()
                slot = max(
                    self._recent[-1] + self.interval if self._recent else now,
                    self._last.get(recipient, -self.gap) + self.gap,
                    # the send as many sends ago as the rate: a second ago at the most
                    self._recent[0] + 1.0 if len(self._recent) == self._recent.maxlen else now,
                )
                if slot <= now:
                    self._recent.append(now)
                    self._last[recipient] = now
                    if len(self._last) > 50_000:  # forget recipients past their gap
                        self._last = {k: t for k, t in self._last.items() if t > now - self.gap}
                    return
            await asyncio.sleep(slot - now)
