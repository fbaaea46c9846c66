"""A loopback stand-in for the VK API (community messages), for tests and benchmarks.

VK cannot be reached from a test run, so this server answers the requests the channel
makes as VK's API reference documents them: ``POST /method/NAME`` with the form fields
``access_token`` and ``v`` (``groups.getById``, ``users.get``, ``messages.send``,
``groups.getLongPollServer``, ``docs.getMessagesUploadServer``, ``docs.save``,
``photos.getMessagesUploadServer``, ``photos.saveMessagesPhoto``), answering
``{"response": ...}`` or ``{"error": {"error_code", "error_msg", "request_params"}}``;
the Bots Long Poll server (``GET /lp?act=a_check&key&ts&wait``: ``{"ts", "updates"}``,
or ``{"failed": 1, "ts"}``, ``{"failed": 2}``, ``{"failed": 3}``); the upload servers; and
the files attachments name. ``messages.send`` keeps the first message of a ``random_id``
and answers a repeat with its id, sending nothing (VK's de-duplication).

:func:`message_new` builds the updates VK sends (long poll and Callback API alike).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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

TOKEN = "vk1.a.community-token-0123456789"
GROUP_ID = 218000111
SECRET = "callback-secret-0123"
CONFIRMATION = "a1b2c3d4"


class VkApiStandIn:
    def __init__(self, token: str = TOKEN, group_id: int = GROUP_ID) -> None:
        self.token = token
        self.group_id = group_id
        self.url = ""  # set once served
        self.sent: list[dict[str, Any]] = []  # messages.send calls that sent a message
        self.calls: list[tuple[float, str]] = []  # every method call: (when, method)
        self.users: dict[int, tuple[str, str]] = {}
        self.files: dict[str, bytes] = {}
        self.uploads: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []  # the long poll's history; ts = its length
        self.key = "key-1"
        self.lose_answers = 0  # this many next messages.send calls send, then answer 502
        self.throttle_every = 0  # when above 0, every n-th messages.send answers error 6
        self._by_random: dict[int, int] = {}
        self._sends = 0
        self._errors: dict[str, list[tuple[int, str]]] = {}
        self._poll_failures: list[int] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new = asyncio.Event()
        self.app = Starlette(
            routes=[
                Route("/method/{name}", self._method, methods=["POST"]),
                Route("/lp", self._long_poll, methods=["GET", "POST"]),
                Route("/upload/{kind}", self._upload, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    # -- what tests do --------------------------------------------------------------------

    def push(self, *updates: dict[str, Any]) -> None:
        """Updates for the long poll (the channel gets them on its next request)."""
        with self._lock:
            self.updates.extend(updates)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._new.set)

    def add_file(self, name: str, data: bytes) -> str:
        """A file an attachment may name; its URL."""
        self.files[name] = data
        return f"{self.url}/files/{name}"

    def fail_next(self, method: str, code: int, message: str, *, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer with this VK error."""
        with self._lock:
            self._errors.setdefault(method, []).extend([(code, message)] * times)

    def fail_poll(self, *codes: int) -> None:
        """The next long poll requests answer ``{"failed": code}`` (1, 2 or 3)."""
        with self._lock:
            self._poll_failures.extend(codes)

    # -- the API --------------------------------------------------------------------------

    async def _method(self, request: Request) -> Response:
        name = request.path_params["name"]
        async with request.form() as form:
            data = {k: str(v) for k, v in form.items()}
        with self._lock:
            self.calls.append((time.monotonic(), name))
            queued = self._errors.get(name)
            failure = queued.pop(0) if queued else None
            if name == "messages.send" and self.throttle_every > 0:
                self._sends += 1
                if self._sends % self.throttle_every == 0:
                    failure = (6, "Too many requests per second")
        if data.get("access_token") != self.token:
            failure = (5, "User authorization failed: invalid access_token (4).")
        if failure is not None:
            params = [{"key": k, "value": v} for k, v in data.items() if k != "access_token"]
            return JSONResponse(
                {
                    "error": {
                        "error_code": failure[0],
                        "error_msg": failure[1],
                        "request_params": params,
                    }
                }
            )
        answer = self._answer(name, data)
        with self._lock:
            lost = name == "messages.send" and self.lose_answers > 0
            self.lose_answers -= 1 if lost else 0
        if lost:  # sent, but the answer never reaches the caller
            return Response(b"Bad Gateway", status_code=502)
        return JSONResponse({"response": answer})

    def _answer(self, name: str, data: dict[str, str]) -> Any:
        if name == "groups.getById":
            return {"groups": [{"id": self.group_id, "name": "Switchboard test", "type": "group"}]}
        if name == "users.get":
            out = []
            for raw in data.get("user_ids", "").split(","):
                first, last = self.users.get(int(raw), ("User", raw))
                out.append({"id": int(raw), "first_name": first, "last_name": last})
            return out
        if name == "groups.getLongPollServer":
            return {"key": self.key, "server": f"{self.url}/lp", "ts": str(len(self.updates))}
        if name == "messages.send":
            random_id = int(data["random_id"])
            with self._lock:
                if random_id != 0 and random_id in self._by_random:
                    return self._by_random[random_id]  # a repeat: nothing sent
                ident = next(self._ids)
                if random_id != 0:
                    self._by_random[random_id] = ident
                self.sent.append({**data, "id": ident, "at": time.monotonic()})
            self.push(
                reply(
                    self.group_id, int(data["peer_id"]), data.get("message", ""), ident, random_id
                )
            )  # VK tells the community what it sent
            return ident
        if name == "docs.getMessagesUploadServer":
            return {"upload_url": f"{self.url}/upload/doc"}
        if name == "photos.getMessagesUploadServer":
            return {"upload_url": f"{self.url}/upload/photo", "album_id": -64, "group_id": 1}
        if name == "docs.save":
            upload = next(u for u in self.uploads if u["token"] == data["file"])
            doc = {"id": upload["id"], "owner_id": -self.group_id, "title": data.get("title")}
            return {"type": "doc", "doc": doc}
        if name == "photos.saveMessagesPhoto":
            upload = next(u for u in self.uploads if u["token"] == data["photo"])
            return [{"id": upload["id"], "owner_id": -self.group_id, "access_key": "ak1"}]
        raise KeyError(name)

    async def _long_poll(self, request: Request) -> Response:
        self._loop = asyncio.get_running_loop()  # push() wakes a waiting poll through it
        q = request.query_params
        with self._lock:
            failure = self._poll_failures.pop(0) if self._poll_failures else None
        if failure == 1:
            return JSONResponse({"failed": 1, "ts": str(len(self.updates))})
        if failure is not None:
            self.key = f"key-{next(self._ids)}"
            return JSONResponse({"failed": failure})
        if q.get("act") != "a_check" or q.get("key") != self.key:
            return JSONResponse({"failed": 2})
        ts = int(q.get("ts", "0"))
        if ts > len(self.updates):
            return JSONResponse({"failed": 1, "ts": str(len(self.updates))})
        deadline = time.monotonic() + min(float(q.get("wait", "25")), 90)
        while ts == len(self.updates) and time.monotonic() < deadline:
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), min(0.2, deadline - time.monotonic()))
            if await request.is_disconnected():  # the runner went away
                return Response(status_code=499)
        with self._lock:
            updates = self.updates[ts:]
            return JSONResponse({"ts": str(ts + len(updates)), "updates": updates})

    async def _upload(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        async with request.form() as form:
            part = form.get("photo" if kind == "photo" else "file")
            if part is None or isinstance(part, str):
                return JSONResponse({"error": "no file"})
            data = await part.read()
            name = part.filename
        ident = next(self._ids)
        token = f"{kind}-token-{ident}"
        with self._lock:
            self.uploads.append(
                {"id": ident, "token": token, "kind": kind, "name": name, "data": data}
            )
        if kind == "photo":
            return JSONResponse({"server": 1, "photo": token, "hash": "h"})
        return JSONResponse({"file": token})

    async def _file(self, request: Request) -> Response:
        data = self.files.get(request.path_params["name"])
        return (
            Response(data, media_type="application/octet-stream")
            if data
            else Response(status_code=404)
        )


@contextmanager
def vk_api(token: str = TOKEN, group_id: int = GROUP_ID) -> Iterator[VkApiStandIn]:
    """Run a :class:`VkApiStandIn` on a loopback port (its base URL in ``.url``)."""
    from switchboard.testing import serve_in_thread

    api = VkApiStandIn(token, group_id)
    with serve_in_thread(api.app) as running:
        api.url = running.url
        yield api


def message_new(
    user_id: int,
    text: str,
    number: int,
    *,
    attachments: list[dict[str, Any]] | None = None,
    group_id: int = GROUP_ID,
    secret: str | None = None,
    event: str = "message_new",
) -> dict[str, Any]:
    """A ``message_new`` update (or ``message_edit``) from a user, message ``number`` of
    the conversation, as VK sends it (API 5.199); with ``secret`` for the Callback API."""
    message = {
        "date": int(time.time()),
        "from_id": user_id,
        "id": number,
        "out": 0,
        "peer_id": user_id,
        "text": text,
        "conversation_message_id": number,
        "fwd_messages": [],
        "important": False,
        "random_id": 0,
        "attachments": attachments or [],
        "is_hidden": False,
    }
    update: dict[str, Any] = {
        "group_id": group_id,
        "type": event,
        "event_id": f"ev{number:08x}{user_id:x}",
        "v": "5.199",
        "object": {"message": message, "client_info": {"keyboard": True}}
        if event == "message_new"
        else message,
    }
    if secret is not None:
        update["secret"] = secret
    return update


def runner_config(
    folder: Path, api_url: str, database_url: str, *, vk: str = "", more: str = ""
) -> Path:
    """A configuration file for a runner with the VK channel, its API at ``api_url``.
    ``vk``: more ``[plugins.vk]`` lines (``mode = "callback"``...); ``more``: more tables."""
    config = folder / "vk.toml"
    config.write_text(f"""
[switchboard]
database_url = "{database_url}"
[plugins.vk]
group_id = {GROUP_ID}
access_token = "{TOKEN}"
api_url = "{api_url}"
confirmation_code = "{CONFIRMATION}"
secret = "{SECRET}"
{vk}
{more}
""")
    return config


def reply(group_id: int, peer_id: int, text: str, ident: int, random_id: int = 0) -> dict[str, Any]:
    """A ``message_reply`` update: the community wrote to ``peer_id`` (through the API, with
    our ``random_id``, or in VK's own interface)."""
    return {
        "group_id": group_id,
        "type": "message_reply",
        "event_id": f"re{ident:08x}",
        "v": "5.199",
        "object": {
            "date": int(time.time()),
            "from_id": -group_id,
            "id": ident,
            "out": 1,
            "peer_id": peer_id,
            "text": text,
            "conversation_message_id": 100_000 + ident,
            "random_id": random_id,
            "attachments": [],
        },
    }
