"""A loopback stand-in for the WhatsApp Cloud API (Meta's Graph API), and signed webhooks.

Meta's servers cannot be reached from a test run, so this server answers the requests the
channel makes as the Cloud API documents them: ``GET /v{version}/{phone-number-id}`` (the
number), ``POST /v{version}/{phone-number-id}/messages`` (text, media, template,
reaction, interactive; answers ``{"messaging_product", "contacts": [{"input", "wa_id"}], "messages":
[{"id": "wamid..."}]}``), ``POST /v{version}/{phone-number-id}/media`` (a multipart
upload, answered by ``{"id"}``), ``GET /v{version}/{media-id}`` (the media's short-lived URL)
and the media bytes at that URL, each with the bearer token checked. Errors come as the
Graph API sends them: ``{"error": {"message", "type", "code", "error_data": {"details"},
"fbtrace_id"}}`` with its HTTP status. Tests queue them with :meth:`GraphApi.fail_next`.

:func:`webhook_body` builds the ``whatsapp_business_account`` payloads Meta posts, and
:func:`signature` their ``X-Hub-Signature-256``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "EAAG-test-token-0123456789"
PHONE_ID = "106540352242922"
APP_SECRET = "0123456789abcdef0123456789abcdef"
VERIFY_TOKEN = "verify-me-please"


class GraphApi:
    def __init__(self, token: str = TOKEN, phone_id: str = PHONE_ID) -> None:
        self.token = token
        self.phone_id = phone_id
        self.url = ""  # set once served
        self.sent: list[dict[str, Any]] = []  # the /messages bodies that succeeded
        self.media: dict[str, tuple[bytes, str]] = {}
        self.uploads: list[dict[str, Any]] = []  # the media uploaded: id, filename, type, size
        self.requests = 0
        self.attempts: list[tuple[float, str]] = []  # every /messages request: (when, to)
        self.throttle_every = 0  # when above 0, every n-th /messages request answers 429
        self._errors: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._reserved: list[str] = []
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v{version}/{phone}/messages", self._messages, methods=["POST"]),
                Route("/v{version}/{phone}/media", self._upload, methods=["POST"]),
                Route("/v{version}/{node}", self._node, methods=["GET"]),
                Route("/media-bytes/{media_id}", self._bytes, methods=["GET"]),
            ]
        )

    # -- what tests do --------------------------------------------------------------------

    def reserve_id(self) -> str:
        """The message id the next successful send will get (to post its status first)."""
        ident = f"wamid.HBgL{next(self._ids):08d}"
        with self._lock:
            self._reserved.append(ident)
        return ident

    def add_media(self, data: bytes, mime_type: str = "image/jpeg") -> str:
        """A media item a webhook may name; returns its id."""
        media_id = f"{next(self._ids) + 900000}"
        self.media[media_id] = (data, mime_type)
        return media_id

    def fail_next(
        self,
        what: str,
        code: int,
        message: str,
        *,
        status: int = 400,
        details: str | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests of ``what`` (``messages``, ``media``, ``upload``,
        ``phone``)
        answer with this Graph API error."""
        with self._lock:
            self._errors.setdefault(what, []).extend(
                [(status, _error(code, message, details))] * times
            )

    # -- the API --------------------------------------------------------------------------

    def _failure(self, request: Request, what: str) -> Response | None:
        with self._lock:
            self.requests += 1
            queued = self._errors.get(what)
            if queued:
                status, body = queued.pop(0)
                return JSONResponse(body, status_code=status)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse(
                {
                    "error": {
                        "message": "Invalid OAuth access token - Cannot parse access token",
                        "type": "OAuthException",
                        "code": 190,
                        "fbtrace_id": "AbCdEf190",
                    }
                },
                status_code=401,
            )
        return None

    async def _messages(self, request: Request) -> Response:
        body = json.loads(await request.body())
        with self._lock:
            self.attempts.append((time.monotonic(), str(body.get("to"))))
            throttled = self.throttle_every > 0 and len(self.attempts) % self.throttle_every == 0
        if throttled:  # what Meta answers above the number's throughput
            return JSONResponse(
                _error(130429, "Rate limit hit", "Cloud API message throughput has been reached."),
                status_code=429,
            )
        failed = self._failure(request, "messages")
        if failed is not None:
            return failed
        if request.path_params["phone"] != self.phone_id or body.get("messaging_product") != (
            "whatsapp"
        ):
            return JSONResponse({"error": {"message": "bad request", "code": 100}}, 400)
        with self._lock:
            ident = self._reserved.pop(0) if self._reserved else f"wamid.HBgL{next(self._ids):08d}"
            self.sent.append({**body, "id": ident, "at": time.monotonic()})
        to = body.get("to")
        answer: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": str(to).lstrip("+")}],
            "messages": [{"id": ident}],
        }
        if body.get("type") == "template":
            answer["messages"][0]["message_status"] = "accepted"
        return JSONResponse(answer)

    async def _upload(self, request: Request) -> Response:
        """``POST /{phone-number-id}/media``: multipart ``file``, ``type`` and
        ``messaging_product``; answers ``{"id": media_id}``."""
        failed = self._failure(request, "upload")
        if failed is not None:
            return failed
        async with request.form() as form:
            upload = form.get("file")
            kind = form.get("type")
            if form.get("messaging_product") != "whatsapp" or isinstance(upload, str) or not upload:
                return JSONResponse({"error": {"message": "bad upload", "code": 100}}, 400)
            data = await upload.read()
            filename = upload.filename
        media_id = self.add_media(data, str(kind))
        with self._lock:
            self.uploads.append(
                {"id": media_id, "filename": filename, "type": kind, "size": len(data)}
            )
        return JSONResponse({"id": media_id})

    async def _node(self, request: Request) -> Response:
        node = request.path_params["node"]
        if node == self.phone_id:
            return self._failure(request, "phone") or JSONResponse(
                {
                    "verified_name": "Switchboard Test",
                    "display_phone_number": "+1 555-010-0199",
                    "quality_rating": "GREEN",
                    "id": self.phone_id,
                }
            )
        failed = self._failure(request, "media")
        if failed is not None:
            return failed
        if node not in self.media:
            return JSONResponse({"error": {"message": "unknown media", "code": 100}}, 404)
        data, mime = self.media[node]
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.url}/media-bytes/{node}",
                "mime_type": mime,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": len(data),
                "id": node,
            }
        )

    async def _bytes(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Response(status_code=401)
        data, mime = self.media[request.path_params["media_id"]]
        return Response(data, media_type=mime)


def _error(code: int, message: str, details: str | None = None) -> dict[str, Any]:
    """A Graph API error body."""
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEf123",
    }
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": error}


