"""The channel conformance suite: a test class every channel plugin subclasses.

It checks the contract of :class:`switchboard.Channel` the same way for every plugin:

- ``start``/``stop`` can be repeated, ``stop`` releases what ``start`` took (tasks, file
  descriptors), and a stopped channel starts again;
- ``send`` returns a :class:`~switchboard.Receipt` with the far side's id;
- a message delivered twice by the far side is stored once;
- a hostile item (whatever this channel's worst input is: a file name that is a path, a
  sender nobody can read...) is stored as far as possible or quarantined, and the
  messages after it still arrive: one bad item never stops a channel;
- a send the far side refuses raises a :class:`~switchboard.SendError` (permanent or
  transient), never another exception;
- nothing the channel does blocks the event loop for more than ``max_block_seconds``.

Subclass it in your plugin's tests (the class name must start with ``Test``) and implement
the five methods that speak to your far side (usually a loopback stand-in)::

    class TestMyChannelConformance(ChannelConformance):
        async def open(self, folder):              # a Switchboard with the channel started
        async def deliver_inbound(self, sb, external_id, text):  # the far side sends one
        async def deliver_hostile(self, sb, external_id):  # ... and one meant to hurt
        def address(self):                          # an address the channel can send to
        async def refuse_next_send(self):           # the far side refuses the next send
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from switchboard.channels import Channel, ChannelState, OutboundMessage, Receipt, SendError
from switchboard.core import Switchboard
from switchboard.quarantine import quarantine_t
from switchboard.store import interaction_t

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover
    pytest_asyncio = None  # type: ignore[assignment]


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: the check is skipped
        return -1


class _LoopWatch:
    """Measures the longest time the event loop went without running a tick."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _LoopWatch:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.period)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - self.period)
            last = now


