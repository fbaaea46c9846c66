"""``/api/lists``, ``/api/mailings`` and the ``/t/...`` links mailing recipients click."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import Field

from switchboard.api.common import (
    ONE_LINE,
    Body,
    Caller,
    Core,
    RowId,
    run,
    supervisor_only,
)

router = APIRouter(prefix="/api")

# -- lists and mailings -------------------------------------------------------------------


class ListChange(Body):
    add: list[RowId] = Field(default_factory=list, max_length=10_000)
    remove: list[RowId] = Field(default_factory=list, max_length=10_000)


class MailingIn(Body):
    name: str = Field(min_length=1, max_length=200, pattern=ONE_LINE)
    channel: str
    template: str
    audience: str = Field(min_length=1, max_length=100, description="a list's name")
    variables: dict[str, Any] = Field(default_factory=dict)
    scheduled_at: datetime | None = None
    rate_per_minute: float | None = Field(default=None, gt=0)


@router.get("/lists")
async def get_lists(sb: Core, who: Caller) -> dict[str, Any]:
    """Every list with its number of contacts."""
    return {"items": [{"name": n, "size": k} for n, k in (await run(sb.mailings.lists)).items()]}


@router.get("/lists/{name}")
async def get_list(name: str, sb: Core, who: Caller) -> dict[str, Any]:
    return {"name": name, "contact_ids": await run(sb.mailings.members, name)}


@router.post("/lists/{name}")
async def change_list(name: str, body: ListChange, sb: Core, who: Caller) -> dict[str, Any]:
    """Add contacts to a list (created on first use) and remove others."""
    supervisor_only(who, "lists and mailings")
    size = await run(sb.mailings.change_list, name, body.add, body.remove)
    return {"name": name, "size": size}


@router.post("/mailings", status_code=201)
async def create_mailing(body: MailingIn, sb: Core, who: Caller) -> dict[str, Any]:
    """Queue a template to every contact on a list (unsubscribed ones and those without an
    address on the channel are skipped); statistics as ``GET /api/mailings/{id}``."""
    supervisor_only(who, "lists and mailings")
    stats = await run(
        sb.mailings.create,
        name=body.name,
        channel=body.channel,
        template=body.template,
        audience=body.audience,
        variables=body.variables,
        scheduled_at=body.scheduled_at,
        rate_per_minute=body.rate_per_minute,
        agent=who.agent,
    )
    sb.outbox.wake()
    return stats  # type: ignore[no-any-return]


@router.get("/mailings")
async def list_mailings(sb: Core, who: Caller) -> dict[str, Any]:
    return {"items": await run(sb.mailings.list_mailings)}


@router.get("/mailings/{mailing_id}")
async def get_mailing(mailing_id: RowId, sb: Core, who: Caller) -> dict[str, Any]:
    """Progress and results: queued, sent, failed, bounced, opened, clicked, replied,
    unsubscribed."""
    return await run(sb.mailings.stats, mailing_id)  # type: ignore[no-any-return]


# -- what mailing recipients click (no token: the link itself is signed) ------------------

tracking = APIRouter(prefix="/t", include_in_schema=False)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@tracking.get("/{token}/open.gif")
async def track_open(token: str, sb: Core) -> Response:
    await run(sb.mailings.opened, token)  # a forged token is not counted, still a pixel
    return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})


@tracking.get("/{token}/click")
async def track_click(token: str, sb: Core, u: str = "", s: str = "") -> Response:
    if not u.startswith(("http://", "https://")) or not await run(sb.mailings.clicked, token, u, s):
        raise HTTPException(404, "unknown or forged link")
    return RedirectResponse(u, status_code=302)


@tracking.get("/{token}/unsubscribe", response_class=HTMLResponse)
async def unsubscribe_page(token: str, sb: Core) -> HTMLResponse:
    """A page with one button: link checkers that follow GETs unsubscribe no one."""
    links = sb.mailings.links
    if links is None or links.recipient(token) is None:
        raise HTTPException(404, "unknown or forged link")
    return HTMLResponse(
        "<!doctype html><title>Unsubscribe</title><form method=post>"
        "<input type=hidden name=List-Unsubscribe value=One-Click>"
        "<p>Stop receiving these messages?</p><button>Unsubscribe</button></form>"
    )


@tracking.post("/{token}/unsubscribe", response_class=HTMLResponse)
async def unsubscribe(token: str, sb: Core) -> HTMLResponse:
    """RFC 8058 one-click (``List-Unsubscribe=One-Click`` in the body) and the page's form."""
    if not await run(sb.mailings.unsubscribe, token):
        raise HTTPException(404, "unknown or forged link")
    return HTMLResponse("<!doctype html><title>Unsubscribed</title><p>You are unsubscribed.</p>")
