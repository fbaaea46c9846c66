"""The Messenger and Instagram channels pass the channel conformance suite (webhook bodies
handed to the channel as the route does after the signature check; sends to the Graph API
stand-in)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard import Switchboard
from switchboard.conformance import ChannelConformance
from switchboard.testing import open_switchboard
from switchboard_meta import MetaChannel, MetaPlugin
from switchboard_meta.testing import (
    INSTAGRAM_ID,
    PAGE_ID,
    MetaGraph,
    meta_graph,
    settings,
    text_event,
    webhook_body,
)

CUSTOMER = "7012345678901234"


class _MetaConformance(ChannelConformance):
    graph: MetaGraph
    account = PAGE_ID

    @pytest.fixture(autouse=True)
    def _graph(self) -> Iterator[None]:
        with meta_graph() as g:
            self.graph = g
            yield

    async def open(self, folder: Path) -> Switchboard:
        return await open_switchboard(
            folder, MetaPlugin(), config={"plugins": {"meta": settings(self.graph)}}
        )

    def _channel(self, sb: Switchboard) -> MetaChannel:
        channel = sb.channel_objects[self.channel_name]
        assert isinstance(channel, MetaChannel)
        return channel

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        body = webhook_body([text_event(CUSTOMER, text, mid=external_id, account=self.account)])
        await self._channel(sb).handle(json.loads(body))

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        # a sender that is not a Meta user id: quarantined with the reason
        hostile = text_event("../../x", "x", mid=external_id, account=self.account)
        await self._channel(sb).handle(json.loads(webhook_body([hostile])))

    def address(self) -> str:
        return f"{self.channel_name}:{CUSTOMER}"

    async def refuse_next_send(self) -> None:
        self.graph.fail_next("messages", 551, "This person isn't available right now.")


class TestMessengerConformance(_MetaConformance):
    channel_name = "messenger"


class TestInstagramConformance(_MetaConformance):
    channel_name = "instagram"
    account = INSTAGRAM_ID
