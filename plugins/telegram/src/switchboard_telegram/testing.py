"""A loopback stand-in for the Telegram Bot API, for tests and benchmarks.

Telegram's servers cannot be reached from a test run, so this small server answers like
the Bot API (https://core.telegram.org/bots/api) does: ``POST /bot<token>/<method>`` with
parameters as JSON, form or multipart fields; answers ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": ..., "description": ..., "parameters": {...}}``; files are
served at ``/file/bot<token>/<file_path>``. It implements the methods the channel uses:
``getMe``, ``getUpdates`` (long polling, offset confirmation), ``sendMessage``,
``sendDocument``, ``getFile``, ``setWebhook``, ``deleteWebhook``. Tests queue updates with
:meth:`BotApi.push` and errors with :meth:`BotApi.fail_next`.
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
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BOT = {"id": 4242, "is_bot": True, "first_name": "Switchboard", "username": "sb_test_bot"}


class BotApi:
    def __init__(self, token: str = "4242:TEST-TOKEN") -> None:
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.confirmed = 0  # the highest offset a getUpdates call confirmed
        self.sent: list[dict[str, Any]] = []  # sendMessage / sendDocument calls that succeeded
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.files: dict[str, bytes] = {}
        self.webhook: dict[str, Any] = {}
        self._errors: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1000)
        self._update_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._new_update: asyncio.Event | None = None
        self._polls = itertools.count(1)
        self._latest_poll = 0
        self.conflicts = 0  # getUpdates calls ended by a newer one (two bots polling)
        self.app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self._method, methods=["GET", "POST"]),
                Route("/file/bot{token}/{path:path}", self._file, methods=["GET"]),
            ]
        )

    # -- what tests do --------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> int:
        """Queue an update (``update_id`` is added unless given); return its id."""
        with self._lock:
            update = {"update_id": next(self._update_ids), **update}
            self.updates.append(update)
        if self._new_update is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._new_update.set)
        return int(update["update_id"])

    def add_file(self, data: bytes, path: str | None = None) -> str:
        """Store a file the bot can download; return its file_id."""
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = data
        self._paths = getattr(self, "_paths", {})
        self._paths[file_id] = path or f"documents/{file_id}.bin"
        return file_id

    def fail_next(
        self,
        method: str,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` calls of ``method`` answer with this error."""
        error: dict[str, Any] = {"ok": False, "error_code": error_code, "description": description}
        if retry_after is not None:
            error["parameters"] = {"retry_after": retry_after}
        self._errors.setdefault(method, []).extend([error] * times)

    @staticmethod
    def user(user_id: int, first_name: str = "Test", username: str | None = None) -> dict[str, Any]:
        u: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            u["username"] = username
        return u

    def message(
        self,
        user_id: int,
        text: str | None = None,
        *,
        message_id: int | None = None,
        chat: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A ``Message`` object from a user in a private chat (or ``chat``)."""
        msg: dict[str, Any] = {
            "message_id": message_id or next(self._ids),
            "date": int(time.time()),
            "chat": chat or {"id": user_id, "type": "private", "first_name": "Test"},
            "from": self.user(user_id),
            **extra,
        }
        if text is not None:
            msg["text"] = text
        return msg

    # -- the HTTP side --------------------------------------------------------------------

    _loop: asyncio.AbstractEventLoop | None = None

    async def _params(self, request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "")
        if "application/json" in kind:
            body = await request.body()
            return dict(json.loads(body)) if body else {}
        if request.method == "POST":
            params: dict[str, Any] = {}
            async with request.form() as form:  # closes uploaded files' temporary storage
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        params[key] = _maybe_json(value)
                    else:  # an uploaded file
                        params[key] = {"filename": value.filename, "data": await value.read()}
            return params
        return {k: _maybe_json(v) for k, v in request.query_params.items()}

    async def _method(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return JSONResponse(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401
            )
        method = request.path_params["method"]
        params = await self._params(request)
        self.calls.append((method, params))
        errors = self._errors.get(method)
        if errors:
            error = errors.pop(0)
            return JSONResponse(error, status_code=error["error_code"])
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return JSONResponse(
                {"ok": False, "error_code": 404, "description": "Not Found"}, status_code=404
            )
        try:
            result = await handler(params)
        except _ApiError as exc:
            return JSONResponse(
                {"ok": False, "error_code": exc.code, "description": exc.description},
                status_code=exc.code,
            )
        return JSONResponse({"ok": True, "result": result})

    async def _m_getMe(self, params: dict[str, Any]) -> Any:
        return BOT

    async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        self._loop = asyncio.get_running_loop()
        if self._new_update is None:
            self._new_update = asyncio.Event()
        # As Telegram does: a getUpdates ends the one still waiting with 409 Conflict
        # (two bot instances polling).
        mine = self._latest_poll = next(self._polls)
        self._new_update.set()
        with self._lock:
            if offset:
                self.confirmed = max(self.confirmed, offset)
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        while True:
            if self._latest_poll != mine:
                self.conflicts += 1
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            with self._lock:
                ready = [u for u in self.updates if u["update_id"] >= offset][:limit]
            if ready or time.monotonic() >= deadline:
                return ready
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._new_update.wait(), max(0.0, deadline - time.monotonic())
                )

    def _sent_message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        msg = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": BOT,
            **content,
        }
        self.sent.append({**params, "result": msg})
        return msg

    async def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        return self._sent_message(params, text=params["text"])

    async def _m_sendDocument(self, params: dict[str, Any]) -> Any:
        doc = params["document"]
        name = doc["filename"] if isinstance(doc, dict) else "file"
        data = doc["data"] if isinstance(doc, dict) else b""
        file_id = self.add_file(data, f"documents/{name}")
        document = {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_name": name,
            "file_size": len(data),
        }
        content: dict[str, Any] = {"document": document}
        if params.get("caption"):
            content["caption"] = params["caption"]
        return self._sent_message(params, **content)

    async def _m_getFile(self, params: dict[str, Any]) -> Any:
        file_id = params["file_id"]
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_size": len(self.files[file_id]),
            "file_path": self._paths[file_id],
        }

    async def _m_setWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = params
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = {}
        return True

    async def _file(self, request: Request) -> Response:
        path = request.path_params["path"]
        for file_id, p in getattr(self, "_paths", {}).items():
            if p == path:
                return Response(self.files[file_id], media_type="application/octet-stream")
        return Response(status_code=404)


class _ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


@contextmanager
def bot_api(
    token: str = "4242:TEST-TOKEN", host: str = "127.0.0.1"
) -> Iterator[tuple[BotApi, str]]:
    """Run a :class:`BotApi` on a port of ``host`` (loopback unless told); yields it and
    its base URL."""
    from switchboard.testing import serve_in_thread

    api = BotApi(token)
    with serve_in_thread(api.app, host=host) as running:
        yield api, running.url
