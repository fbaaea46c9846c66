"""The runner's HTTP API (``/api/...``): the public contract a CRM or the console uses.

Every path needs ``Authorization: Bearer TOKEN`` (see :mod:`switchboard.auth`), except
``/api/health``. Errors are JSON ``{"detail": ...}``: 401 no or bad token, 403 not
allowed, 404 unknown id, 409 conflict, 413 body too large, 422 invalid input (FastAPI
names each field in ``detail[].loc``), 503 no channel able to do it.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import annotated_types
import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sse_starlette import EventSourceResponse, ServerSentEvent

from switchboard.address import Address, AddressError
from switchboard.auth import Principal
from switchboard.channels import VoiceChannel
from switchboard.core import ChannelState, Switchboard
from switchboard.errors import Conflict, Forbidden, Invalid, NotFound, SwitchboardError
from switchboard.events import Event, to_json
from switchboard.files import safe_filename
from switchboard.models import Agent, CallRecord, Contact, Interaction, InteractionKind
from switchboard.templates import TemplateError

#: Row ids are INTEGER columns (32-bit on PostgreSQL): a bigger one is a 422 here, not an
#: overflow in the driver (schemathesis found the 500s, on both databases).
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, annotated_types.Interval(ge=1, le=MAX_ROW_ID)]

router = APIRouter(prefix="/api")

# -- plumbing -------------------------------------------------------------------------------


async def core(request: Request) -> Switchboard:
    # async (like principal): FastAPI runs plain functions in a thread pool, per request.
    sb: Switchboard = request.app.state.switchboard
    return sb


def _bearer(request: Request) -> str | None:
    """The bearer token of the request, if it has one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def principal(request: Request) -> Principal:
    token = _bearer(request)
    challenge = {"WWW-Authenticate": "Bearer"}
    if token is None:
        raise HTTPException(
            401, "missing bearer token (Authorization: Bearer TOKEN)", headers=challenge
        )
    found: Principal | None = request.app.state.tokens.check(token)
    if found is None:
        raise HTTPException(401, "invalid token", headers=challenge)
    request.state.principal = found
    return found


Core = Annotated[Switchboard, Depends(core)]
Caller = Annotated[Principal, Depends(principal)]


def parse_address(sb: Switchboard, raw: str, field: str) -> Address:
    try:
        return sb.addresses.parse(raw)
    except AddressError as exc:
        raise HTTPException(422, [{"loc": [field], "msg": str(exc), "type": "address"}]) from None


def parse_addresses(sb: Switchboard, raws: list[str], field: str) -> list[Address]:
    return [parse_address(sb, raw, f"{field}[{i}]") for i, raw in enumerate(raws)]


async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Store calls block: run them off the event loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def agent_by_name(sb: Switchboard, name: str, field: str) -> Agent:
    agent: Agent | None = await run(sb.store.get_agent, name)
    if agent is None:
        raise HTTPException(422, [{"loc": [field], "msg": f"no agent {name!r}", "type": "agent"}])
    return agent


# -- models ---------------------------------------------------------------------------------

#: One line: a name, a subject or a header value with a line break is refused with 422
#: (it could never be sent: mail headers cannot hold one).
ONE_LINE = r"^[^\r\n\x00]*$"


#: The HTTP status of each kind of domain error (switchboard.errors); the exception
#: handler that create_app installs answers with it and the error's message as ``detail``.
ERROR_STATUS: dict[type[SwitchboardError], int] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    Forbidden: 403,
}


def error_status(exc: SwitchboardError) -> int:
    """The status for ``exc``: its class's, or the nearest base's (400 for the base)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 400


async def domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SwitchboardError)
    return JSONResponse({"detail": str(exc)}, status_code=error_status(exc))


class Body(BaseModel):
    """Request bodies refuse fields they do not know (422 names them): a misspelled or
    unsupported field is never silently dropped; and text with a NUL character anywhere
    (PostgreSQL cannot store one; schemathesis found the 500s)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text with a NUL character (\\u0000) is not accepted")
        return data


def _has_nul(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if depth > 32:  # deeper than any body we take: refused as malformed elsewhere
        return False
    if isinstance(value, dict):
        return any(_has_nul(k, depth + 1) or _has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v, depth + 1) for v in value)
    return False


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


