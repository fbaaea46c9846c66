"""Switchboard's VK channel (community messages). See docs/vk.md."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from switchboard import Channel, hookimpl
from switchboard_vk import tables
from switchboard_vk.channel import VkChannel, normalize_vk
from switchboard_vk.settings import VkSettings

__all__ = ["CALLBACK_PATH", "PLUGIN", "VkChannel", "VkPlugin", "VkSettings"]

CALLBACK_PATH = "/vk/callback"
MAX_BODY = 1_000_000  # a Callback API body larger than this is refused
log = logging.getLogger("switchboard.channel.vk")


class VkPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "vk"

    def __init__(self) -> None:
        self.channel = VkChannel()

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(VkSettings)

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(files("switchboard_vk") / "migrations", tables.metadata)

    @hookimpl
    def register_address_kinds(self, register: Any) -> None:
        register("vk", normalize_vk)

    @hookimpl
    def register_channels(self, register: Callable[[Channel], None]) -> None:
        register(self.channel)

    @hookimpl
    def register_routes(self, router: APIRouter) -> None:
        channel = self.channel

        async def callback(request: Request) -> Response:
            """VK's Callback API: ``confirmation`` answered with the configured code; any
            other event answered ``ok`` once its body is kept (VK sends it again until it
            gets ``ok``). A wrong ``secret`` or community is 403 and nothing is kept."""
            settings = channel.settings
            if settings is None or settings.mode != "callback" or channel.kept is None:
                raise HTTPException(404, "the VK channel is not running in callback mode")
            body = await request.body()
            if len(body) > MAX_BODY:
                raise HTTPException(413, "callback body too large")
            try:
                update = json.loads(body)
            except ValueError:
                raise HTTPException(400, "not JSON") from None
            if not isinstance(update, dict) or not isinstance(update.get("type"), str):
                raise HTTPException(422, "not a VK Callback API event")
            if update.get("group_id") != settings.group_id:
                raise HTTPException(403, "not this community's event")
            secret = update.get("secret")
            if not isinstance(secret, str) or not hmac.compare_digest(
                secret.encode(), settings.secret.encode()
            ):
                # VK sends the secret with every event, the confirmation request included
                log.warning("a VK callback with a missing or wrong secret (%d bytes)", len(body))
                raise HTTPException(403, "missing or wrong secret")
            if update["type"] == "confirmation":
                return Response(settings.confirmation_code, media_type="text/plain")
            await channel.accept(body)  # kept before VK gets its ok, read right after
            return Response(b"ok", media_type="text/plain")

        # a plain route: the body is read once, as bytes (the runner's middleware applies)
        router.add_route(CALLBACK_PATH, callback, methods=["POST"], include_in_schema=False)


PLUGIN = VkPlugin()
