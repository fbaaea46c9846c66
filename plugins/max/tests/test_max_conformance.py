"""The MAX channel passes the channel conformance suite (updates handed to the channel as
long polling and the webhook route do; sends to the MAX Bot API stand-in)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from max_peers import max_settings

from switchboard import Switchboard
from switchboard.conformance import ChannelConformance
from switchboard.testing import open_switchboard
from switchboard_max import MaxChannel, MaxPlugin
from switchboard_max.testing import MaxApiStandIn, max_api, message_created

CUSTOMER = 4242


class TestMaxConformance(ChannelConformance):
    mx: MaxApiStandIn

    @pytest.fixture(autouse=True)
    def _mx(self) -> Iterator[None]:
        with max_api() as api:
            self.mx = api
            yield

    async def open(self, folder: Path) -> Switchboard:
        return await open_switchboard(
            folder, MaxPlugin(), config={"plugins": {"max": max_settings(self.mx, mode="webhook")}}
        )

    def _channel(self, sb: Switchboard) -> MaxChannel:
        channel = sb.channel_objects["max"]
        assert isinstance(channel, MaxChannel)
        return channel

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        await self._channel(sb).handle(message_created(CUSTOMER, text, f"mid.{external_id}"))

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        update = message_created(CUSTOMER, "x", f"mid.{external_id}")
        update["message"]["sender"]["user_id"] = "../../x"  # not a user id: quarantined
        await self._channel(sb).handle(update)

    def address(self) -> str:
        return f"max:{CUSTOMER}"

    async def refuse_next_send(self) -> None:
        self.mx.fail_next("POST /messages", 403, "chat.denied", "The user blocked the bot")
