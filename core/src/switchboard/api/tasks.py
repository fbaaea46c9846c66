"""``/api/tasks`` (callback tasks) and ``/api/quarantine``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from switchboard.api.common import (
    Caller,
    Core,
    RowId,
    agent_by_name,
    run,
    supervisor_only,
)
from switchboard.events import to_json

router = APIRouter(prefix="/api")


@router.get("/tasks")
async def list_tasks(
    sb: Core,
    who: Caller,
    status: str = Query(default="open", pattern="^(open|done|all)$"),
    agent: str | None = Query(default=None, description="agent name or extension"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """Callback tasks (missed calls), oldest due first: an agent's own; everyone's (or one
    agent's, with ``agent``) for supervisors and admins."""
    agent_id = (await agent_by_name(sb, agent, "query.agent")).id if agent else None
    tasks = await sb.tasks(who, status=status, agent_id=agent_id, limit=limit)
    return {"items": [to_json(t) for t in tasks]}


@router.post("/tasks/{task_id}/done")
async def task_done(task_id: RowId, sb: Core, who: Caller) -> dict[str, Any]:
    """Mark a task done (an event ``task.done`` tells the others); agents close their own
    tasks only."""
    return to_json(await sb.finish_task(who, task_id))  # type: ignore[no-any-return]


@router.get("/quarantine")
async def list_quarantine(
    sb: Core,
    who: Caller,
    channel: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    """Inbound items a channel could not store, newest first, with the reason and their
    raw form (bounded): supervisors and admins."""
    supervisor_only(who, "the quarantine")
    items = await run(sb.quarantine.list, channel, limit)
    return {"items": [to_json(i) for i in items]}


# Call ids are the channels' own (a SIP Call-ID may hold a "/"): the routes take the rest of
# the path, the recording's route first.
