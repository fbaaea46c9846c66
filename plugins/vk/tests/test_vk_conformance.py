"""The VK channel passes the channel conformance suite (updates handed to the channel as
the long poll and the Callback route do; sends to the VK API stand-in)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from vk_peers import vk_settings

from switchboard import Switchboard
from switchboard.conformance import ChannelConformance
from switchboard.testing import open_switchboard
from switchboard_vk import VkChannel, VkPlugin
from switchboard_vk.testing import VkApiStandIn, message_new, vk_api

CUSTOMER = 4242


class TestVkConformance(ChannelConformance):
    vk: VkApiStandIn

    @pytest.fixture(autouse=True)
    def _vk(self) -> Iterator[None]:
        with vk_api() as api:
            self.vk = api
            yield

    async def open(self, folder: Path) -> Switchboard:
        return await open_switchboard(
            folder, VkPlugin(), config={"plugins": {"vk": vk_settings(self.vk, mode="callback")}}
        )

    def _channel(self, sb: Switchboard) -> VkChannel:
        channel = sb.channel_objects["vk"]
        assert isinstance(channel, VkChannel)
        return channel

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        # the suite's ids are its own: the message's number in the conversation carries it
        update = message_new(CUSTOMER, text, zlib.crc32(external_id.encode()))
        await self._channel(sb).handle(update)

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        update = message_new(CUSTOMER, "x", 1)
        update["object"]["message"]["from_id"] = "../../x"  # not a user id: quarantined
        await self._channel(sb).handle(update)

    def address(self) -> str:
        return f"vk:{CUSTOMER}"

    async def refuse_next_send(self) -> None:
        self.vk.fail_next("messages.send", 901, "Can't send messages for users without permission")
