"""Switchboard's Bitrix24 connector, as a Bitrix24 local application: calls on Bitrix24's
own call card, recordings, click-to-call from Bitrix24, messages and emails on the
timeline, Bitrix24's contacts for screen pops. See docs/crm-bitrix24.md."""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response

from switchboard import SkipEvent, Switchboard, SwitchboardError, Unavailable, hookimpl
from switchboard.crm import CrmError, CrmPlugin
from switchboard_bitrix24 import tables
from switchboard_bitrix24.client import Installation
from switchboard_bitrix24.connector import Bitrix24Connector
from switchboard_bitrix24.settings import Bitrix24Settings

__all__ = ["PLUGIN", "Bitrix24Connector", "Bitrix24Plugin", "Bitrix24Settings", "form_parts"]

INSTALL_PATH = "/bitrix24/install"
EVENTS_PATH = "/bitrix24/events"
MAX_FORM = 64 * 1024  # Bitrix24's event posts are a few hundred bytes
log = logging.getLogger("switchboard.bitrix24")


def form_parts(body: bytes) -> dict[str, dict[str, str]]:
    """A form-encoded Bitrix24 post (``event=...&data[KEY]=...&auth[KEY]=...``) as
    ``{"": {"event": ...}, "data": {...}, "auth": {...}}``; nested keys past one level and
    repeated keys keep their first value."""
    parts: dict[str, dict[str, str]] = {"": {}, "data": {}, "auth": {}}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), max_num_fields=200):
        outer, _, inner = key.partition("[")
        if not inner:
            parts[""].setdefault(key, value)
        elif outer in ("data", "auth"):
            parts[outer].setdefault(inner.split("]", 1)[0], value)
    return parts


class Bitrix24Plugin(CrmPlugin):
    """The plugin's hooks: :class:`switchboard.crm.CrmPlugin`'s, and the two routes
    Bitrix24 posts to (the installation, and ``OnExternalCallStart``)."""

    plugin_name = "bitrix24"
    settings_class = Bitrix24Settings
    package = "switchboard_bitrix24"
    metadata = tables.metadata

    def make_connector(self, core: Switchboard, settings: Any) -> Bitrix24Connector:
        return Bitrix24Connector(core, settings)

    def _connector(self) -> Bitrix24Connector:
        if not isinstance(self.connector, Bitrix24Connector) or not self.connector.settings.app:
            raise HTTPException(404, "no Bitrix24 application is configured")
        return self.connector

    @staticmethod
    async def _form(request: Request) -> dict[str, dict[str, str]]:
        body = await request.body()
        if len(body) > MAX_FORM:
            raise HTTPException(413, "body too large")
        return form_parts(body)

    @hookimpl
    def register_routes(self, router: APIRouter) -> None:
        @router.post(INSTALL_PATH, include_in_schema=False)
        async def install(request: Request) -> Response:
            """``ONAPPINSTALL``: the portal hands the application its tokens. Kept only
            when they work on the configured portal (checked with ``app.info``)."""
            connector = self._connector()
            auth = (await self._form(request))["auth"]
            try:
                installation = Installation.from_auth(auth)
            except (KeyError, ValueError):
                raise HTTPException(422, "not an installation: auth[...] incomplete") from None
            try:
                await connector.api.install(installation)
            except (CrmError, SkipEvent) as exc:
                log.warning("a Bitrix24 installation refused: %s", exc)
                raise HTTPException(403, "the installation's token does not work here") from None
            return Response("installed", media_type="text/plain")

        @router.post(EVENTS_PATH, include_in_schema=False)
        async def events(request: Request) -> dict[str, Any]:
            """Events bound with ``event.bind``: ``ONEXTERNALCALLSTART`` places the call
            the Bitrix24 user asked for (checked: ``auth[application_token]``)."""
            connector = self._connector()
            form = await self._form(request)
            known = await connector.api.installed_or_none()
            token = form["auth"].get("application_token", "")
            if known is None or not hmac.compare_digest(
                token.encode(), known.application_token.encode()
            ):
                raise HTTPException(403, "wrong or missing auth[application_token]")
            event = form[""].get("event", "").upper()
            if event != "ONEXTERNALCALLSTART" or not connector.settings.click_to_call:
                return {"ok": True, "ignored": event[:64]}
            try:
                call_id = await connector.external_call_start(form["data"])
            except SkipEvent as exc:
                raise HTTPException(422, str(exc)) from None
            except Unavailable as exc:  # no voice channel runs
                log.warning("click-to-call from Bitrix24 failed: %s", exc)
                raise HTTPException(503, str(exc)) from None
            except SwitchboardError as exc:  # a number that is not one...
                raise HTTPException(422, str(exc)) from None
            return {"ok": True, "call_id": call_id}


PLUGIN = Bitrix24Plugin()
