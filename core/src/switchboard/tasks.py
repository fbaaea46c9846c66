"""Background tasks held together: the one way Switchboard (and a plugin) starts them.

``asyncio.create_task`` keeps only a weak reference to its task, logs a failure only when
the task is garbage-collected, and leaves cancelling to whoever remembers the task.
:class:`Tasks` keeps each task until it is done, logs a failure at once (or hands it to
``on_error``), and cancels what is left on :meth:`cancel_all`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Tasks"]


class Tasks:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        on_error: Callable[[asyncio.Task[Any], BaseException], None] | None = None,
    ) -> None:
        self.logger = logger
        self.on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; kept until done, its failure logged."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self.on_error is not None:
            self.on_error(task, exc)
        else:
            self.logger.error("task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self, timeout: float = 5.0) -> set[asyncio.Task[Any]]:
        """Cancel every task still running and wait up to ``timeout`` seconds for them
        (bounded: a task that swallows its cancellation must not hang a shutdown); returns
        those that did not finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        stuck: set[asyncio.Task[Any]] = set()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=timeout)
        self._tasks.clear()
        return stuck
