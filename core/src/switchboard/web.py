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
- ``attachment_response(attachment, path)``: a message's file (``sb.attachment(...)``),
  shown in place when a picture, sound or video, else a download;
- ``attachments_json(interaction, prefix)``: a message's files for a timeline, each with
  its URL under ``prefix``;
- ``event_stream(request, sb, who, render)``: the live events ``who`` may see, as
  server-sent events made by ``render`` (resumes after ``Last-Event-ID``);
- ``principal_of_token(request, token)``, ``token_fingerprint(token)`` and
  ``principal_of_fingerprint(request, fp)``: a plugin's own sign-in with an API token
  (a session cookie that names the token by its fingerprint, never holding it);
- ``signed(body, given, secret)`` and ``subscription_challenge(params, verify_token)``:
  the two checks of a signed webhook (an HMAC-SHA256 header over the raw body, as Meta,
  GitHub and others send; the ``hub.*`` verification handshake of a subscription).

Domain errors raised in a handler (``NotFound``, ``Conflict``, ``Invalid``, ``Forbidden``,
``Unavailable``) are answered 404, 409, 422, 403 and 503 by the runner's one handler.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from fastapi import Request
from starlette.requests import HTTPConnection

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
from switchboard.api.contacts import attachments_json
from switchboard.api.events import stream_events as event_stream
from switchboard.api.messages import attachment_response
from switchboard.auth import Principal
from switchboard.auth import fingerprint as token_fingerprint

__all__ = [
    "ONE_LINE",
    "Body",
    "Caller",
    "Core",
    "RowId",
    "attachment_response",
    "attachments_json",
    "csv_response",
    "event_stream",
    "principal_of_fingerprint",
    "principal_of_token",
    "recording_response",
    "require_zones",
    "signed",
    "subscription_challenge",
    "supervisor_only",
    "token_fingerprint",
]


def principal_of_token(request: Request, token: str) -> Principal | None:
    """Who holds this API token (``[switchboard.tokens]``), or None."""
    found: Principal | None = request.app.state.tokens.check(token)
    return found


def principal_of_fingerprint(request: HTTPConnection, value: str) -> Principal | None:
    """Who holds the token with this :func:`token_fingerprint` (None once the token is
    removed from the config). ``request`` may be a WebSocket's."""
    found: Principal | None = request.app.state.tokens.by_fingerprint(value)
    return found


def signed(body: bytes, given: str | None, secret: str, *, prefix: str = "sha256=") -> bool:
    """Whether ``given`` (a header such as ``X-Hub-Signature-256: sha256=<hex>``) is the
    HMAC-SHA256 of the raw ``body`` bytes with ``secret``, compared in constant time.
    Check the bytes as received, before parsing: re-serialised JSON is not the same bytes."""
    if not given or not secret or not given.startswith(prefix):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given[len(prefix) :].strip().lower().encode(), expected.encode())


def subscription_challenge(params: Mapping[str, str], verify_token: str) -> str | None:
    """The ``hub.challenge`` to echo when ``params`` (a GET's query) are a subscription
    request (``hub.mode=subscribe``) with the right ``hub.verify_token``; else None."""
    if params.get("hub.mode") != "subscribe" or not verify_token:
        return None
    token = params.get("hub.verify_token", "")
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        return None
    challenge = params.get("hub.challenge", "")
    return challenge if 0 < len(challenge) <= 256 and challenge.isprintable() else None
