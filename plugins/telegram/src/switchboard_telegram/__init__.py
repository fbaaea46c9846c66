"""Switchboard's Telegram channel (python-telegram-bot). See docs/telegram.md."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

import telegram
from fastapi import APIRouter, HTTPException, Request

from switchboard import Channel, hookimpl
from switchboard_telegram.channel import TelegramChannel, TelegramSettings

__all__ = ["PLUGIN", "TelegramChannel", "TelegramPlugin", "TelegramSettings"]

WEBHOOK_PATH = "/telegram/webhook"


class TelegramPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "telegram"

    def __init__(self) -> None:
        self.channel = TelegramChannel()

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(TelegramSettings)

    @hookimpl
    def register_channels(self, register: Callable[[Channel], None]) -> None:
        register(self.channel)

    @hookimpl
    def register_routes(self, router: APIRouter) -> None:
        channel = self.channel

        @router.post(WEBHOOK_PATH, include_in_schema=False)
        async def telegram_webhook(request: Request) -> dict[str, bool]:
            """Updates pushed by Telegram (mode = "webhook"); checked against the secret."""
            settings = channel.settings
            if channel.bot is None or settings is None or settings.mode != "webhook":
                raise HTTPException(404, "the Telegram channel is not in webhook mode")
            given = request.headers.get("x-telegram-bot-api-secret-token", "")
            if not hmac.compare_digest(given.encode(), (settings.webhook_secret or "").encode()):
                raise HTTPException(403, "wrong or missing X-Telegram-Bot-Api-Secret-Token")
            try:
                data = json.loads(await request.body())
                update = telegram.Update.de_json(data, channel.bot)
            except (ValueError, TypeError, KeyError) as exc:
                raise HTTPException(422, f"not a Telegram update: {exc}") from None
            if update is None:
                raise HTTPException(422, "not a Telegram update: empty body")
            await channel.handle(update)  # stored before Telegram gets its 200
            return {"ok": True}


PLUGIN = TelegramPlugin()
