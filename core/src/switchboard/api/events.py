"""``/api/events``: the live event stream (SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from switchboard.api.common import (
    Caller,
    Core,
    run,
)
from switchboard.auth import Principal
from switchboard.core import Switchboard
from switchboard.events import Event

router = APIRouter(prefix="/api")

# -- live events ----------------------------------------------------------------------------


@router.get("/events")
async def events(request: Request, sb: Core, who: Caller) -> EventSourceResponse:
    """Server-Sent Events. Each event has an ``id``; reconnect with ``Last-Event-ID`` (or
    ``?last_event_id=``) to get what was missed. Agents get the screen pops meant for them
    and every event that is not agent-specific; supervisors and admins get all."""
    return stream_events(request, sb, who, _sse)


def stream_events(
    request: Request,
    sb: Switchboard,
    who: Principal,
    render: Callable[[Event], ServerSentEvent | None],
) -> EventSourceResponse:
    """The live stream of the events ``who`` may see, each turned into an SSE by ``render``
    (None: skipped); resumes after ``Last-Event-ID``. Also serves the console's screen pop."""
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        after = int(last) if last else None
    except ValueError:
        raise HTTPException(422, f"Last-Event-ID must be an event id, got {last!r}") from None
    http = sb.config.core.http

    def accepts(e: Event) -> bool:
        return e.visible_to(who.agent_id, who.sees_all)

    sub = sb.events.subscribe(accepts, http.sse_queue_size)
    stopping = anyio.Event()  # set by sse-starlette when the server shuts down

    async def stream() -> Any:
        try:
            sent = after if after is not None else sb.events.last_id
            if after is not None:  # replay from the log, then go live without a gap
                while True:
                    missed = await run(sb.events.read_since, sent)
                    for e in missed:
                        if accepts(e) and (out := render(e)) is not None:
                            yield out
                        sent = e.id
                    if len(missed) < 1000:
                        break
            while True:
                if sub.overflowed.is_set():
                    # Too slow a reader: end the stream; it resumes with Last-Event-ID.
                    yield ServerSentEvent(event="overflow", data="reconnect with Last-Event-ID")
                    return
                if stopping.is_set():  # end the response properly, saying why
                    yield ServerSentEvent(event="shutdown", data="reconnect with Last-Event-ID")
                    return
                try:
                    e = await asyncio.wait_for(sub.get(), SSE_POLL)
                except TimeoutError:
                    continue
                if e.id > sent:
                    sent = e.id
                    if (out := render(e)) is not None:
                        yield out
        finally:
            sb.events.unsubscribe(sub)

    return EventSourceResponse(
        stream(),
        ping=int(http.sse_keepalive),
        send_timeout=10,
        shutdown_event=stopping,
        shutdown_grace_period=SSE_POLL * 3,
    )


SSE_POLL = 0.2
"""How often an idle event stream looks whether the server is stopping (seconds); it ends
with a ``shutdown`` event within this time, well inside the shortest graceful shutdown."""


def _sse(e: Event) -> ServerSentEvent | None:
    return ServerSentEvent(id=str(e.id), event=e.type, data=json.dumps(e.payload()))
