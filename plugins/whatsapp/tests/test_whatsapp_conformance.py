"""The WhatsApp channel passes the channel conformance suite (webhook bodies handed to the
channel as the route does after the signature check; sends to the Graph API stand-in)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from wa_peers import wa_settings

from switchboard import Switchboard
from switchboard.conformance import ChannelConformance
from switchboard.testing import open_switchboard
from switchboard_whatsapp import WhatsAppChannel, WhatsAppPlugin
from switchboard_whatsapp.testing import GraphApi, graph_api, text_message, webhook_body

CUSTOMER = "14155550123"


class TestWhatsAppConformance(ChannelConformance):
    graph: GraphApi

    @pytest.fixture(autouse=True)
    def _graph(self) -> Iterator[None]:
        with graph_api() as g:
            self.graph = g
            yield

    async def open(self, folder: Path) -> Switchboard:
        return await open_switchboard(
            folder,
            WhatsAppPlugin(),
            config={"plugins": {"whatsapp": wa_settings(self.graph, per_recipient_seconds=0)}},
        )

    def _channel(self, sb: Switchboard) -> WhatsAppChannel:
        channel = sb.channel_objects["whatsapp"]
        assert isinstance(channel, WhatsAppChannel)
        return channel

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        body = webhook_body(messages=[text_message(CUSTOMER, text, ident=external_id)])
        await self._channel(sb).handle(json.loads(body))

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        # a sender that is neither a number nor a user id: quarantined with the reason
        bad = {"from": "../../x", "id": external_id, "type": "text", "text": {"body": "x"}}
        body = webhook_body(messages=[bad])
        await self._channel(sb).handle(json.loads(body))

    def address(self) -> str:
        return f"phone:+{CUSTOMER}"

    async def refuse_next_send(self) -> None:
        self.graph.fail_next(
            "messages", 131026, "Message undeliverable", details="not a WhatsApp number"
        )
