"""What every part of the API shares: the dependencies (the core, the caller), parsing,
the domain errors' statuses, the request body base and small helpers."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import annotated_types
from fastapi import Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, model_validator

from switchboard.address import Address, AddressError
from switchboard.auth import Principal
from switchboard.core import Switchboard
from switchboard.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    SwitchboardError,
    Unavailable,
)
from switchboard.events import to_json
from switchboard.models import Agent, CallRecord
from switchboard.service import can_hear

#: Row ids are INTEGER columns (32-bit on PostgreSQL): a bigger one is a 422 here, not an
#: overflow in the driver (schemathesis found the 500s, on both databases).
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, annotated_types.Interval(ge=1, le=MAX_ROW_ID)]

# -- plumbing -------------------------------------------------------------------------------


async def core(request: Request) -> Switchboard:
    # async (like principal): FastAPI runs plain functions in a thread pool, per request.
    sb: Switchboard = request.app.state.switchboard
    return sb


def bearer(request: Request) -> str | None:
    """The bearer token of the request, if it has one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def principal(request: Request) -> Principal:
    token = bearer(request)
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
    """The agent named in a request's ``field``: 422 naming the field when there is none."""
    try:
        return await sb.agent(name)
    except NotFound:
        raise HTTPException(
            422, [{"loc": [field], "msg": f"no agent {name!r}", "type": "agent"}]
        ) from None


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
    Unavailable: 503,
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


class Accepted(BaseModel):
    id: int | str
    status: str


def supervisor_only(who: Principal, what: str) -> None:
    if not who.sees_all:
        raise HTTPException(403, f"{what}: for supervisors and admins")


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


def call_json(call: CallRecord, who: Principal) -> dict[str, Any]:
    data: dict[str, Any] = to_json(call)
    if call.recording is not None:
        data["recording"] = {
            "duration": call.recording.duration,
            "sha256": call.recording.sha256,
            "url": f"/api/calls/{quote(call.call_id)}/recording",
        }
        data["recording"]["allowed"] = can_hear(call, who)
    return data
