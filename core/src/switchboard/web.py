"""What a plugin's HTTP routes (``register_routes``) build on: the same dependencies,
request-body rules and responses as the core's own API (docs/plugins.md, "HTTP routes").

- ``Core``: the running :class:`~switchboard.Switchboard` (``sb: Core`` in a handler);
- ``Caller``: the authenticated :class:`~switchboard.Principal` (a bearer token of
  ``[switchboard.tokens]``; 401 without one);
- ``Body``: the base of request bodies (unknown fields and NUL characters refused);
- ``RowId``: a row id path or body parameter (1 to 2^31-1; 422 past it);
- ``ONE_LINE``: a regex for one line of text (no CR, LF or NUL);
- ``supervisor_only(who, what)``: 403 unless the caller sees everything;
- ``require_zones(since, until)``: 422 unless both ends of a period name their zone;
- ``csv_response(rows, filename)``: rows as a CSV download;
- ``recording_response(call_id, path)``: a call's recording as a WAV download;
- ``event_stream(request, sb, who, render)``: the live events ``who`` may see, as
  server-sent events made by ``render`` (resumes after ``Last-Event-ID``);
- ``principal_of_token(request, token)``, ``token_fingerprint(token)`` and
  ``principal_of_fingerprint(request, fp)``: a plugin's own sign-in with an API token
  (a session cookie that names the token by its fingerprint, never holding it).

Domain errors raised in a handler (``NotFound``, ``Conflict``, ``Invalid``, ``Forbidden``,
``Unavailable``) are answered 404, 409, 422, 403 and 503 by the runner's one handler.
"""

from __future__ import annotations

from fastapi import Request

from switchboard.api.calls import recording_response
from switchboard.api.common import (
    ONE_LINE,
    Body,
    Caller,
    Core,
    RowId,
    csv_response,
    require_zones,
    supervisor_only,
)
from switchboard.api.events import stream_events as event_stream
from switchboard.auth import Principal
from switchboard.auth import fingerprint as token_fingerprint

__all__ = [
    "ONE_LINE",
    "Body",
    "Caller",
    "Core",
    "RowId",
    "csv_response",
    "event_stream",
    "principal_of_fingerprint",
    "principal_of_token",
    "recording_response",
    "require_zones",
    "supervisor_only",
    "token_fingerprint",
]


def principal_of_token(request: Request, token: str) -> Principal | None:
    """Who holds this API token (``[switchboard.tokens]``), or None."""
    found: Principal | None = request.app.state.tokens.check(token)
    return found


def principal_of_fingerprint(request: Request, value: str) -> Principal | None:
    """Who holds the token with this :func:`token_fingerprint` (None once the token is
    removed from the config)."""
    found: Principal | None = request.app.state.tokens.by_fingerprint(value)
    return found