class MessageIn(Body):
    channel: str
    contact_id: RowId | None = None
    address: str | None = None
    text: str | None = Field(default=None, max_length=100_000)
    subject: str | None = Field(default=None, max_length=998, pattern=ONE_LINE)
    html: str | None = Field(
        default=None, max_length=1_000_000, description="an HTML alternative (email)"
    )
    in_reply_to: str | None = Field(
        default=None,
        max_length=998,
        pattern=r"^<[^<>\s]+>$",
        description="the Message-ID this email answers (email threading)",
    )
    references: str | None = Field(
        default=None, max_length=8000, pattern=ONE_LINE, description="Message-IDs (email)"
    )
    template: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    call_id: str | None = Field(
        default=None, description="a call whose record the template sees as `call`"
    )

    @model_validator(mode="after")
    def _one_of(self) -> MessageIn:
        if self.contact_id is None and self.address is None:
            raise ValueError("give contact_id or address")
        if (self.text is None) == (self.template is None):
            raise ValueError("give text or template (not both)")
        return self


class CallIn(Body):
    agent: str = Field(description="agent name or extension")
    to: str | None = None
    contact_id: RowId | None = None

    @model_validator(mode="after")
    def _one_of(self) -> CallIn:
        if (self.to is None) == (self.contact_id is None):
            raise ValueError("give to or contact_id (not both)")
        return self


class Accepted(BaseModel):
    id: int | str
    status: str


# -- health and agents ----------------------------------------------------------------------


@router.get("/health")
async def health(sb: Core, request: Request) -> dict[str, Any]:
    """Service, store, plugins, channels and background loops. Needs no token (for load
    balancers), and then answers states only: error texts, plugins and versions need a
    token (they can name files, hosts and, through a library's message, a secret)."""
    try:
        revision = await run(sb.store.current_revision)
        store: dict[str, Any] = {"ok": True, "backend": sb.store.dialect, "revision": revision}
        if sb.schemas:  # the plugins' own migrations (register_migrations)
            store["plugin_revisions"] = await run(sb.store.plugin_revisions, sb.schemas)
    except Exception as exc:
        store = {"ok": False, "backend": sb.store.dialect, "error": str(exc)}
    channels = {
        name: {
            "plugin": h.plugin,
            "state": h.state.value,
            "last_error": h.last_error,
            "restarts": h.restarts,
        }
        for name, h in sb.channels.items()
    }
    try:
        depth: int | None = await run(sb.outbox.depth)
    except Exception:  # health answers whatever broke; the loops say what
        depth = None
    failing = (
        depth is None
        or sb.loops.failing
        or any(h.state is ChannelState.FAILING for h in sb.channels.values())
    )
    errors = [str(e) for e in sb.plugins.errors]
    from switchboard import __version__

    status = "ok" if store["ok"] and not errors and not failing else "degraded"
    token = _bearer(request)
    if token is None or request.app.state.tokens.check(token) is None:
        return {
            "status": status,
            "store": {"ok": store["ok"]},
            "channels": {n: {"state": c["state"]} for n, c in channels.items()},
            "loops": {n: {"state": v["state"]} for n, v in sb.loops.health().items()},
            "details": "send a bearer token for error texts, plugins and versions",
        }
    redact = request.app.state.redactor.redact
    for c in channels.values():
        c["last_error"] = c["last_error"] and redact(c["last_error"])
    loops = sb.loops.health()
    for v in loops.values():
        v["last_error"] = v["last_error"] and redact(v["last_error"])
    return {
        "status": status,
        "version": __version__,
        "store": store,
        "plugins": [
            {"name": p.name, "version": p.version, "hooks": list(p.hooks)}
            for p in sb.plugins.info()
        ],
        "plugin_errors": [redact(e) for e in errors],
        "hook_errors": [redact(str(e)) for e in sb.plugins.hook_errors[-10:]],
        "channels": channels,
        "loops": loops,
        "outbox_depth": depth,
        "event_subscribers": sb.events.subscribers,
    }


@router.get("/agents")
async def agents(sb: Core, who: Caller) -> list[dict[str, Any]]:
    return [to_json(a) for a in await run(sb.store.list_agents)]


# -- contacts -------------------------------------------------------------------------------


async def _contact_or_404(sb: Switchboard, contact_id: int) -> Contact:
    contact: Contact | None = await run(sb.store.get_contact, contact_id)
    if contact is None:
        raise HTTPException(404, f"no contact with id {contact_id}")
    return contact


@router.get("/contacts")
async def list_contacts(
    sb: Core,
    who: Caller,
    q: str | None = Query(default=None, description="name, company, phone (any form) or email"),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_ROW_ID),
) -> dict[str, Any]:
    address = None
    if q:
        try:
            address = sb.addresses.parse(q) if any(c.isdigit() for c in q) or "@" in q else None
        except AddressError:
            address = None
    items, total = await run(sb.store.search_contacts, q, address, limit=limit, offset=offset)
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
    return to_json(await _contact_or_404(sb, contact_id))  # type: ignore[no-any-return]


