"""``/api/calls``: click-to-call, the call log, a call and its recording."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import Field, model_validator

from switchboard.address import Address
from switchboard.api.common import (
    Accepted,
    Body,
    Caller,
    Core,
    RowId,
    agent_by_name,
    call_json,
    parse_address,
)
from switchboard.errors import Invalid
from switchboard.events import to_json
from switchboard.files import safe_filename
from switchboard.models import Agent

router = APIRouter(prefix="/api")
links = APIRouter()  # outside /api: no bearer token, the signed link is the key


class CallIn(Body):
    agent: str = Field(description="agent name or extension")
    to: str | None = None
    contact_id: RowId | None = None

    @model_validator(mode="after")
    def _one_of(self) -> CallIn:
        if (self.to is None) == (self.contact_id is None):
            raise ValueError("give to or contact_id (not both)")
        return self


# -- calls ----------------------------------------------------------------------------------


@router.post("/calls", status_code=202)
async def click_to_call(body: CallIn, sb: Core, who: Caller) -> Accepted:
    """Ring the agent's phone; when the agent answers, call the customer and bridge."""
    agent = await agent_by_name(sb, body.agent, "body.agent")
    to = parse_address(sb, body.to, "body.to") if body.to is not None else None
    call_id = await sb.place_call(who, agent, to=to, contact_id=body.contact_id)
    return Accepted(id=call_id, status="ringing")


@router.get("/calls")
async def list_calls(
    sb: Core,
    who: Caller,
    contact_id: RowId | None = None,
    agent: str | None = Query(default=None, description="agent name or extension"),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    q: str | None = Query(
        default=None,
        max_length=200,
        description="words said in the call (its transcript): needs a plugin that "
        "searches calls, such as switchboard-speech; only calls the caller may hear",
    ),
) -> dict[str, Any]:
    agent_id = (await agent_by_name(sb, agent, "query.agent")).id if agent else None
    if q is not None:
        found = await sb.search_calls(
            who,
            q,
            limit=limit,
            since=since,
            until=until,
            agent_id=agent_id,
            contact_id=contact_id,
        )
        return {
            "items": [
                {**call_json(call, who), "matches": [to_json(m) for m in hit.matches]}
                for call, hit in found
            ]
        }
    calls = await sb.find_calls(
        contact_id=contact_id,
        agent_id=agent_id,
        since=since,
        until=until,
        limit=limit,
    )
    return {"items": [call_json(c, who) for c in calls]}


@router.get("/calls/{call_id:path}/recording", response_class=FileResponse)
async def get_recording(call_id: str, sb: Core, who: Caller) -> FileResponse:
    """The call's recording as ``audio/wav``: for the agent who took the call, supervisors
    and admins."""
    return recording_response(call_id, await sb.recording_file(who, call_id))


def recording_response(call_id: str, path: Path) -> FileResponse:
    """A recording as a WAV download named after its call (the name made safe)."""
    return FileResponse(
        path, media_type="audio/wav", filename=f"{safe_filename(call_id, 'call')}.wav"
    )


@links.get("/recordings/{token}", response_class=FileResponse)
async def shared_recording(token: str, sb: Core) -> FileResponse:
    """A recording through a signed, expiring link (``sb.recording_link``; a CRM's call
    card): no bearer token, the link is the key. 404 for a forged or expired one."""
    call_id, path = await sb.shared_recording(token)
    return recording_response(call_id, path)


class TransferIn(Body):
    to: str = Field(description="an agent's name or extension, or a phone number")


@router.post("/calls/{call_id:path}/hold")
async def hold_call(call_id: str, sb: Core, who: Caller) -> dict[str, Any]:
    """Put the customer on hold (music on hold; the agent hears nothing)."""
    return call_json(await sb.control_call(who, call_id, "hold"), who)


@router.post("/calls/{call_id:path}/resume")
async def resume_call(call_id: str, sb: Core, who: Caller) -> dict[str, Any]:
    """Take the customer off hold."""
    return call_json(await sb.control_call(who, call_id, "resume"), who)


async def _target(sb: Any, body: TransferIn) -> Agent | Address:
    """An agent (by name or extension), else a number (422 naming ``body.to``)."""
    try:
        found: Agent | Address = await sb.call_target(body.to)
    except Invalid as exc:
        raise HTTPException(
            422, [{"loc": ["body.to"], "msg": str(exc), "type": "address"}]
        ) from None
    return found


@router.post("/calls/{call_id:path}/transfer")
async def transfer_call(call_id: str, body: TransferIn, sb: Core, who: Caller) -> dict[str, Any]:
    """Hand the customer to another agent or a number: answers once they talk (the
    record's agent is the new one), 422 if nobody answered (the call stays as it was).
    During a consultation with them: completes it (an attended transfer)."""
    to = await _target(sb, body)
    return call_json(await sb.control_call(who, call_id, "transfer", to), who)


@router.post("/calls/{call_id:path}/consult")
async def consult_call(call_id: str, body: TransferIn, sb: Core, who: Caller) -> dict[str, Any]:
    """Attended transfer, first step: the customer hears music while the agent talks to
    another agent or a number; answers once they do (422 if they did not answer).
    ``/transfer`` to them completes it, ``/resume`` goes back to the customer."""
    to = await _target(sb, body)
    return call_json(await sb.control_call(who, call_id, "consult", to), who)


class SuperviseIn(Body):
    mode: str = Field(max_length=20)


@router.post("/calls/{call_id:path}/supervise")
async def supervise_call(call_id: str, body: SuperviseIn, sb: Core, who: Caller) -> dict[str, Any]:
    """A supervisor joins the call from their own phone or softphone (rung like any call):
    ``listen``, ``whisper`` (the agent hears them) or ``barge`` (both do); again to change
    the mode. Answers once they are in."""
    return call_json(await sb.supervise_call(who, call_id, body.mode), who)


@router.get("/calls/{call_id:path}")
async def get_call(call_id: str, sb: Core, who: Caller) -> dict[str, Any]:
    return call_json(await sb.call(call_id), who)
