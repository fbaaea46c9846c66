"""The Telegram channel passes the channel conformance suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_telegram_channel import FAST, telegram_plugin

from switchboard import Switchboard
from switchboard.conformance import ChannelConformance
from switchboard.testing import open_switchboard
from switchboard_telegram.channel import TelegramSettings
from switchboard_telegram.testing import BotApi, bot_api


class TestTelegramConformance(ChannelConformance):
    api: BotApi
    url: str

    @pytest.fixture(autouse=True)
    def _bot_api(self) -> Iterator[None]:
        with bot_api() as (api, url):
            self.api, self.url = api, url
            yield

    async def open(self, folder: Path) -> Switchboard:
        settings = {
            "token": self.api.token,
            "base_url": f"{self.url}/bot",
            "base_file_url": f"{self.url}/file/bot",
            "poll_timeout": 1,
            **FAST,
        }
        assert TelegramSettings(**settings)  # the settings are valid as written
        return await open_switchboard(
            folder, telegram_plugin(), config={"plugins": {"telegram": settings}}
        )

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        message_id = int.from_bytes(external_id.encode()[-4:], "big")
        self.api.push({"message": self.api.message(801, text, message_id=message_id)})

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        # a document named "..", and a shared phone number region RU cannot read
        message_id = int.from_bytes(external_id.encode()[-4:], "big")
        file_id = self.api.add_file(b"data", "documents/x.bin")
        document = {"file_id": file_id, "file_unique_id": "u", "file_name": "..", "file_size": 4}
        contact = {"phone_number": "14155552671", "first_name": "X", "user_id": 801}
        self.api.push(
            {
                "message": self.api.message(
                    801, None, message_id=message_id, document=document, contact=contact
                )
            }
        )

    def address(self) -> str:
        return "telegram:801"

    async def refuse_next_send(self) -> None:
        self.api.fail_next("sendMessage", 400, "Bad Request: chat not found")
