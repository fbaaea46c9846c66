"""Switchboard's Telegram channel (python-telegram-bot). See docs/telegram.md."""

from __future__ import annotations

import hmac
import json
from typing import Any

import telegram
from fastapi import APIRouter, HTTPException, Request

from switchboard import hookimpl
from switchboard_telegram.channel import TelegramChannel, TelegramSettings

__all__ = ["TelegramChannel", "TelegramSettings"]

CHANNEL = TelegramChannel()
WEBHOOK_PATH = "/telegram/webhook"


@hookimpl
def register_settings(register: Any) -> None:
    register(TelegramSettings)


@hookimpl
def register_channels(register: Any) -> None:
    register(CHANNEL)


@hookimpl
def register_routes(router: APIRouter) -> None:
    @router.post(WEBHOOK_PATH, include_in_schema=False)
    async def telegram_webhook(request: Request) -> dict[str, bool]:
        """Updates pushed by Telegram (mode = "webhook"); checked against the secret."""
        settings = CHANNEL.settings
        if CHANNEL.bot is None or settings is None or settings.mode != "webhook":
            raise HTTPException(404, "the Telegram channel is not in webhook mode")
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        if not hmac.compare_digest(given.encode(), (settings.webhook_secret or "").encode()):
            raise HTTPException(403, "wrong or missing X-Telegram-Bot-Api-Secret-Token")
        try:
            data = json.loads(await request.body())
            update = telegram.Update.de_json(data, CHANNEL.bot)
        except (ValueError, TypeError, KeyError) as exc:
            raise HTTPException(422, f"not a Telegram update: {exc}") from None
        if update is None:
            raise HTTPException(422, "not a Telegram update: empty body")
        await CHANNEL.handle(update)  # stored before Telegram gets its 200
        return {"ok": True}