@router.patch("/contacts/{contact_id}")
async def patch_contact(
    contact_id: RowId, body: ContactPatch, sb: Core, who: Caller
) -> dict[str, Any]:
    await _contact_or_404(sb, contact_id)
    values: dict[str, Any] = {}
    fields = body.model_fields_set
    if "name" in fields and body.name is not None:
        values["name"] = body.name
    if "company" in fields:
        values["company"] = body.company
    if "owner_agent" in fields:
        owner = (
            await agent_by_name(sb, body.owner_agent, "body.owner_agent")
            if body.owner_agent
            else None
        )
        values["owner_agent_id"] = owner.id if owner else None
    add = parse_addresses(sb, body.add_addresses, "body.add_addresses")
    remove = parse_addresses(sb, body.remove_addresses, "body.remove_addresses")
    contact = await run(sb.store.update_contact, contact_id, values=values, add=add, remove=remove)
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
    await _contact_or_404(sb, contact_id)
    items = await run(sb.store.timeline, contact_id, limit=limit, before_id=before)
    calls = await run(sb.store.calls_of, [i.id for i in items if i.kind is InteractionKind.CALL])
    out = []
    for item in items:
        data = to_json(item)
        if item.id in calls:
            data["call"] = call_json(calls[item.id], who)
        out.append(data)
    return {"items": out, "next_before": items[-1].id if len(items) == limit else None}


# -- messages -------------------------------------------------------------------------------


@router.post("/messages", status_code=202)
async def send_message(body: MessageIn, sb: Core, who: Caller) -> Accepted:
    """Queue a message (the outbox sends it, with retries); 202 with the interaction id."""
    interaction = await queue_message(sb, who, body)
    return Accepted(id=interaction.id, status=interaction.status.value)


async def queue_message(sb: Switchboard, who: Principal, body: MessageIn) -> Interaction:
    """Render the template (if any) and queue the message; HTTPException on bad input (also
    used by the console's pages)."""
    text, subject = body.text, body.subject
    payload: dict[str, Any] = {
        k: v
        for k, v in (
            ("html", body.html),
            ("in_reply_to", body.in_reply_to),
            ("references", body.references),
        )
        if v is not None
    }
    if body.template is not None:
        rendered = await _render(
            sb,
            who,
            body.template,
            body.contact_id,
            body.address,
            body.variables,
            body.call_id,
        )
        text, subject = rendered.text, subject or rendered.subject
        payload["template"] = body.template
        if rendered.html is not None:
            payload["html"] = rendered.html
    try:
        interaction = await sb.outbox.enqueue(
            body.channel,
            contact_id=body.contact_id,
            address=body.address,
            text=text,
            subject=subject,
            payload=payload,
            kind=InteractionKind.EMAIL if subject is not None else InteractionKind.MESSAGE,
        )
    except AddressError as exc:
        raise HTTPException(
            422, [{"loc": ["body", "address"], "msg": str(exc), "type": "address"}]
        ) from None
    return interaction


async def _render(
    sb: Switchboard,
    who: Principal,
    template: str,
    contact_id: int | None,
    address: str | None,
    variables: dict[str, Any],
    call_id: str | None = None,
) -> Any:
    """Render a template for a contact (or a bare address), the calling agent and, if
    given, a call (``call``: its record, e.g. for a follow-up after it); 422 with the
    template's error (unknown template, missing variable...)."""
    contact = await _contact_or_404(sb, contact_id) if contact_id is not None else None
    call = await _call_or_404(sb, call_id) if call_id is not None else None
    to = parse_address(sb, address, "address") if address is not None else None
    try:
        return sb.render(
            template, contact=contact, address=to, agent=who.agent, call=call, variables=variables
        )
    except TemplateError as exc:
        raise HTTPException(
            422, [{"loc": ["body", "template"], "msg": str(exc), "type": "template"}]
        ) from None


class PreviewIn(Body):
    contact_id: RowId | None = None
    address: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    call_id: str | None = None


@router.get("/templates")
async def list_templates(sb: Core, who: Caller) -> dict[str, Any]:
    """The configured message templates' names."""
    return {"items": list(sb.templates.names)}


@router.post("/templates/{name}/preview")
async def preview_template(name: str, body: PreviewIn, sb: Core, who: Caller) -> dict[str, Any]:
    """Render a template as it would be sent (subject, text, html), sending nothing."""
    rendered = await _render(
        sb, who, name, body.contact_id, body.address, body.variables, body.call_id
    )
    return {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}


