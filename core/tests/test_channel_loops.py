"""ctx.supervise: a channel's supervised loops, shown in health, restarted on failure
without failing the channel, stopped with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from switchboard import ChannelContext
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
