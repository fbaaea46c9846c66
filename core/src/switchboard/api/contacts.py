"""``/api/contacts``: search, create, look up, change, the timeline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import Field

from switchboard.api.common import (
    MAX_ROW_ID,
    ONE_LINE,
    Body,
    Caller,
    Core,
    RowId,
    agent_by_name,
    call_json,
    parse_address,
    parse_addresses,
    run,
)
from switchboard.auth import Principal
from switchboard.events import to_json
from switchboard.files import attachments, shown_as
from switchboard.models import Interaction
from switchboard.service import Timeline

router = APIRouter(prefix="/api")


class ContactIn(Body):
    name: str = Field(min_length=1, max_length=300, pattern=ONE_LINE)
    company: str | None = Field(default=None, max_length=300, pattern=ONE_LINE)
    addresses: list[str] = Field(default_factory=list, description="phone:, email:, telegram:")
    owner_agent: str | None = Field(default=None, description="agent name")


class ContactPatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=300, pattern=ONE_LINE)
    company: str | None = Field(default=None, max_length=300, pattern=ONE_LINE)
    owner_agent: str | None = None
    add_addresses: list[str] = Field(default_factory=list)
    remove_addresses: list[str] = Field(default_factory=list)


# -- contacts -------------------------------------------------------------------------------


@router.get("/contacts")
async def list_contacts(
    sb: Core,
    who: Caller,
    q: str | None = Query(default=None, description="name, company, phone (any form) or email"),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_ROW_ID),
) -> dict[str, Any]:
    items, total = await sb.search_contacts(q, limit=limit, offset=offset)
    return {"items": [to_json(c) for c in items], "total": total, "limit": limit, "offset": offset}


@router.post("/contacts", status_code=201)
async def create_contact(body: ContactIn, sb: Core, who: Caller) -> dict[str, Any]:
    addresses = parse_addresses(sb, body.addresses, "body.addresses")
    owner = (
        await agent_by_name(sb, body.owner_agent, "body.owner_agent") if body.owner_agent else None
    )
    contact = await sb.create_contact(
        body.name, addresses, company=body.company, owner_agent_id=owner.id if owner else None
    )
    return to_json(contact)  # type: ignore[no-any-return]


@router.get("/contacts/lookup")
async def lookup_contact(
    sb: Core,
    who: Caller,
    address: str = Query(description="any form of a phone number, an email, telegram:ID"),
) -> dict[str, Any]:
    addr = parse_address(sb, address, "query.address")
    contact = await run(sb.store.find_contact, addr)
    if contact is None:
        raise HTTPException(404, f"no contact with address {addr}")
    return to_json(contact)  # type: ignore[no-any-return]


@router.get("/contacts/{contact_id}")
async def get_contact(contact_id: RowId, sb: Core, who: Caller) -> dict[str, Any]:
    """The card, and ``windows``: per channel with a customer-service window, when free
    messages to the contact stop being allowed (None: never opened)."""
    card: dict[str, Any] = to_json(await sb.contact(contact_id))
    ends = await sb.windows(contact_id)
    card["windows"] = {ch: end.isoformat() if end else None for ch, end in ends.items()}
    return card


class MergeIn(Body):
    address: str = Field(max_length=320, description="an address of the same person")


@router.post("/contacts/{contact_id}/merge")
async def merge_contact(contact_id: RowId, body: MergeIn, sb: Core, who: Caller) -> dict[str, Any]:
    """The contact also has ``address``: the card that holds it is merged into this one
    (timeline and addresses move), or the address is added; the merged contact."""
    merged = await sb.merge_into(contact_id, parse_address(sb, body.address, "body.address"))
    return to_json(merged)  # type: ignore[no-any-return]


@router.patch("/contacts/{contact_id}")
async def patch_contact(
    contact_id: RowId, body: ContactPatch, sb: Core, who: Caller
) -> dict[str, Any]:
    fields = body.model_fields_set
    changes: dict[str, Any] = {}
    if "name" in fields and body.name is not None:
        changes["name"] = body.name
    if "company" in fields:
        changes["company"] = body.company
    if "owner_agent" in fields:
        changes["owner"] = (
            await agent_by_name(sb, body.owner_agent, "body.owner_agent")
            if body.owner_agent
            else None
        )
    contact = await sb.update_contact(
        contact_id,
        add=parse_addresses(sb, body.add_addresses, "body.add_addresses"),
        remove=parse_addresses(sb, body.remove_addresses, "body.remove_addresses"),
        **changes,
    )
    return to_json(contact)  # type: ignore[no-any-return]


@router.get("/contacts/{contact_id}/timeline")
async def timeline(
    contact_id: RowId,
    sb: Core,
    who: Caller,
    limit: int = Query(default=50, ge=1, le=500),
    before: int | None = Query(
        default=None, ge=1, le=MAX_ROW_ID, description="next_before of the previous page"
    ),
) -> dict[str, Any]:
    """Messages, emails and calls, newest first; page on with ``before``."""
    page = await sb.timeline(contact_id, limit=limit, before=before)
    return {"items": timeline_json(page, who), "next_before": page.next_before}


def timeline_json(page: Timeline, who: Principal) -> list[dict[str, Any]]:
    """A timeline page's items as JSON, a call's with its record (``call``)."""
    out = []
    for item in page.items:
        data = to_json(item)
        if item.id in page.calls:
            data["call"] = call_json(page.calls[item.id], who)
        files = attachments_json(item, "/api")
        if files:
            data["attachments"] = files
        out.append(data)
    return out


def attachments_json(item: Interaction, prefix: str) -> list[dict[str, Any]]:
    """The files a message carried, each with the URL that serves it (under ``prefix``:
    ``/api``, or ``/console`` for the console's session) and how a browser shows it
    (``shown``: image, audio, video, or None for a download), or ``note`` saying why it
    was not kept."""
    return [
        {
            "index": a.index,
            "name": a.name,
            "mime_type": a.mime_type,
            "size": a.size,
            "url": f"{prefix}/interactions/{item.id}/attachments/{a.index}" if a.path else None,
            "shown": shown_as(a.mime_type) if a.path else None,
            "note": a.note,
        }
        for a in attachments(item.meta)
    ]