@router.get("/messages/{interaction_id}")
async def get_message(interaction_id: RowId, sb: Core, who: Caller) -> dict[str, Any]:
    interaction = await run(sb.store.get_interaction, interaction_id)
    if interaction is None or interaction.kind is InteractionKind.CALL:
        raise HTTPException(404, f"no message with id {interaction_id}")
    return to_json(interaction)  # type: ignore[no-any-return]


# -- calls ----------------------------------------------------------------------------------


def _can_hear(call: CallRecord, who: Principal) -> bool:
    return who.sees_all or (who.agent_id is not None and call.agent_id == who.agent_id)


def call_json(call: CallRecord, who: Principal) -> dict[str, Any]:
    data: dict[str, Any] = to_json(call)
    if call.recording is not None:
        data["recording"] = {
            "duration": call.recording.duration,
            "sha256": call.recording.sha256,
            "url": f"/api/calls/{quote(call.call_id)}/recording",
        }
        data["recording"]["allowed"] = _can_hear(call, who)
    return data


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
        contact = await _contact_or_404(sb, body.contact_id)
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


async def _call_or_404(sb: Switchboard, call_id: str) -> CallRecord:
    call = await run(sb.store.get_call, call_id)
    if call is None:
        raise HTTPException(404, f"no call with id {call_id!r}")
    return call  # type: ignore[no-any-return]


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
    if not who.sees_all:
        if agent_id is not None and agent_id != who.agent_id:
            raise HTTPException(403, "agents see their own tasks only")
        if who.agent_id is None:
            raise HTTPException(403, "this token has no agent: no tasks of its own")
        agent_id = who.agent_id
    tasks = await run(sb.store.list_tasks, status=status, agent_id=agent_id, limit=limit)
    return {"items": [to_json(t) for t in tasks]}


@router.post("/tasks/{task_id}/done")
async def task_done(task_id: RowId, sb: Core, who: Caller) -> dict[str, Any]:
    """Mark a task done (an event ``task.done`` tells the others); agents close their own
    tasks only."""
    if not who.sees_all:
        found = await run(sb.store.get_interaction, task_id)
        if found is not None and (found.meta or {}).get("agent_id") != who.agent_id:
            raise HTTPException(403, "agents close their own tasks only")
    task = await run(sb.store.finish_task, task_id)
    if task is None:
        raise HTTPException(404, f"no task with id {task_id}")
    sb.events.notify()
    return to_json(task)  # type: ignore[no-any-return]


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
@router.get("/calls/{call_id:path}/recording", response_class=FileResponse)
async def get_recording(call_id: str, sb: Core, who: Caller) -> FileResponse:
    """The call's recording as ``audio/wav``: for the agent who took the call, supervisors
    and admins."""
    call = await _call_or_404(sb, call_id)
    if call.recording is None:
        raise HTTPException(404, f"call {call_id!r} has no recording")
    if not _can_hear(call, who):
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
    return call_json(await _call_or_404(sb, call_id), who)


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


def supervisor_only(who: Principal, what: str) -> None:
    if not who.sees_all:
        raise HTTPException(403, f"{what}: for supervisors and admins")


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


# -- analytics ----------------------------------------------------------------------------


@router.get("/analytics/calls", response_model=None)
async def call_analytics(
    sb: Core,
    who: Caller,
    since: Annotated[datetime, Query(alias="from", description="start (ISO 8601, with a zone)")],
    until: Annotated[datetime, Query(alias="to", description="end, excluded")],
    group_by: str = Query(default="agent", pattern="^(agent|day|ivr_node)$"),
    format: str = Query(default="json", pattern="^(json|csv)$"),
) -> dict[str, Any] | Response:
    """Calls by agent, by (UTC) day or by IVR node, by SQL aggregates (supervisors, admins)."""
    supervisor_only(who, "call analytics")
    require_zones(since, until)
    rows = await sb.call_stats(since, until, group_by)
    if format == "csv":
        return csv_response(rows, f"calls-by-{group_by}.csv")
    return {"from": since.isoformat(), "to": until.isoformat(), "group_by": group_by, "rows": rows}


def require_zones(since: datetime, until: datetime) -> None:
    """422 unless both ends of a period (``from``, ``to``) name their time zone."""
    for value, name in ((since, "from"), (until, "to")):
        if value.tzinfo is None:
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["query", name],
                        "msg": "give a time zone (Z or +03:00)",
                        "type": "value",
                    }
                ],
            )


def csv_response(rows: list[dict[str, Any]], filename: str) -> Response:
    """Rows as a CSV download (header from the first row; nested values as JSON)."""
    out = io.StringIO()
    if rows:
        flat = [
            {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in r.items()}
            for r in rows
        ]
        writer = csv.DictWriter(out, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
