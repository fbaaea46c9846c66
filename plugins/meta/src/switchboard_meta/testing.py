"""A loopback stand-in for Meta's Graph API (Messenger Platform), and signed webhooks.

Meta's servers cannot be reached from a test run, so this server answers the requests the
channels make as Meta's public docs describe them, each with the Page token checked
(``Authorization: Bearer``):

- ``GET /v{version}/{node}?fields=...``: a Page (``id``, ``name``), an Instagram account
  (``id``, ``username``), or a person's profile (``first_name``/``last_name`` for a PSID,
  ``name``/``username`` for an IGSID) as :meth:`MetaGraph.profile` set it;
- ``POST /v{version}/{page-id}/messages`` (the Send API): ``recipient.id``,
  ``messaging_type`` (``RESPONSE``, ``UPDATE`` or ``MESSAGE_TAG`` with a ``tag``: only
  ``HUMAN_AGENT`` is still accepted, retired tags answer code 100), ``message`` with a
  ``text`` (at most 2,000 characters, up to 13 ``quick_replies``) or an ``attachment``
  (by ``url`` or ``attachment_id``); answers ``{"recipient_id", "message_id"}``; a
  person in :attr:`MetaGraph.closed` gets code 10 / subcode 2018278 (outside the window)
  unless the message is tagged ``HUMAN_AGENT``;
- ``POST /v{version}/{page-id}/message_attachments`` (multipart ``message`` +
  ``filedata``): ``{"attachment_id"}``;
- ``GET /cdn/{name}``: the bytes of a file a webhook names (Meta's CDN links).

Errors come as the Graph API sends them, ``{"error": {"message", "type", "code",
"error_subcode", "fbtrace_id"}}``; tests queue them with :meth:`MetaGraph.fail_next`.
:func:`webhook_body` builds the ``page`` / ``instagram`` payloads Meta posts and
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

from switchboard.outside import as_dict

APP_SECRET = "fedcba9876543210fedcba9876543210"
VERIFY_TOKEN = "meta-verify-token"
PAGE_ID = "104729345600001"
PAGE_TOKEN = "EAAPage-test-token-0001"
INSTAGRAM_ID = "17841400000000001"
TAGS = {"HUMAN_AGENT"}  # the tags Meta still takes; the older ones answer code 100


class MetaGraph:
    def __init__(
        self,
        pages: dict[str, str] | None = None,
        instagram: dict[str, str] | None = None,
    ) -> None:
        self.pages = dict(pages or {PAGE_ID: PAGE_TOKEN})  # page id: its token
        self.instagram = dict(instagram or {INSTAGRAM_ID: PAGE_ID})  # account: its page
        self.url = ""  # set once served
        self.profiles: dict[str, dict[str, Any]] = {}
        self.profile_requests = 0
        self.sent: list[dict[str, Any]] = []  # the Send API bodies that succeeded (+ page, mid)
        self.uploads: list[dict[str, Any]] = []
        self.attempts: list[tuple[float, str]] = []  # every Send API request: (when, to)
        self.closed: set[str] = set()  # people whose window Meta considers closed
        self.throttle_every = 0  # when above 0, every n-th Send API request answers code 613
        self.files: dict[str, tuple[bytes, str]] = {}
        self._errors: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v{version}/{page}/messages", self._messages, methods=["POST"]),
                Route("/v{version}/{page}/message_attachments", self._upload, methods=["POST"]),
                Route("/v{version}/{node}", self._node, methods=["GET"]),
                Route("/cdn/{name}", self._cdn, methods=["GET"]),
            ]
        )

    # -- what tests do --------------------------------------------------------------------

    def profile(self, user: str, **fields: Any) -> None:
        """What the profile API answers for ``user`` (``first_name``, ``last_name`` /
        ``name``, ``username``); people not set here answer an error."""
        self.profiles[user] = fields

    def add_file(self, data: bytes, mime_type: str = "image/jpeg") -> str:
        """A file on the stand-in's CDN; returns its URL (for a webhook's attachment)."""
        name = f"f{next(self._ids):06d}"
        self.files[name] = (data, mime_type)
        return f"{self.url}/cdn/{name}?oh=signed&oe=6A1B2C3D"

    def fail_next(
        self,
        what: str,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        status: int = 400,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests of ``what`` (``messages``, ``upload``, ``node``)
        answer with this Graph API error."""
        with self._lock:
            self._errors.setdefault(what, []).extend(
                [(status, _error(code, message, subcode))] * times
            )

    # -- the API --------------------------------------------------------------------------

    def _failure(self, what: str) -> Response | None:
        with self._lock:
            queued = self._errors.get(what)
            if queued:
                status, body = queued.pop(0)
                return JSONResponse(body, status_code=status)
        return None

    def _token_of(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def _bad_token(self) -> Response:
        return JSONResponse(
            _error(190, "Error validating access token: Session has expired", 463),
            status_code=400,
        )

    async def _messages(self, request: Request) -> Response:
        page = request.path_params["page"]
        body = json.loads(await request.body())
        to = str(body.get("recipient", {}).get("id"))
        with self._lock:
            self.attempts.append((time.monotonic(), to))
            throttled = self.throttle_every > 0 and len(self.attempts) % self.throttle_every == 0
        if throttled:  # a Page's rate limit
            return JSONResponse(
                _error(613, "Calls to this api have exceeded the rate limit."), status_code=400
            )
        failed = self._failure("messages")
        if failed is not None:
            return failed
        if self.pages.get(page) != self._token_of(request):
            return self._bad_token()
        problem = _check_send(body)
        if problem is not None:
            return JSONResponse(_error(100, problem), status_code=400)
        if to in self.closed and body.get("tag") != "HUMAN_AGENT":
            return JSONResponse(
                _error(
                    10,
                    "This message is sent outside of allowed window.",
                    2018278,
                ),
                status_code=400,
            )
        with self._lock:
            mid = f"m_{next(self._ids):010d}Ab"
            self.sent.append({**body, "page": page, "mid": mid, "at": time.monotonic()})
        return JSONResponse({"recipient_id": to, "message_id": mid})

    async def _upload(self, request: Request) -> Response:
        page = request.path_params["page"]
        failed = self._failure("upload")
        if failed is not None:
            return failed
        if self.pages.get(page) != self._token_of(request):
            return self._bad_token()
        async with request.form() as form:
            upload = form.get("filedata")
            message = form.get("message")
            if isinstance(upload, str) or upload is None or not isinstance(message, str):
                return JSONResponse(_error(100, "filedata and message are required"), 400)
            data = await upload.read()
            kind = json.loads(message)["attachment"]["type"]
            filename = upload.filename
        ident = f"{next(self._ids) + 7_000_000_000}"
        with self._lock:
            self.uploads.append(
                {"id": ident, "page": page, "type": kind, "filename": filename, "size": len(data)}
            )
        return JSONResponse({"attachment_id": ident})

    async def _node(self, request: Request) -> Response:
        node = request.path_params["node"]
        token = self._token_of(request)
        failed = self._failure("node")
        if failed is not None:
            return failed
        if node in self.pages:
            if self.pages[node] != token:
                return self._bad_token()
            return JSONResponse({"id": node, "name": "Romashka LLC"})
        if node in self.instagram:
            if self.pages.get(self.instagram[node]) != token:
                return self._bad_token()
            return JSONResponse({"id": node, "username": "romashka.shop"})
        if token not in self.pages.values():
            return self._bad_token()
        with self._lock:
            self.profile_requests += 1
        if node not in self.profiles:
            return JSONResponse(
                _error(100, "Unsupported get request. Object does not exist", 33), status_code=400
            )
        return JSONResponse({"id": node, **self.profiles[node]})

    async def _cdn(self, request: Request) -> Response:
        found = self.files.get(request.path_params["name"])
        if found is None:
            return Response(status_code=404)
        return Response(found[0], media_type=found[1])


def _check_send(body: dict[str, Any]) -> str | None:
    """What Meta would refuse in a Send API body (code 100), or None."""
    if not str(body.get("recipient", {}).get("id", "")).isdigit():
        return "(#100) The parameter recipient is required"
    kind = body.get("messaging_type")
    if kind not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
        return "(#100) messaging_type is required"
    if kind == "MESSAGE_TAG" and body.get("tag") not in TAGS:
        return f"(#100) Tag {body.get('tag')!r} is no longer supported"
    message = body.get("message")
    if not isinstance(message, dict) or ("text" in message) == ("attachment" in message):
        return "(#100) message: a text or an attachment"
    if "text" in message and not 0 < len(str(message["text"])) <= 2000:
        return "(#100) Length of param message[text] must be less than or equal to 2000"
    if len(message.get("quick_replies") or []) > 13:
        return "(#100) quick_replies: at most 13"
    return None


def _error(code: int, message: str, subcode: int | None = None) -> dict[str, Any]:
    """A Graph API error body."""
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AmEtAfB1x2y3",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


@contextmanager
def meta_graph(
    pages: dict[str, str] | None = None, instagram: dict[str, str] | None = None
) -> Iterator[MetaGraph]:
    """Run a :class:`MetaGraph` on a loopback port (its base URL in ``.url``)."""
    from switchboard.testing import serve_in_thread

    graph = MetaGraph(pages, instagram)
    with serve_in_thread(graph.app) as running:
        graph.url = running.url
        yield graph


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    """The ``X-Hub-Signature-256`` Meta sends with ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(events: Sequence[dict[str, Any]], *, account: str | None = None) -> bytes:
    """A webhook body as Meta posts it: one entry of ``account`` (by default the business
    side of the first event) holding ``events``; ``object`` ``instagram`` for an Instagram
    account (their ids start with 17841), else ``page``; ``/`` escaped as Meta does."""
    if account is None:
        first = events[0] if events else {}
        side = "sender" if as_dict(first.get("message")).get("is_echo") else "recipient"
        account = str(as_dict(first.get(side)).get("id", PAGE_ID))
    kind = "instagram" if account.startswith("17841") else "page"
    payload = {
        "object": kind,
        "entry": [{"id": account, "time": int(time.time() * 1000), "messaging": list(events)}],
    }
    return json.dumps(payload, ensure_ascii=True).replace("/", "\\/").encode()


def event(
    user: str, what: str, value: dict[str, Any], *, account: str = PAGE_ID, at: float | None = None
) -> dict[str, Any]:
    """One ``messaging[]`` item from ``user`` to ``account`` (``what``: ``message``,
    ``postback``, ``reaction``, ``delivery``, ``read``, ``message_edit``); an echo
    (``value["is_echo"]``) goes the other way."""
    sides = {"sender": {"id": user}, "recipient": {"id": account}}
    if value.get("is_echo"):
        sides = {"sender": {"id": account}, "recipient": {"id": user}}
    return {**sides, "timestamp": int((at or time.time()) * 1000), what: value}


def text_event(
    user: str,
    text: str,
    *,
    mid: str | None = None,
    account: str = PAGE_ID,
    at: float | None = None,
    **message: Any,
) -> dict[str, Any]:
    """A text message from ``user`` (more ``message`` fields as keywords)."""
    ident = mid or f"m_IN{abs(hash((user, text, time.time()))) % 10**12:012d}"
    return event(user, "message", {"mid": ident, "text": text, **message}, account=account, at=at)


def settings(graph: MetaGraph, **extra: Any) -> dict[str, Any]:
    """``[plugins.meta]`` for ``graph``: its first Page, with the Instagram account."""
    page, token = next(iter(graph.pages.items()))
    instagram = next((a for a, p in graph.instagram.items() if p == page), None)
    return {
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "graph_url": graph.url,
        "pages": [{"id": page, "access_token": token, "instagram_id": instagram}],
        **extra,
    }


def runner_config(
    folder: Path, graph_url: str, database_url: str, *, meta: str = "", more: str = ""
) -> Path:
    """A configuration file for a runner with both channels (one Page and its Instagram
    account), the Graph API at ``graph_url``. ``meta``: more ``[plugins.meta]`` lines;
    ``more``: more TOML tables."""
    config = folder / "meta.toml"
    config.write_text(f"""
[switchboard]
database_url = "{database_url}"
[plugins.meta]
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
graph_url = "{graph_url}"
{meta}
[[plugins.meta.pages]]
id = "{PAGE_ID}"
access_token = "{PAGE_TOKEN}"
instagram_id = "{INSTAGRAM_ID}"
{more}
""")
    return config


def start_runner(
    folder: Path, graph_url: str, database_url: str, *, meta: str = "", more: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    """``switchboard serve`` in its own process with only the Meta channels: the process
    and its base URL, once the Messenger channel runs."""
    from switchboard.testing import serve_process

    config = runner_config(folder, graph_url, database_url, meta=meta, more=more)
    return serve_process(config, "messenger")
