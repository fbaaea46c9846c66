"""The conformance suite itself: a good channel passes it, a bad one fails it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import time
from pathlib import Path

from switchboard import InboundMessage, PermanentSendError, Switchboard
from switchboard.conformance import ChannelConformance
from switchboard.testing import LoopbackChannel, LoopbackPlugin, open_switchboard


class Blocking(LoopbackChannel):
    async def send(self, message):
        time.sleep(0.25)  # blocks the event loop
        if self.fail_next:
            self.fail_next.pop(0)
            raise ValueError("a raw error instead of a SendError")
        return await super().send(message)


class Fragile(LoopbackChannel):
    async def accept(self, message):
        return await self.inject(message)  # a bad item raises out of the channel


class TestConformance(ChannelConformance):
    channel_class = {channel_class}

    async def open(self, folder: Path) -> Switchboard:
        self.ch = self.channel_class("sms")
        return await open_switchboard(folder, LoopbackPlugin(self.ch))

    async def deliver_inbound(self, sb, external_id, text):
        await self.ch.accept(InboundMessage(external_id, "+12025550143", text=text))

    async def deliver_hostile(self, sb, external_id):
        await self.ch.accept(InboundMessage(external_id, "not an address", text="x"))

    def address(self):
        return "phone:+12025550143"

    async def refuse_next_send(self):
        self.ch.fail_next.append(PermanentSendError("refused"))
"""


def run_suite(pytester: pytest.Pytester, channel_class: str) -> pytest.RunResult:
    pytester.makepyfile(test_suite=SUITE.replace("{channel_class}", channel_class))
    return pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=auto", "-q")


def test_the_loopback_channel_conforms(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, "LoopbackChannel")
    result.assert_outcomes(passed=7)


def test_a_channel_that_lets_a_bad_item_raise_does_not(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, "Fragile")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["*test_conformance_hostile_inbound_is_kept*"])


def test_a_blocking_channel_that_raises_raw_errors_does_not(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, "Blocking")
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_conformance_refused_send_raises_a_send_error*",
            "*test_conformance_does_not_block_the_event_loop*",
        ]
    )
