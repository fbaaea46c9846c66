"""Group commit: many concurrent callers, one transaction.

Each ``await submit(item)`` waits while one worker task processes everything submitted so
far as one batch (one transaction, in practice) and hands each caller its own result or
exception. Under load the batches grow by themselves; a lone caller is processed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

log = logging.getLogger("switchboard.groupcommit")


class GroupCommit(Generic[I, R]):
    def __init__(
        self,
        process: Callable[[list[I]], Awaitable[list[R | BaseException]]],
        *,
        max_batch: int = 500,
        name: str = "group-commit",
    ) -> None:
        """``process(batch)`` returns one result or exception per item, in order; if it
        raises, every item of the batch gets that exception."""
        self._process = process
        self.max_batch = max_batch
        self.name = name
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self.name)
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                try:
                    outcomes = await self._process([item for item, _ in batch])
                    if len(outcomes) != len(batch):
                        raise RuntimeError(
                            f"{self.name}: {len(outcomes)} results for {len(batch)} items"
                        )
                except Exception as exc:
                    log.exception("%s: a batch of %d failed", self.name, len(batch))
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # the caller was cancelled
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
