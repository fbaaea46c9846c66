"""Switchboard's MAX channel (a MAX bot's dialogs). See docs/max.md."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from switchboard import Channel, hookimpl
from switchboard_max import tables
from switchboard_max.channel import MaxChannel, normalize_max
from switchboard_max.settings import MaxSettings

__all__ = ["PLUGIN", "WEBHOOK_PATH", "MaxChannel", "MaxPlugin", "MaxSettings"]

WEBHOOK_PATH = "/max/webhook"
MAX_BODY = 1_000_000  # a webhook body larger than this is refused
log = logging.getLogger("switchboard.channel.max")


class MaxPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "max"

    def __init__(self) -> None:
        self.channel = MaxChannel()

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(MaxSettings)

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(files("switchboard_max") / "migrations", tables.metadata)

    @hookimpl
    def register_address_kinds(self, register: Any) -> None:
        register("max", normalize_max)

    @hookimpl
    def register_channels(self, register: Callable[[Channel], None]) -> None:
        register(self.channel)

    @hookimpl
    def register_routes(self, router: APIRouter) -> None:
        channel = self.channel

        async def webhook(request: Request) -> Response:
            """MAX's webhook: the ``X-Max-Bot-Api-Secret`` header checked in constant time,
            the body kept, then 200 (MAX sends it again otherwise)."""
            settings = channel.settings
            if settings is None or settings.mode != "webhook" or channel.kept is None:
                raise HTTPException(404, "the MAX channel is not running in webhook mode")
            given = request.headers.get("x-max-bot-api-secret") or ""
            if not hmac.compare_digest(given.encode(), settings.secret.encode()):
                log.warning("a MAX webhook with a missing or wrong secret")
                raise HTTPException(403, "missing or wrong X-Max-Bot-Api-Secret")
            body = await request.body()
            if len(body) > MAX_BODY:
                raise HTTPException(413, "webhook body too large")
            try:
                update = json.loads(body)
            except ValueError:
                raise HTTPException(400, "not JSON") from None
            if not isinstance(update, dict) or not isinstance(update.get("update_type"), str):
                raise HTTPException(422, "not a MAX update")
            await channel.accept(body)  # kept before MAX gets its 200, read right after
            return Response(b'{"ok":true}', media_type="application/json")

        # a plain route: the body is read once, as bytes (the runner's middleware applies)
        router.add_route(WEBHOOK_PATH, webhook, methods=["POST"], include_in_schema=False)


PLUGIN = MaxPlugin()
