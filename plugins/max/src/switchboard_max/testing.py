"""A loopback stand-in for the MAX Bot API, for tests and benchmarks.

MAX cannot be reached from a test run, so this server answers the requests the channel
makes as MAX's API reference documents them, the token checked in ``Authorization`` (as
is, no ``Bearer``): ``GET /me``; ``POST /subscriptions`` (``{"url", "update_types",
"secret"}`` → ``{"success": true}``); ``GET /updates?marker&timeout&limit&types``
(``{"updates": [Update], "marker"}``: the updates after ``marker``, or from the request on
when there is none); ``POST /messages?user_id=`` (``{"message": Message}``); ``POST
/answers?callback_id=``; ``POST /uploads?type=`` (``{"url"}``) and the upload URL
(multipart ``data`` → ``{"token"}``, or ``{"photos": {...}}`` for images); and the files
attachments name. Errors come as MAX sends them: an HTTP status with ``{"code",
"message"}``.

:func:`message_created` builds the updates MAX sends (long polling and webhook alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "max-bot-token-0123456789abcdef"
BOT_ID = 5550001
SECRET = "max-webhook-secret-01"


class MaxApiStandIn:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.url = ""  # set once served
        self.sent: list[dict[str, Any]] = []  # the POST /messages that sent a message
        self.calls: list[tuple[float, str]] = []  # every request: (when, "METHOD /path")
        self.subscriptions: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.uploads: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []  # marker = how many came before
        self.throttle_every = 0  # when above 0, every n-th POST /messages answers 429
        self._errors: dict[str, list[tuple[int, str, str]]] = {}
        self._ids = itertools.count(1)
        self._sends = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/me", self._me, methods=["GET"]),
                Route("/subscriptions", self._subscribe, methods=["POST"]),
                Route("/updates", self._updates, methods=["GET"]),
                Route("/messages", self._messages, methods=["POST"]),
                Route("/answers", self._answer, methods=["POST"]),
                Route("/uploads", self._upload_slot, methods=["POST"]),
                Route("/upload/{ident}", self._upload, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    # -- what tests do --------------------------------------------------------------------

    def push(self, *updates: dict[str, Any]) -> None:
        """Updates for ``GET /updates`` (the channel gets them on its next request)."""
        with self._lock:
            self.updates.extend(updates)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._new.set)

    def add_file(self, name: str, data: bytes) -> str:
        """A file an attachment may name; its URL."""
        self.files[name] = data
        return f"{self.url}/files/{name}"

    def fail_next(self, what: str, status: int, code: str, message: str, *, times: int = 1) -> None:
        """The next ``times`` requests of ``what`` (``"POST /messages"``...) answer with
        this error."""
        with self._lock:
            self._errors.setdefault(what, []).extend([(status, code, message)] * times)

    # -- the API --------------------------------------------------------------------------

    def _check(self, request: Request) -> Response | None:
        what = f"{request.method} {request.url.path}"
        with self._lock:
            self.calls.append((time.monotonic(), what))
            queued = self._errors.get(what)
            failure = queued.pop(0) if queued else None
            if what == "POST /messages" and self.throttle_every > 0 and failure is None:
                self._sends += 1
                if self._sends % self.throttle_every == 0:
                    failure = (429, "too.many.requests", "Too many requests")
        if request.headers.get("authorization") != self.token:
            failure = (401, "verify.token", "Invalid access_token")
        if failure is None:
            return None
        return JSONResponse({"code": failure[1], "message": failure[2]}, status_code=failure[0])

    async def _me(self, request: Request) -> Response:
        refused = self._check(request)
        return refused or JSONResponse(
            {"user_id": BOT_ID, "first_name": "Switchboard", "username": "sb_bot", "is_bot": True}
        )

    async def _subscribe(self, request: Request) -> Response:
        refused = self._check(request)
        if refused:
            return refused
        self.subscriptions.append(json.loads(await request.body()))
        return JSONResponse({"success": True})

    async def _updates(self, request: Request) -> Response:
        refused = self._check(request)
        if refused:
            return refused
        self._loop = asyncio.get_running_loop()  # push() wakes a waiting request through it
        q = request.query_params
        with self._lock:
            marker = int(q["marker"]) if q.get("marker") else len(self.updates)
        limit = int(q.get("limit", "100"))
        deadline = time.monotonic() + min(float(q.get("timeout", "30")), 90)
        while marker >= len(self.updates) and time.monotonic() < deadline:
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), min(0.2, deadline - time.monotonic()))
            if await request.is_disconnected():
                return Response(status_code=499)
        with self._lock:
            updates = self.updates[marker : marker + limit]
        return JSONResponse({"updates": updates, "marker": marker + len(updates)})

    async def _messages(self, request: Request) -> Response:
        refused = self._check(request)
        if refused:
            return refused
        user = int(request.query_params["user_id"])
        body = json.loads(await request.body())
        ident = next(self._ids)
        mid = f"mid.{ident:016x}"
        message: dict[str, Any] = {
            "sender": {"user_id": BOT_ID, "first_name": "Switchboard", "is_bot": True},
            "recipient": {"user_id": user, "chat_type": "dialog", "chat_id": 100 + user},
            "timestamp": int(time.time() * 1000),
            "body": {
                "mid": mid,
                "seq": ident,
                "text": body.get("text"),
                "attachments": body.get("attachments"),
            },
        }
        with self._lock:
            self.sent.append({**body, "user_id": user, "mid": mid})
        return JSONResponse({"message": message})

    async def _answer(self, request: Request) -> Response:
        refused = self._check(request)
        if refused:
            return refused
        self.answers.append(
            {
                "callback_id": request.query_params.get("callback_id"),
                **json.loads(await request.body()),
            }
        )
        return JSONResponse({"success": True})

    async def _upload_slot(self, request: Request) -> Response:
        refused = self._check(request)
        if refused:
            return refused
        ident = next(self._ids)
        return JSONResponse({"url": f"{self.url}/upload/{ident}"})

    async def _upload(self, request: Request) -> Response:
        async with request.form() as form:
            part = form.get("data")
            if part is None or isinstance(part, str):
                return JSONResponse({"code": "upload", "message": "no data"}, status_code=400)
            data = await part.read()
            name = part.filename
        token = f"tok{request.path_params['ident']}"
        self.uploads.append({"token": token, "name": name, "data": data})
        if Path(name or "").suffix.lower() in (".jpg", ".jpeg", ".png", ".gif", ".webp"):
            return JSONResponse({"photos": {"p1": {"token": token}}})
        return JSONResponse({"token": token})

    async def _file(self, request: Request) -> Response:
        data = self.files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="application/octet-stream")


@contextmanager
def max_api(token: str = TOKEN) -> Iterator[MaxApiStandIn]:
    """Run a :class:`MaxApiStandIn` on a loopback port (its base URL in ``.url``)."""
    from switchboard.testing import serve_in_thread

    api = MaxApiStandIn(token)
    with serve_in_thread(api.app) as running:
        api.url = running.url
        yield api


def user(user_id: int, first: str = "Ivan", last: str | None = "Petrov") -> dict[str, Any]:
    return {"user_id": user_id, "first_name": first, "last_name": last, "is_bot": False}


def message_created(
    user_id: int,
    text: str | None,
    mid: str,
    *,
    attachments: list[dict[str, Any]] | None = None,
    update_type: str = "message_created",
    first: str = "Ivan",
) -> dict[str, Any]:
    """A ``message_created`` (or ``message_edited``) update of a dialog, as MAX sends it."""
    now = int(time.time() * 1000)
    return {
        "update_type": update_type,
        "timestamp": now,
        "message": {
            "sender": user(user_id, first),
            "recipient": {"chat_id": 100 + user_id, "chat_type": "dialog", "user_id": BOT_ID},
            "timestamp": now,
            "body": {"mid": mid, "seq": 1, "text": text, "attachments": attachments or []},
        },
        "user_locale": "ru",
    }


def contact(name: str, phone: str, user_id: int | None = None) -> dict[str, Any]:
    """A shared contact attachment (a vCard, and the MAX user when it is one)."""
    vcf = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=cell:{phone}\r\nEND:VCARD\r\n"
    payload: dict[str, Any] = {"vcf_info": vcf}
    if user_id is not None:
        payload["max_info"] = user(user_id, name)
    return {"type": "contact", "payload": payload}


def message_callback(user_id: int, callback_id: str, payload: str, on_mid: str) -> dict[str, Any]:
    """A ``message_callback`` update: the user pressed an inline button."""
    now = int(time.time() * 1000)
    return {
        "update_type": "message_callback",
        "timestamp": now,
        "callback": {
            "timestamp": now,
            "callback_id": callback_id,
            "payload": payload,
            "user": user(user_id),
        },
        "message": {
            "sender": {"user_id": BOT_ID, "first_name": "Switchboard", "is_bot": True},
            "recipient": {"user_id": user_id, "chat_type": "dialog"},
            "timestamp": now,
            "body": {"mid": on_mid, "seq": 1, "text": "Pick one"},
        },
    }


def runner_config(
    folder: Path, api_url: str, database_url: str, *, settings: str = "", more: str = ""
) -> Path:
    """A configuration file for a runner with the MAX channel, its API at ``api_url``.
    ``settings``: more ``[plugins.max]`` lines (``mode = "webhook"``...); ``more``: more
    tables."""
    config = folder / "max.toml"
    config.write_text(f"""
[switchboard]
database_url = "{database_url}"
[plugins.max]
token = "{TOKEN}"
api_url = "{api_url}"
secret = "{SECRET}"
webhook_url = "https://crm.example.com/max/webhook"
{settings}
{more}
""")
    return config
