"""A thin client of the Graph API's Messenger Platform endpoints, on httpx.

No maintained Python library covers the Send API for both Messenger and Instagram (see
docs/meta.md): the few requests the channels make are written here, each answering the
decoded JSON or raising :class:`GraphError` with Meta's code, subcode and text.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from switchboard.outside import as_dict

#: Graph codes that mean "slow down" (application, user, page and custom rate limits).
RATE_LIMITED = frozenset({4, 17, 32, 613})
#: Graph codes of a temporary failure on Meta's side ("try again later").
TEMPORARY = frozenset({1, 2})
TOKEN_EXPIRED = 190
OUTSIDE_WINDOW = (10, 2018278)  # code 10 with this subcode: sent outside the allowed window


class GraphError(Exception):
    """A Graph API error answer (or no usable answer: ``code`` 0)."""

    def __init__(self, status: int, code: int, message: str, subcode: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.subcode = subcode
        self.message = message

    @property
    def throttled(self) -> bool:
        return self.code in RATE_LIMITED or self.status == 429

    @property
    def transient(self) -> bool:
        """Worth trying again later: throttled, Meta's temporary errors, 5xx, no answer."""
        return self.throttled or self.code in TEMPORARY or self.status >= 500 or self.code == 0

    def __str__(self) -> str:
        sub = f"/{self.subcode}" if self.subcode else ""
        return f"{self.code}{sub} {self.message}"[:1000]


class Graph:
    """Requests to ``{graph_url}/v{version}/...`` with a Page access token in the
    ``Authorization`` header (never in the URL, so never in a log line)."""

    def __init__(self, http: httpx.AsyncClient, graph_url: str, version: str) -> None:
        self.http = http
        self.base = f"{graph_url.rstrip('/')}/v{version}"

    async def get(self, node: str, token: str, fields: str) -> dict[str, Any]:
        """``GET /{node}?fields=...``: a Page, an Instagram account, a person's profile."""
        return await self._call("GET", f"/{node}", token, params={"fields": fields})

    async def send(self, page_id: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /{page-id}/messages`` (the Send API, Messenger and Instagram alike):
        ``{"recipient_id", "message_id"}``."""
        return await self._call("POST", f"/{page_id}/messages", token, json_body=body)

    async def upload(self, page_id: str, token: str, kind: str, path: Path) -> str:
        """``POST /{page-id}/message_attachments`` (the Attachment Upload API) with the file
        as ``filedata``: the ``attachment_id`` to send it by."""
        data = await asyncio.to_thread(path.read_bytes)
        message = {"attachment": {"type": kind, "payload": {"is_reusable": True}}}
        answer = await self._call(
            "POST",
            f"/{page_id}/message_attachments",
            token,
            data={"message": json.dumps(message)},
            files={"filedata": (path.name, data)},
        )
        ident = answer.get("attachment_id")
        if not isinstance(ident, str | int):
            raise GraphError(200, 0, "the upload answered no attachment_id")
        return str(ident)

    async def _call(
        self,
        method: str,
        path: str,
        token: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes]] | None = None,
    ) -> dict[str, Any]:
        try:
            response = await self.http.request(
                method,
                self.base + path,
                params=params,
                json=json_body,
                data=data,
                files=files,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise GraphError(0, 0, f"{type(exc).__name__}: {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 200 and isinstance(answer, dict) and "error" not in answer:
            return answer
        error = as_dict(as_dict(answer).get("error"))
        code = error.get("code")
        subcode = error.get("error_subcode")
        raise GraphError(
            response.status_code,
            code if isinstance(code, int) else 0,
            str(error.get("message") or f"HTTP {response.status_code}")[:800],
            subcode if isinstance(subcode, int) else None,
        )
