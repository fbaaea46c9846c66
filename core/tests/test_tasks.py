"""switchboard.Tasks: background tasks kept, their failures reported, cancelled together."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from switchboard import Tasks


async def test_failures_are_logged_or_handed_over_and_done_tasks_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks(logging.getLogger("test.tasks"))

    async def boom() -> None:
        raise RuntimeError("broken")

    with caplog.at_level(logging.ERROR, logger="test.tasks"):
        await asyncio.wait([tasks.spawn(boom(), name="boomer")])
        await asyncio.sleep(0)
    assert "task boomer failed" in caplog.text and "broken" in caplog.text
    assert len(tasks) == 0
    seen: list[tuple[str, str]] = []
    handed = Tasks(
        logging.getLogger("x"), on_error=lambda t, e: seen.append((t.get_name(), str(e)))
    )
    await asyncio.wait([handed.spawn(boom(), name="again")])
    await asyncio.sleep(0)
    assert seen == [("again", "broken")]


async def test_cancel_all_is_bounded_and_names_what_would_not_stop() -> None:
    tasks = Tasks(logging.getLogger("test.tasks"))
    stubborn_done = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # swallows the cancel for a while
            stubborn_done.set()

    async def polite() -> None:
        await asyncio.sleep(60)

    quick, slow = tasks.spawn(polite()), tasks.spawn(stubborn())
    await asyncio.sleep(0)
    stuck: Any = await tasks.cancel_all(timeout=0.1)
    assert stuck == {slow} and quick.cancelled()
    assert len(tasks) == 0
    await stubborn_done.wait()
