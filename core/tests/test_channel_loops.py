"""ctx.supervise: a channel's supervised loops, shown in health, restarted on failure
without failing the channel, stopped with it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from switchboard import ChannelContext, core
from switchboard.channels import ChannelState
from switchboard.testing import LoopbackChannel, LoopbackPlugin, open_switchboard


class TwoPartChannel(LoopbackChannel):
    """A channel with a secondary part (a second account) run as a supervised loop that
    fails on its first run."""

    def __init__(self) -> None:
        super().__init__("parts")
        self.runs = 0
        self.cancelled = asyncio.Event()

    async def start(self, ctx: ChannelContext) -> None:
        await super().start(ctx)
        ctx.supervise("second", self.second)

    async def second(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise ConnectionError("second account: 503 Service Unavailable")
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled.set()


async def test_a_supervised_loop_fails_and_restarts_while_the_channel_runs(
    tmp_path: Path,
) -> None:
    channel = TwoPartChannel()
    sb = await open_switchboard(tmp_path, LoopbackPlugin(channel))
    try:
        sb.loops.backoff_initial = 0.05
        await sb.start_channels()
        loop = sb.loops.loops["parts:second"]
        for _ in range(100):
            if loop.last_error and loop.state.value == "running" and channel.runs == 2:
                break
            await asyncio.sleep(0.02)
        assert sb.channels["parts"].state is ChannelState.RUNNING
        assert loop.health()["restarts"] == 1
        assert "503 Service Unavailable" in (loop.last_error or "")
        await sb.stop_channels()
        assert channel.cancelled.is_set()
        assert loop.state.value == "stopped"
        await sb.start_channels()  # starts again under the same name
        await asyncio.sleep(0.05)
        assert sb.loops.loops["parts:second"].state.value == "running"
        assert channel.runs == 3
    finally:
        await sb.close()


class StubbornChannel(LoopbackChannel):
    """A channel whose loop swallows its first cancellation (as a cancellation lost in
    ``asyncio.wait_for`` on CPython 3.11 does) and ends a little later, with an error."""

    def __init__(self) -> None:
        super().__init__("stubborn")
        self.runs = 0
        self.release = asyncio.Event()

    async def start(self, ctx: ChannelContext) -> None:
        await super().start(ctx)
        ctx.supervise("reader", self.reader)

    async def reader(self) -> None:
        self.runs += 1
        if self.runs > 1:
            await asyncio.Event().wait()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed
            await asyncio.Event().wait()
        await self.release.wait()
        raise ConnectionError("closed under us")


async def test_a_loop_that_swallows_its_cancellation_does_not_block_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "TASK_STOP_TIMEOUT", 0.2)
    channel = StubbornChannel()
    sb = await open_switchboard(tmp_path, LoopbackPlugin(channel))
    try:
        sb.loops.backoff_initial = 0.01
        await sb.start_channels()
        await asyncio.sleep(0.05)
        first = sb.loops.loops["stubborn:reader"]
        await sb.stop_channels()  # the loop does not stop within the bound: logged
        assert first.task is not None and not first.task.done()
        assert await sb.start_channel("stubborn")  # the name is free again
        await asyncio.sleep(0.05)
        assert channel.runs == 2
        channel.release.set()  # the old one ends, with an error: it is not run again
        await asyncio.wait_for(first.task, 1)
        await asyncio.sleep(0.1)
        assert channel.runs == 2
        assert sb.loops.loops["stubborn:reader"].state.value == "running"
    finally:
        await sb.close()
