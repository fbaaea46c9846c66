"""A loopback stand-in for amoCRM's API v4 and OAuth server, written from amoCRM's public
API reference, recording what it received (``requests``).

- ``POST /oauth2/access_token``: ``grant_type`` ``authorization_code`` (the one-time
  ``code``) or ``refresh_token``; each answer is a new pair and **the refresh token just
  used stops working** (amoCRM rotates it); ``expires_in`` seconds.
- Every ``/api/v4`` request needs ``Authorization: Bearer`` with a live access token
  (401 otherwise; :meth:`AmoCrm.expire_tokens` kills the current ones).
- ``GET /api/v4/users``; ``GET /api/v4/contacts?query=`` (digits found inside a stored
  phone's digits, or an email) answering **204 without a body** when nothing matches;
  ``POST /api/v4/contacts``; ``POST /api/v4/calls`` (attached to the contact with that
  phone; an unknown phone comes back in ``errors``); ``POST
  /api/v4/leads/unsorted/sip``; ``POST /api/v4/contacts/{id}/notes``.
- :meth:`AmoCrm.fail_next` queues error answers (429 with ``Retry-After``, 5xx...);
  ``down = True`` answers 503 to everything; ``delay`` slows every answer; ``garbage``
  answers that many requests with a 200 of a shape the docs do not describe.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CLIENT_ID = "a1b2c3d4-0000-4000-8000-amocrm000001"
CLIENT_SECRET = "amocrm-client-secret-0123456789abcdef"
REDIRECT_URI = "https://switchboard.example.com/amocrm/oauth"
FIRST_REFRESH = "def50200-first-refresh-token"
LONG_LIVED = "amocrm-long-lived-token-0001"
USERS = {7001: "Anna Sales", 7002: "Boris Support"}


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse(
        {
            "title": "Error",
            "type": "https://httpstatus.es/" + str(status),
            "status": status,
            "detail": detail,
        },
        status_code=status,
        media_type="application/problem+json",
    )


class AmoCrm:
    def __init__(self, *, expires_in: int = 86_400) -> None:
        self.expires_in = expires_in
        self.users = dict(USERS)
        self.contacts: dict[int, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.unsorted: list[dict[str, Any]] = []
        self.notes: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, JSON body)
        self.refresh_tokens = {FIRST_REFRESH}
        self.access_tokens = {LONG_LIVED}
        self.code = "one-time-authorization-code"
        self.issued = 0
        self.down = False
        self.delay = 0.0
        self.garbage = 0  # the next answers are 200 with a body of an unexpected shape
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.url = ""
        self._ids = itertools.count(10_001)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/oauth2/access_token", self.token, methods=["POST"]),
                Route("/api/v4/users", self.list_users, methods=["GET"]),
                Route("/api/v4/contacts", self.search, methods=["GET"]),
                Route("/api/v4/contacts", self.create_contacts, methods=["POST"]),
                Route("/api/v4/calls", self.add_calls, methods=["POST"]),
                Route("/api/v4/leads/unsorted/sip", self.add_unsorted, methods=["POST"]),
                Route("/api/v4/contacts/{id:int}/notes", self.add_notes, methods=["POST"]),
            ]
        )

    # -- test controls --------------------------------------------------------------------

    def add_contact(
        self,
        name: str,
        phones: Sequence[str] = (),
        emails: Sequence[str] = (),
        responsible: int | None = None,
    ) -> int:
        with self._lock:
            cid = next(self._ids)
            self.contacts[cid] = {
                "id": cid,
                "name": name,
                "phones": list(phones),
                "emails": list(emails),
                "responsible_user_id": responsible,
            }
            return cid

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.failures.extend([(status, headers)] * times)

    def expire_tokens(self) -> None:
        """Every OAuth access token stops working (the long-lived one stays)."""
        with self._lock:
            self.access_tokens = {LONG_LIVED}

    def received(self, path: str) -> list[Any]:
        return [body for _, p, body in list(self.requests) if p == path]

    # -- the API ----------------------------------------------------------------------------

    async def _enter(self, request: Request, *, auth: bool = True) -> Response | Any:
        if self.delay:
            await anyio.sleep(self.delay)
        raw = await request.body()
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return _problem(400, "the body is not JSON")
        self.requests.append((request.method, request.url.path, body))
        if self.down:
            return _problem(503, "Service Unavailable")
        if self.failures:
            status, headers = self.failures.pop(0)
            answer = _problem(status, "injected failure")
            answer.headers.update(headers)
            return answer
        if self.garbage:
            self.garbage -= 1
            return JSONResponse({"_embedded": "not what the docs say"})
        if auth:
            header = request.headers.get("authorization", "")
            if not header.startswith("Bearer ") or header[7:] not in self.access_tokens:
                return _problem(401, "Unauthorized")
        return body

    async def token(self, request: Request) -> Response:
        body = await self._enter(request, auth=False)
        if isinstance(body, Response):
            return body
        if (
            not isinstance(body, dict)
            or body.get("client_id") != CLIENT_ID
            or body.get("client_secret") != CLIENT_SECRET
            or body.get("redirect_uri") != REDIRECT_URI
        ):
            return _problem(400, "client_id, client_secret or redirect_uri is wrong")
        with self._lock:
            grant = body.get("grant_type")
            if grant == "refresh_token":
                if body.get("refresh_token") not in self.refresh_tokens:
                    return _problem(400, "Refresh token has been revoked")
                self.refresh_tokens.discard(body["refresh_token"])  # rotated: the old is dead
            elif grant == "authorization_code":
                if body.get("code") != self.code:
                    return _problem(400, "Authorization code has been revoked")
                self.code = ""
            else:
                return _problem(400, "unsupported grant_type")
            self.issued += 1
            access, refresh = f"access-{self.issued}", f"refresh-{self.issued}"
            self.access_tokens.add(access)
            self.refresh_tokens.add(refresh)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "access_token": access,
                "refresh_token": refresh,
            }
        )

    async def list_users(self, request: Request) -> Response:
        body = await self._enter(request)
        if isinstance(body, Response):
            return body
        users = [{"id": uid, "name": name} for uid, name in self.users.items()]
        return JSONResponse({"_total_items": len(users), "_embedded": {"users": users}})

    def _contact_json(self, c: dict[str, Any]) -> dict[str, Any]:
        fields = []
        if c["phones"]:
            fields.append({"field_code": "PHONE", "values": [{"value": p} for p in c["phones"]]})
        if c["emails"]:
            fields.append({"field_code": "EMAIL", "values": [{"value": e} for e in c["emails"]]})
        return {
            "id": c["id"],
            "name": c["name"],
            "responsible_user_id": c["responsible_user_id"],
            "custom_fields_values": fields or None,
        }

    def _by_phone(self, digits: str) -> dict[str, Any] | None:
        for c in self.contacts.values():
            if any(
                digits and digits in "".join(ch for ch in p if ch.isdigit()) for p in c["phones"]
            ):
                return c
        return None

    async def search(self, request: Request) -> Response:
        body = await self._enter(request)
        if isinstance(body, Response):
            return body
        query = request.query_params.get("query", "")
        with self._lock:
            if query.isdigit():  # a phone's digits: found inside a stored number's
                found = [c for c in [self._by_phone(query)] if c is not None]
            else:
                found = [
                    c
                    for c in self.contacts.values()
                    if query and query.lower() in [e.lower() for e in c["emails"]]
                ]
        if not found:
            return Response(status_code=204)
        return JSONResponse({"_embedded": {"contacts": [self._contact_json(c) for c in found]}})

    async def create_contacts(self, request: Request) -> Response:
        body = await self._enter(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, list):
            return _problem(400, "expected an array of contacts")
        made = []
        for n, item in enumerate(body):
            phones: list[str] = []
            emails: list[str] = []
            for field in item.get("custom_fields_values") or []:
                values = [v["value"] for v in field.get("values", [])]
                (phones if field.get("field_code") == "PHONE" else emails).extend(values)
            cid = self.add_contact(
                item.get("name", ""), phones, emails, item.get("responsible_user_id")
            )
            made.append({"id": cid, "request_id": str(n)})
        return JSONResponse({"_embedded": {"contacts": made}})

    async def add_calls(self, request: Request) -> Response:
        body = await self._enter(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, list):
            return _problem(400, "expected an array of calls")
        logged, errors = [], []
        for n, call in enumerate(body):
            missing = [k for k in ("direction", "duration", "source", "phone") if k not in call]
            if missing or call.get("direction") not in ("inbound", "outbound"):
                return _problem(400, f"calls[{n}]: {missing or 'direction'}")
            with self._lock:
                contact = self._by_phone("".join(ch for ch in call["phone"] if ch.isdigit()))
                if contact is None:
                    errors.append(
                        {"request_id": str(n), "status": 204, "title": "Entity not found"}
                    )
                    continue
                entry = {
                    **call,
                    "id": next(self._ids),
                    "entity_id": contact["id"],
                    "entity_type": "contacts",
                }
                self.calls.append(entry)
            logged.append(
                {
                    "id": entry["id"],
                    "entity_id": contact["id"],
                    "entity_type": "contacts",
                    "request_id": str(n),
                }
            )
        return JSONResponse(
            {"_total_items": len(logged), "_embedded": {"calls": logged}, "errors": errors}
        )

    async def add_unsorted(self, request: Request) -> Response:
        body = await self._enter(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, list):
            return _problem(400, "expected an array")
        made = []
        for item in body:
            if "source_uid" not in item or "metadata" not in item:
                return _problem(400, "source_uid and metadata are required")
            contact = (item.get("_embedded", {}).get("contacts") or [{}])[0]
            phones = [
                v["value"]
                for f in contact.get("custom_fields_values") or []
                for v in f.get("values", [])
            ]
            cid = self.add_contact(contact.get("name", ""), phones)
            uid = f"unsorted-{next(self._ids)}"
            with self._lock:
                self.unsorted.append({**item, "uid": uid, "contact_id": cid})
            made.append(
                {
                    "uid": uid,
                    "_embedded": {"leads": [{"id": next(self._ids)}], "contacts": [{"id": cid}]},
                }
            )
        return JSONResponse({"_total_items": len(made), "_embedded": {"unsorted": made}})

    async def add_notes(self, request: Request) -> Response:
        body = await self._enter(request)
        if isinstance(body, Response):
            return body
        contact_id = request.path_params["id"]
        if contact_id not in self.contacts:
            return _problem(404, "contact not found")
        made = []
        for item in body or []:
            with self._lock:
                note = {"id": next(self._ids), "entity_id": contact_id, **item}
                self.notes.append(note)
            made.append({"id": note["id"], "entity_id": contact_id})
        return JSONResponse({"_embedded": {"notes": made}})


@contextmanager
def amocrm(**kwargs: Any) -> Iterator[AmoCrm]:
    """Run an :class:`AmoCrm` on a loopback port (its base URL in ``.url``)."""
    from switchboard.testing import serve_in_thread

    crm = AmoCrm(**kwargs)
    with serve_in_thread(crm.app) as running:
        crm.url = running.url
        yield crm


def settings(url: str, *, oauth: bool = True, **more: Any) -> dict[str, Any]:
    """``[plugins.amocrm]`` for the stand-in at ``url`` (OAuth, or the long-lived token)."""
    base: dict[str, Any] = {"base_url": url, "users": {"anna": 7001, "boris": 7002}}
    if oauth:
        base |= {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": REDIRECT_URI,
            "refresh_token": FIRST_REFRESH,
        }
    else:
        base["long_lived_token"] = LONG_LIVED
    return base | more


__all__ = ["AmoCrm", "amocrm", "settings"]
