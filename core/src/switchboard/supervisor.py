"""Supervised background loops: the outbox worker, the event hub, each webhook.

A loop that raises is logged, shown as ``failing`` with its last error in ``/api/health``
and ``/metrics``, and started again after a backoff that doubles up to a maximum (reset
once the loop has run for longer than that maximum). Nothing in the background can stop
silently: a loop is ``running``, ``failing`` (waiting to restart) or ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import attrs

from switchboard.backoff import Backoff
from switchboard.models import utcnow

log = logging.getLogger("switchboard.supervisor")


class LoopState(enum.Enum):
    RUNNING = "running"
    FAILING = "failing"
    STOPPED = "stopped"


@attrs.define
class Loop:
    name: str
    run: Callable[[], Awaitable[None]]
    state: LoopState = LoopState.STOPPED
    last_error: str | None = None
    last_error_at: datetime | None = None
    restarts: int = 0
    task: asyncio.Task[None] | None = None
    stopping: bool = False  # told to stop (cancelled): never run again, may be replaced

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "restarts": self.restarts,
        }


class Supervisor:
    def __init__(self, backoff_initial: float = 1.0, backoff_max: float = 60.0) -> None:
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.loops: dict[str, Loop] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> Loop:
        """Run ``run()`` under supervision as ``name`` (it returns only when asked to stop).
        A loop of that name that was stopped but has not finished yet (its cancellation
        swallowed somewhere) is left to end by itself: it is never run again."""
        old = self.loops.get(name)
        if old is not None and old.task is not None and not old.task.done() and not old.stopping:
            raise ValueError(f"a loop named {name!r} is already running")
        loop = Loop(name, run)
        loop.task = asyncio.create_task(self._keep(loop), name=f"switchboard-{name}")
        self.loops[name] = loop
        return loop

    async def _keep(self, loop: Loop) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while not loop.stopping:
            loop.state = LoopState.RUNNING
            started = time.monotonic()
            try:
                await loop.run()
            except asyncio.CancelledError:
                loop.state = LoopState.STOPPED
                raise
            except Exception as exc:
                loop.state = LoopState.FAILING
                loop.last_error = f"{type(exc).__name__}: {exc}"
                loop.last_error_at = utcnow()
                if time.monotonic() - started > self.backoff_max:
                    backoff.succeeded()  # it had been fine for a while
                delay = backoff.failed()
                log.error("%s failed: %s; restarting in %.1fs", loop.name, loop.last_error, delay)
                await asyncio.sleep(delay)
                loop.restarts += 1
            else:
                loop.state = LoopState.STOPPED  # it finished because it was asked to
                return
        loop.state = LoopState.STOPPED

    async def wait(self, name: str, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a loop told to stop to finish; then cancel it."""
        loop = self.loops.get(name)
        if loop is None or loop.task is None:
            return
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(loop.task, timeout)
        loop.state = LoopState.STOPPED

    async def stop(self, *names: str, timeout: float | None = None) -> list[str]:
        """Cancel the named loops (every loop, without names) and wait for them, at most
        ``timeout`` seconds when given; returns the names of those still running then."""
        chosen = [self.loops[n] for n in names if n in self.loops] if names else self.loops.values()
        tasks = [loop.task for loop in chosen if loop.task is not None]
        for loop in chosen:
            loop.stopping = True
        for task in tasks:
            task.cancel()
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
        for loop in chosen:
            loop.state = LoopState.STOPPED
        return [loop.name for loop in chosen if loop.task in pending]

    @property
    def failing(self) -> bool:
        return any(loop.state is LoopState.FAILING for loop in self.loops.values())

    def health(self) -> dict[str, dict[str, Any]]:
        return {name: loop.health() for name, loop in self.loops.items()}
