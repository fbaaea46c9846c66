"""``/api/calls``: click-to-call, the call log, a call and its recording."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import Field, model_validator

from switchboard.api.common import (
    Accepted,
    Body,
    Caller,
    Core,
    RowId,
    agent_by_name,
    call_json,
    call_or_404,
    can_hear,
    contact_or_404,
    parse_address,
    run,
)
from switchboard.auth import Principal
from switchboard.channels import VoiceChannel
from switchboard.core import ChannelState, Switchboard
from switchboard.files import safe_filename

router = APIRouter(prefix="/api")


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
    return Accepted(id=await place_call(sb, who, body), status="ringing")


async def place_call(sb: Switchboard, who: Principal, body: CallIn) -> str:
    """Click-to-call through the first running voice channel: its call id; HTTPException
    when not allowed or not possible (also used by the console's pages)."""
    agent = await agent_by_name(sb, body.agent, "body.agent")
    if not who.sees_all and who.agent_id != agent.id:
        raise HTTPException(403, "agents may place calls only from their own extension")
    if body.contact_id is not None:
        contact = await contact_or_404(sb, body.contact_id)
        phones = [a for a in contact.addresses if a.kind == "phone"]
        if not phones:
            raise HTTPException(422, f"contact {contact.id} has no phone number")
        target = phones[0]
    else:
        assert body.to is not None
        target = parse_address(sb, body.to, "body.to")
    channel = voice_channel(sb)
    if channel is None:
        raise HTTPException(503, "no voice channel is running")
    call_id: str = await channel.dial(agent, target)
    return call_id


def voice_channel(sb: Switchboard) -> VoiceChannel | None:
    """The first running channel that can place calls, if any."""
    for handle in sb.channels.values():
        if handle.state is ChannelState.RUNNING and isinstance(handle.channel, VoiceChannel):
            return handle.channel
    return None


@router.get("/calls")
async def list_calls(
    sb: Core,
    who: Caller,
    contact_id: RowId | None = None,
    agent: str | None = Query(default=None, description="agent name or extension"),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    agent_id = (await agent_by_name(sb, agent, "query.agent")).id if agent else None
    calls = await run(
        sb.store.list_calls,
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
    call = await call_or_404(sb, call_id)
    if call.recording is None:
        raise HTTPException(404, f"call {call_id!r} has no recording")
    if not can_hear(call, who):
        raise HTTPException(
            403, "only the agent who took the call, supervisors and admins may hear its recording"
        )
    path = Path(call.recording.path)
    if not await run(path.is_file):
        raise HTTPException(404, f"the recording of call {call_id!r} is missing from disk")
    return FileResponse(
        path, media_type="audio/wav", filename=f"{safe_filename(call_id, 'call')}.wav"
    )


@router.get("/calls/{call_id:path}")
async def get_call(call_id: str, sb: Core, who: Caller) -> dict[str, Any]:
    return call_json(await call_or_404(sb, call_id), who)