@contextmanager
def graph_api(token: str = TOKEN, phone_id: str = PHONE_ID) -> Iterator[GraphApi]:
    """Run a :class:`GraphApi` on a loopback port (its base URL in ``.url``)."""
    from switchboard.testing import serve_in_thread

    api = GraphApi(token, phone_id)
    with serve_in_thread(api.app) as running:
        api.url = running.url
        yield api


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    """The ``X-Hub-Signature-256`` Meta sends with ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(
    *,
    messages: Sequence[dict[str, Any]] = (),
    statuses: Sequence[dict[str, Any]] = (),
    contacts: Sequence[dict[str, Any]] = (),
    phone_id: str = PHONE_ID,
) -> bytes:
    """A webhook body as Meta sends it (``/`` escaped as ``\\/``, as Meta's JSON does)."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550100199", "phone_number_id": phone_id},
    }
    if contacts:
        value["contacts"] = list(contacts)
    if messages:
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }
    return json.dumps(payload, ensure_ascii=True).replace("/", "\\/").encode()


def text_message(wa_id: str, text: str, ident: str | None = None, **extra: Any) -> dict[str, Any]:
    """One ``messages[]`` item of type text, from ``wa_id``."""
    return {
        "from": wa_id,
        "id": ident or f"wamid.IN{abs(hash((wa_id, text, time.time()))) % 10**12:012d}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
        **extra,
    }


def profile(wa_id: str, name: str) -> dict[str, Any]:
    """One ``contacts[]`` item: the sender's profile name."""
    return {"profile": {"name": name}, "wa_id": wa_id}


def runner_config(
    folder: Path, graph_url: str, database_url: str, *, whatsapp: str = "", more: str = ""
) -> Path:
    """A configuration file for a runner with the WhatsApp channel, its Graph API at
    ``graph_url``. ``whatsapp``: more ``[plugins.whatsapp]`` lines; ``more``: more TOML
    tables."""
    config = folder / "whatsapp.toml"
    config.write_text(f"""
[switchboard]
database_url = "{database_url}"
default_region = "US"
[plugins.whatsapp]
phone_number_id = "{PHONE_ID}"
access_token = "{TOKEN}"
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
graph_url = "{graph_url}"
{whatsapp}
{more}
""")
    return config


def start_runner(
    folder: Path, graph_url: str, database_url: str, *, whatsapp: str = "", more: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    """``switchboard serve`` in its own process with only the WhatsApp channel (the
    configuration of :func:`runner_config`): the process and its base URL, once the
    channel runs."""
    from switchboard.testing import serve_process

    config = runner_config(folder, graph_url, database_url, whatsapp=whatsapp, more=more)
    return serve_process(config, "whatsapp")
