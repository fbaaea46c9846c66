"""Switchboard's Facebook Messenger and Instagram Direct channels (Meta's Messenger
Platform). See docs/meta.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from switchboard import Channel, hookimpl
from switchboard.web import signed, subscription_challenge
from switchboard_meta import tables
from switchboard_meta.channel import (
    INSTAGRAM,
    MESSENGER,
    OBJECTS,
    MetaChannel,
    normalize_user_id,
)
from switchboard_meta.settings import MetaSettings, PageSettings

__all__ = [
    "INSTAGRAM",
    "MESSENGER",
    "PLUGIN",
    "WEBHOOK_PATH",
    "MetaChannel",
    "MetaPlugin",
    "MetaSettings",
    "PageSettings",
]

WEBHOOK_PATH = "/meta/webhook"
MAX_BODY = 1_000_000  # a webhook body larger than this is refused (Meta's are small)
OK = b'{"ok":true}'
log = logging.getLogger("switchboard.channel.meta")


class MetaPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "meta"

    def __init__(self) -> None:
        self.channels = {name: MetaChannel(name) for name in (MESSENGER, INSTAGRAM)}

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(MetaSettings)

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(files("switchboard_meta") / "migrations", tables.metadata)

    @hookimpl
    def register_address_kinds(self, register: Any) -> None:
        register(MESSENGER, normalize_user_id)  # a Page-scoped id (PSID)
        register(INSTAGRAM, normalize_user_id)  # an Instagram-scoped id (IGSID)

    @hookimpl
    def register_channels(self, register: Callable[[Channel], None]) -> None:
        for channel in self.channels.values():
            register(channel)

    def _settings(self) -> MetaSettings | None:
        """The settings, from whichever channel runs (both have the same)."""
        for channel in self.channels.values():
            if channel.settings is not None:
                return channel.settings
        return None

    @hookimpl
    def register_routes(self, router: APIRouter) -> None:
        @router.get(WEBHOOK_PATH, include_in_schema=False)
        async def verify(request: Request) -> Response:
            """Meta's subscription handshake: echo hub.challenge for our verify token."""
            settings = self._settings()
            if settings is None:
                raise HTTPException(404, "no Meta channel is running")
            challenge = subscription_challenge(request.query_params, settings.verify_token)
            if challenge is None:
                raise HTTPException(403, "wrong hub.mode or hub.verify_token")
            return Response(challenge, media_type="text/plain")

        async def webhook(request: Request) -> Response:
            """Signed updates from Meta (``object`` ``page``: Messenger, ``instagram``):
            checked on the raw bytes, kept as they came (a row of the channel's table),
            then 200 (any other answer makes Meta send them again)."""
            settings = self._settings()
            if settings is None:
                raise HTTPException(503, "no Meta channel is running")
            body = await request.body()
            if len(body) > MAX_BODY:
                raise HTTPException(413, "webhook body too large")
            if not signed(body, request.headers.get("x-hub-signature-256"), settings.app_secret):
                raise HTTPException(403, "missing or wrong X-Hub-Signature-256")
            try:
                payload = json.loads(body)
            except ValueError:
                raise HTTPException(400, "not JSON") from None
            kind = payload.get("object") if isinstance(payload, dict) else None
            if kind not in OBJECTS:
                log.warning("a signed webhook that is not a messaging update (%d bytes)", len(body))
                raise HTTPException(422, "not a Page or Instagram messaging update")
            channel = self.channels[OBJECTS[kind]]
            if channel.settings is None:  # no page asks for it: a retry would not help
                log.warning("a %s webhook, and no page has that channel: dropped", channel.name)
                return Response(OK, media_type="application/json")
            if channel.kept is None:  # failing or restarting: Meta sends it again
                raise HTTPException(503, f"the {channel.name} channel is not running")
            await channel.accept(body)  # kept before Meta gets its 200, read right after
            return Response(OK, media_type="application/json")

        # a plain route: the body is read once, as bytes (the runner's middleware applies)
        router.add_route(WEBHOOK_PATH, webhook, methods=["POST"], include_in_schema=False)


PLUGIN = MetaPlugin()
