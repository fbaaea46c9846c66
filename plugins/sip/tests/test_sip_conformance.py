"""The SIP channel passes the channel conformance suite: its messages are SIP MESSAGEs
(RFC 3428) between the channel and phones, through Kamailio; the phones are SIPp."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sip_peers import open_sip

from switchboard import Switchboard
from switchboard.conformance import ChannelConformance
from switchboard_sip.testing import (
    Kamailio,
    Sipp,
    message_phone_scenario,
    message_sender_scenario,
    need_sip_tools,
)

NUMBER = "+12025550143"


class TestSipConformance(ChannelConformance):
    kam: Kamailio
    folder: Path

    @pytest.fixture(autouse=True)
    def _kamailio(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        need_sip_tools()
        self.folder = tmp_path_factory.mktemp("sip-peers")
        self.kam = Kamailio(self.folder / "kamailio").start()
        try:
            yield
        finally:
            self.kam.stop()

    @pytest.fixture(autouse=True)
    async def _phone(self, _kamailio: None) -> AsyncIterator[None]:
        phone = await Sipp(self.folder / "sipp", "phone", message_phone_scenario()).start()
        self.kam.route(NUMBER, phone.port)
        try:
            yield
        finally:
            await phone.stop()

    async def open(self, folder: Path) -> Switchboard:
        return await open_sip(folder, self.kam)

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        sender = Sipp(self.folder / "sipp", "sender", message_sender_scenario("12025550188", text))
        result = await sender.run(
            f"127.0.0.1:{self.kam.port}", "-s", self.kam.user, "-m", "1", "-cid_str", external_id
        )
        assert result.ok, result.errors

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        # a sender whose user part is no phone number: quarantined, and the sender told 400
        sender = Sipp(
            self.folder / "sipp",
            "hostile",
            message_sender_scenario("evil-caller", "payload", response=400),
        )
        result = await sender.run(
            f"127.0.0.1:{self.kam.port}", "-s", self.kam.user, "-m", "1", "-cid_str", external_id
        )
        assert result.ok, result.errors

    def address(self) -> str:
        return f"phone:{NUMBER}"

    async def refuse_next_send(self) -> None:
        self.kam.refuse_next(NUMBER)  # the proxy answers 403, once