class ChannelConformance:
    """Subclass as ``TestXxxConformance`` and implement the four methods below."""

    channel_name: str = ""
    """The channel's name (default: the only channel the Switchboard has)."""
    max_block_seconds: float = 0.1
    inbound_timeout: float = 10.0

    # -- what the subclass provides -------------------------------------------------------

    async def open(self, folder: Path) -> Switchboard:
        """A Switchboard (``switchboard.testing.open_switchboard``) with the channel
        configured against the far side and started."""
        raise NotImplementedError

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        """Make the far side send the channel a message whose channel-level id is derived
        from ``external_id`` (the same ``external_id`` twice: the same message twice)."""
        raise NotImplementedError

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        """Make the far side send an item this channel cannot store as it is: the worst
        input it can meet (a sender no address book reads, an attachment named ``..``...),
        its channel-level id derived from ``external_id`` where the item has one."""
        raise NotImplementedError(
            "implement deliver_hostile: every channel is held to the hostile-inbound case"
        )

    def address(self) -> str:
        """An address the channel can send to (``kind:value``)."""
        raise NotImplementedError

    async def refuse_next_send(self) -> None:
        """Make the far side refuse the next send (e.g. answer 400 or 403)."""
        raise NotImplementedError

    # -- plumbing -------------------------------------------------------------------------

    if pytest_asyncio is not None:

        @pytest_asyncio.fixture
        async def sb(self, tmp_path: Path) -> AsyncIterator[Switchboard]:
            opened = await self.open(tmp_path)
            try:
                yield opened
            finally:
                await opened.close()

    def channel(self, sb: Switchboard) -> Channel:
        name = self.channel_name or next(iter(sb.channels))
        return sb.channels[name].channel

    def _name(self, sb: Switchboard) -> str:
        return self.channel_name or next(iter(sb.channels))

    def outbound(self, sb: Switchboard, text: str) -> OutboundMessage:
        address = sb.addresses.parse(self.address())
        return OutboundMessage(
            interaction_id=0,
            channel=self._name(sb),
            address=address,
            text=text,
            subject=None,
            payload={},
            attempt=1,
            contact_id=0,
        )

    async def _until(self, check: Any, within: float) -> Any:
        deadline = time.monotonic() + within
        while not (value := check()):
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the channel")
            await asyncio.sleep(0.02)
        return value

    # -- the contract ---------------------------------------------------------------------

    async def test_conformance_started(self, sb: Switchboard) -> None:
        handle = sb.channels[self._name(sb)]
        assert handle.state is ChannelState.RUNNING, handle.last_error
        channel = handle.channel
        assert isinstance(channel, Channel)
        assert channel.name == self._name(sb)
        assert channel.address_kind in sb.addresses.kinds

    async def test_conformance_start_stop_are_repeatable_and_release_resources(
        self, sb: Switchboard
    ) -> None:
        name = self._name(sb)
        await sb.stop_channels()
        await self.channel(sb).stop()  # a second stop is harmless
        tasks_before = len(asyncio.all_tasks())
        fds_before = _open_fds()
        for _ in range(3):
            assert await sb.start_channel(name), sb.channels[name].last_error
            await sb.stop_channels()
        await asyncio.sleep(0.05)
        assert len(asyncio.all_tasks()) <= tasks_before, "stop() left tasks running"
        if fds_before >= 0:
            await self._until(lambda: _open_fds() <= fds_before, 5.0)
        assert await sb.start_channel(name)  # and it still works
        receipt = await self.channel(sb).send(self.outbound(sb, "after restarts"))
        assert isinstance(receipt, Receipt)

    async def test_conformance_send_returns_a_receipt(self, sb: Switchboard) -> None:
        receipt = await self.channel(sb).send(self.outbound(sb, "conformance: hello"))
        assert isinstance(receipt, Receipt)
        assert isinstance(receipt.external_id, str)
        assert receipt.external_id

    async def test_conformance_duplicate_inbound_is_stored_once(self, sb: Switchboard) -> None:
        await self.deliver_inbound(sb, "conformance-1", "first delivery")
        await self._until(lambda: sb.store.count(interaction_t) >= 1, self.inbound_timeout)
        await self.deliver_inbound(sb, "conformance-1", "first delivery")
        await self.deliver_inbound(sb, "conformance-2", "another message")
        await self._until(lambda: sb.store.count(interaction_t) >= 2, self.inbound_timeout)
        await asyncio.sleep(0.3)
        assert sb.store.count(interaction_t) == 2

    async def test_conformance_hostile_inbound_is_kept_and_the_channel_goes_on(
        self, sb: Switchboard
    ) -> None:
        name = self._name(sb)
        await self.deliver_hostile(sb, "conformance-hostile")
        await self.deliver_inbound(sb, "conformance-after", "after the hostile one")

        def arrived() -> bool:
            with sb.store.read() as conn:
                return (
                    conn.execute(
                        sa.select(interaction_t.c.id).where(
                            interaction_t.c.text == "after the hostile one"
                        )
                    ).first()
                    is not None
                )

        await self._until(arrived, self.inbound_timeout)
        await self._until(
            lambda: sb.store.count(interaction_t) + sb.store.count(quarantine_t) >= 2,
            self.inbound_timeout,
        )
        assert sb.channels[name].state is ChannelState.RUNNING, sb.channels[name].last_error
        # the hostile item is on a timeline or in the quarantine: not lost, not doubled
        assert sb.store.count(interaction_t) + sb.store.count(quarantine_t) == 2

    async def test_conformance_refused_send_raises_a_send_error(self, sb: Switchboard) -> None:
        await self.refuse_next_send()
        with pytest.raises(SendError):
            await self.channel(sb).send(self.outbound(sb, "to be refused"))
        receipt = await self.channel(sb).send(self.outbound(sb, "accepted again"))
        assert receipt.external_id

    async def test_conformance_does_not_block_the_event_loop(self, sb: Switchboard) -> None:
        name = self._name(sb)
        async with _LoopWatch() as watch:
            for i in range(10):
                await self.channel(sb).send(self.outbound(sb, f"load {i}"))
            for i in range(5):
                await self.deliver_inbound(sb, f"block-{i}", f"inbound {i}")
            await self._until(lambda: sb.store.count(interaction_t) >= 5, self.inbound_timeout)
            await sb.stop_channels()
            assert await sb.start_channel(name)
        assert watch.longest <= self.max_block_seconds, (
            f"the event loop was blocked for {watch.longest * 1000:.0f} ms"
        )
