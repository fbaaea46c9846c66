"""Switchboard's WhatsApp channel (WhatsApp Business Cloud API). See docs/whatsapp.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from switchboard import Channel, Interaction, hookimpl
from switchboard.web import signed, subscription_challenge
from switchboard_whatsapp import tables
from switchboard_whatsapp.channel import WhatsAppChannel, normalize_bsuid
from switchboard_whatsapp.settings import WhatsAppSettings

__all__ = ["PLUGIN", "WEBHOOK_PATH", "WhatsAppChannel", "WhatsAppPlugin", "WhatsAppSettings"]

WEBHOOK_PATH = "/whatsapp/webhook"
BUSINESS_ACCOUNT = "whatsapp_business_account"  # the "object" of a WhatsApp webhook
MAX_BODY = 1_000_000  # a webhook body larger than this is refused (Meta's are small)
log = logging.getLogger("switchboard.channel.whatsapp")


class WhatsAppPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "whatsapp"

    def __init__(self) -> None:
        self.channel = WhatsAppChannel()

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(WhatsAppSettings)

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(files("switchboard_whatsapp") / "migrations", tables.metadata)

    @hookimpl
    def register_address_kinds(self, register: Any) -> None:
        register("whatsapp", normalize_bsuid)  # users who hide their number (BSUID)

    @hookimpl
    def register_channels(self, register: Callable[[Channel], None]) -> None:
        register(self.channel)

    @hookimpl
    async def message_sent(self, interaction: Interaction) -> None:
        if interaction.channel == self.channel.name and interaction.external_id:
            await self.channel.sent(interaction.external_id)

    @hookimpl
    def register_routes(self, router: APIRouter) -> None:
        channel = self.channel

        @router.get(WEBHOOK_PATH, include_in_schema=False)
        async def verify(request: Request) -> Response:
            """Meta's subscription handshake: echo hub.challenge for our verify token."""
            settings = channel.settings
            if settings is None:
                raise HTTPException(404, "the WhatsApp channel is not running")
            challenge = subscription_challenge(request.query_params, settings.verify_token)
            if challenge is None:
                raise HTTPException(403, "wrong hub.mode or hub.verify_token")
            return Response(challenge, media_type="text/plain")

        async def webhook(request: Request) -> Response:
            """Signed updates from Meta: checked on the raw bytes, kept as they came (one
            row of the plugin's table), then 200 (any other answer makes Meta send them
            again); the channel's reader stores their messages and statuses."""
            settings = channel.settings
            if settings is None or channel.ctx is None:
                raise HTTPException(404, "the WhatsApp channel is not running")
            body = await request.body()
            if len(body) > MAX_BODY:
                raise HTTPException(413, "webhook body too large")
            if not signed(body, request.headers.get("x-hub-signature-256"), settings.app_secret):
                raise HTTPException(403, "missing or wrong X-Hub-Signature-256")
            try:
                payload = json.loads(body)
            except ValueError:
                raise HTTPException(400, "not JSON") from None
            if not isinstance(payload, dict) or payload.get("object") != BUSINESS_ACCOUNT:
                log.warning("a signed webhook that is not a WhatsApp update (%d bytes)", len(body))
                raise HTTPException(422, "not a WhatsApp Business Account update")
            await channel.accept(body)  # kept before Meta gets its 200, read right after
            return Response(b'{"ok":true}', media_type="application/json")

        # a plain route: the body is read once, as bytes, with none of FastAPI's parameter
        # machinery (the runner's middleware still applies)
        router.add_route(WEBHOOK_PATH, webhook, methods=["POST"], include_in_schema=False)


PLUGIN = WhatsAppPlugin()
