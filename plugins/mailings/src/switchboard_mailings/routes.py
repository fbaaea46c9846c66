"""``/api/lists``, ``/api/mailings`` and the ``/t/...`` links mailing recipients click,
registered on the runner through the ``register_routes`` hook."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import Field

from switchboard.web import ONE_LINE, Body, Caller, RowId, supervisor_only
from switchboard_mailings.mailings import Mailings

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
#: A token is ``m<id>.<signature>`` (or ``<id>.<signature>`` before 0.2): short, one segment.
TOKEN = r"^m?[0-9]{1,11}\.[A-Za-z0-9_-]{1,32}$"


class ListChange(Body):
    add: list[RowId] = Field(default_factory=list, max_length=10_000)
    remove: list[RowId] = Field(default_factory=list, max_length=10_000)


class MailingIn(Body):
    name: str = Field(min_length=1, max_length=200, pattern=ONE_LINE)
    channel: str = Field(max_length=64)
    template: str = Field(max_length=200)
    audience: str = Field(min_length=1, max_length=100, description="a list's name")
    variables: dict[str, Any] = Field(default_factory=dict)
    scheduled_at: datetime | None = None
    rate_per_minute: float | None = Field(default=None, gt=0)


def api_router(mailings: Mailings) -> APIRouter:
    """The authenticated part: lists and mailings."""
    router = APIRouter(prefix="/api", tags=["mailings"])

    @router.get("/lists")
    async def get_lists(who: Caller) -> dict[str, Any]:
        """Every list with its number of contacts."""
        sizes = await mailings.lists()
        return {"items": [{"name": n, "size": k} for n, k in sizes.items()]}

    @router.get("/lists/{name}")
    async def get_list(name: str, who: Caller) -> dict[str, Any]:
        return {"name": name, "contact_ids": await mailings.members(name)}

    @router.post("/lists/{name}")
    async def change_list(name: str, body: ListChange, who: Caller) -> dict[str, Any]:
        """Add contacts to a list (created on first use) and remove others."""
        supervisor_only(who, "lists and mailings")
        size = await mailings.change_list(name, body.add, body.remove)
        return {"name": name, "size": size}

    @router.post("/mailings", status_code=201)
    async def create_mailing(body: MailingIn, who: Caller) -> dict[str, Any]:
        """Queue a template to every contact on a list (unsubscribed ones and those without
        an address on the channel are skipped); statistics as ``GET /api/mailings/{id}``."""
        supervisor_only(who, "lists and mailings")
        return await mailings.create(
            name=body.name,
            channel=body.channel,
            template=body.template,
            audience=body.audience,
            variables=body.variables,
            scheduled_at=body.scheduled_at,
            rate_per_minute=body.rate_per_minute,
            agent=who.agent,
        )

    @router.get("/mailings")
    async def list_mailings(who: Caller) -> dict[str, Any]:
        return {"items": await mailings.list_mailings()}

    @router.get("/mailings/{mailing_id}")
    async def get_mailing(mailing_id: RowId, who: Caller) -> dict[str, Any]:
        """Progress and results: queued, sent, failed, bounced, opened, clicked, replied,
        unsubscribed."""
        return await mailings.stats(mailing_id)

    return router


def tracking_router(mailings: Mailings) -> APIRouter:
    """What recipients click: no bearer token, the link itself is signed."""
    router = APIRouter(prefix="/t", include_in_schema=False)

    @router.get("/{token}/open.gif")
    async def track_open(token: str) -> Response:
        await mailings.opened(token)  # a forged token is not counted, still a pixel
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    @router.get("/{token}/click")
    async def track_click(token: str, u: str = "", s: str = "") -> Response:
        genuine = u.startswith(("http://", "https://")) and await mailings.clicked(token, u, s)
        if not genuine:
            raise HTTPException(404, "unknown or forged link")
        return RedirectResponse(u, status_code=302)

    @router.get("/{token}/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe_page(token: str) -> HTMLResponse:
        """A page with one button: link checkers that follow GETs unsubscribe no one."""
        if not mailings.genuine(token):
            raise HTTPException(404, "unknown or forged link")
        return HTMLResponse(
            "<!doctype html><title>Unsubscribe</title><form method=post>"
            "<input type=hidden name=List-Unsubscribe value=One-Click>"
            "<p>Stop receiving these messages?</p><button>Unsubscribe</button></form>"
        )

    @router.post("/{token}/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe(token: str) -> HTMLResponse:
        """RFC 8058 one-click (``List-Unsubscribe=One-Click`` in the body) and the form."""
        if not await mailings.unsubscribe(token):
            raise HTTPException(404, "unknown or forged link")
        return HTMLResponse(
            "<!doctype html><title>Unsubscribed</title><p>You are unsubscribed.</p>"
        )

    return router
