"""A loopback stand-in for a Bitrix24 portal's REST API and Bitrix24's OAuth server,
written from Bitrix24's REST documentation, recording what it received (``requests``).

- ``POST /oauth/token/`` (``grant_type=refresh_token``, the application's keys): a new
  pair; **the refresh token just used stops working**; ``expires_in`` 3600.
- ``POST /rest/{method}.json`` with ``auth`` (an application's access token) in the body,
  or ``POST /rest/1/{secret}/{method}.json`` (an inbound webhook, which Bitrix24 refuses
  ``telephony.*`` to since 2026: 403 ``WRONG_AUTH_TYPE``). An expired token answers 401
  ``expired_token``.
- Methods: ``app.info``, ``user.get`` (pages of 50), ``crm.duplicate.findbycomm`` (``[]``
  when nothing matches), ``crm.contact.get`` / ``crm.contact.add``,
  ``telephony.externalcall.register`` (a lead made for an unknown number with
  ``CRM_CREATE``) / ``show`` / ``hide`` / ``finish`` (once) / ``telephony.externalCall.
  attachRecord`` (after the finish), ``crm.timeline.comment.add``, ``event.bind``.
- :meth:`Bitrix24.install_form` and :meth:`Bitrix24.call_start_form` build the
  form-encoded posts the portal sends (``ONAPPINSTALL``, ``ONEXTERNALCALLSTART``);
  ``down`` answers 503, ``fail_next`` queues ``QUERY_LIMIT_EXCEEDED`` and the like.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CLIENT_ID = "local.6548a1b2c3d4e5.00000001"
CLIENT_SECRET = "bitrix24-client-secret-0123456789"
MEMBER_ID = "a223c6b3710f85df22e9377d6c4f7553"
APPLICATION_TOKEN = "51856fefc120afa4b628cc82d3935cce"
WEBHOOK_SECRET = "hook0123456789ab"
USERS = {1: ("Anna", "Sales"), 2: ("Boris", "Support"), 3: ("Admin", "")}


def _error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


class Bitrix24:
    def __init__(self) -> None:
        self.users = dict(USERS)
        self.contacts: dict[int, dict[str, Any]] = {}
        self.leads: dict[int, dict[str, Any]] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        self.bindings: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (method, params)
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.renewed = 0
        self.down = False
        self.delay = 0.0
        self.failures: list[tuple[int, str]] = []
        self.url = ""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/oauth/token/", self.token, methods=["GET", "POST"]),
                Route("/rest/1/{secret}/{method}.json", self.webhook, methods=["POST"]),
                Route("/rest/{method}.json", self.rest, methods=["POST"]),
            ]
        )

    # -- test controls ----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.url}/rest/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/rest/1/{WEBHOOK_SECRET}/"

    def add_contact(
        self,
        name: str,
        last: str = "",
        phones: tuple[str, ...] = (),
        emails: tuple[str, ...] = (),
        assigned: int = 1,
    ) -> int:
        with self._lock:
            cid = next(self._ids)
            self.contacts[cid] = {
                "ID": str(cid),
                "NAME": name,
                "LAST_NAME": last,
                "ASSIGNED_BY_ID": str(assigned),
                "PHONE": [{"VALUE": p, "VALUE_TYPE": "WORK"} for p in phones],
                "EMAIL": [{"VALUE": e, "VALUE_TYPE": "WORK"} for e in emails],
            }
            return cid

    def fail_next(self, status: int, code: str, times: int = 1) -> None:
        self.failures.extend([(status, code)] * times)

    def expire_tokens(self) -> None:
        with self._lock:
            self.access_tokens.clear()

    def called(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p in list(self.requests) if m == method]

    def _pair(self) -> tuple[str, str]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return access, refresh

    def install_form(self, *, endpoint: str | None = None, token: str | None = None) -> bytes:
        """The ``ONAPPINSTALL`` post the portal sends the application's handler."""
        with self._lock:
            access, refresh = self._pair()
        auth = {
            "access_token": token or access,
            "expires": str(int(time.time()) + 3600),
            "expires_in": "3600",
            "scope": "crm,telephony,user,placement",
            "domain": self.url.split("://", 1)[1],
            "server_endpoint": f"{self.url}/rest/",
            "status": "L",
            "client_endpoint": endpoint or self.endpoint,
            "member_id": MEMBER_ID,
            "user_id": "1",
            "refresh_token": refresh,
            "application_token": APPLICATION_TOKEN,
        }
        fields = {
            "event": "ONAPPINSTALL",
            "data[VERSION]": "1",
            "data[LANGUAGE_ID]": "ru",
            "ts": str(int(time.time())),
        }
        fields |= {f"auth[{k}]": v for k, v in auth.items()}
        return urlencode(fields).encode()

    def call_start_form(
        self, user: int, phone: str, *, application_token: str = APPLICATION_TOKEN
    ) -> tuple[str, bytes]:
        """A user clicked ``phone`` in the CRM: the call is registered on the portal, and
        the ``ONEXTERNALCALLSTART`` post for the application (its CALL_ID, the form)."""
        with self._lock:
            call_id = f"externalCall.{secrets.token_hex(16)}.{int(time.time())}"
            self.calls[call_id] = {
                "USER_ID": user,
                "PHONE_NUMBER": phone,
                "TYPE": 1,
                "from_crm": True,
                "shown": [],
                "hidden": [],
                "finished": None,
                "records": [],
            }
        fields = {
            "event": "ONEXTERNALCALLSTART",
            "data[PHONE_NUMBER]": phone,
            "data[USER_ID]": str(user),
            "data[CALL_ID]": call_id,
            "data[CRM_ENTITY_TYPE]": "CONTACT",
            "data[CRM_ENTITY_ID]": "1",
            "data[IS_MOBILE]": "N",
            "ts": str(int(time.time())),
            "auth[domain]": self.url.split("://", 1)[1],
            "auth[member_id]": MEMBER_ID,
            "auth[application_token]": application_token,
        }
        return call_id, urlencode(fields).encode()

    # -- OAuth --------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        params = dict(request.query_params)
        params |= dict(parse_qsl((await request.body()).decode()))
        if params.get("client_id") != CLIENT_ID or params.get("client_secret") != CLIENT_SECRET:
            return _error(401, "invalid_client", "invalid client credentials")
        if params.get("grant_type") != "refresh_token":
            return _error(400, "unsupported_grant_type", "")
        with self._lock:
            if params.get("refresh_token") not in self.refresh_tokens:
                return _error(400, "invalid_grant", "Invalid refresh token")
            self.refresh_tokens.discard(params["refresh_token"])
            access, refresh = self._pair()
            self.renewed += 1
        return JSONResponse(
            {
                "access_token": access,
                "expires": int(time.time()) + 3600,
                "expires_in": 3600,
                "scope": "app",
                "domain": self.url.split("://", 1)[1],
                "server_endpoint": f"{self.url}/rest/",
                "status": "L",
                "client_endpoint": self.endpoint,
                "member_id": MEMBER_ID,
                "user_id": 1,
                "refresh_token": refresh,
            }
        )

    # -- REST ---------------------------------------------------------------------------------

    async def _params(self, request: Request) -> dict[str, Any] | Response:
        if self.delay:
            await anyio.sleep(self.delay)
        try:
            params = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "ERROR_ARGUMENT", "the body is not JSON")
        if not isinstance(params, dict):
            return _error(400, "ERROR_ARGUMENT", "expected an object")
        method = request.path_params["method"]
        self.requests.append((method, {k: v for k, v in params.items() if k != "auth"}))
        if self.down:
            return _error(503, "INTERNAL_SERVER_ERROR", "Service Unavailable")
        if self.failures:
            status, code = self.failures.pop(0)
            return _error(status, code, "injected failure")
        return params

    async def rest(self, request: Request) -> Response:
        params = await self._params(request)
        if isinstance(params, Response):
            return params
        if params.pop("auth", None) not in self.access_tokens:
            return _error(401, "expired_token", "The access token provided has expired.")
        return self._run(request.path_params["method"], params)

    async def webhook(self, request: Request) -> Response:
        params = await self._params(request)
        if isinstance(params, Response):
            return params
        if request.path_params["secret"] != WEBHOOK_SECRET:
            return _error(401, "NO_AUTH_FOUND", "Wrong authorization data")
        method = request.path_params["method"]
        if method.lower().startswith("telephony."):
            return _error(
                403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method"
            )
        return self._run(method, params)

    def _run(self, method: str, params: dict[str, Any]) -> Response:
        name = method.lower()
        handler = getattr(self, "m_" + name.replace(".", "_"), None)
        if handler is None:
            return _error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        with self._lock:
            result = handler(params)
        if isinstance(result, Response):
            return result
        return JSONResponse({"result": result, "time": {"start": time.time(), "duration": 0.01}})

    def m_app_info(self, p: dict[str, Any]) -> Any:
        return {"ID": 7, "CODE": CLIENT_ID, "VERSION": 1, "STATUS": "L", "INSTALLED": True}

    def m_user_get(self, p: dict[str, Any]) -> Any:
        users = [
            {"ID": str(i), "NAME": n, "LAST_NAME": ln, "ACTIVE": True}
            for i, (n, ln) in sorted(self.users.items())
        ]
        start = int(p.get("start") or 0)
        return users[start : start + 50]

    def _digits(self, value: str) -> str:
        digits = "".join(c for c in value if c.isdigit())
        return digits[-10:]

    def _contact_by(self, kind: str, value: str) -> list[int]:
        found = []
        for cid, c in self.contacts.items():
            for item in c[kind]:
                same = (
                    self._digits(item["VALUE"]) == self._digits(value)
                    if kind == "PHONE"
                    else item["VALUE"].lower() == value.lower()
                )
                if same:
                    found.append(cid)
                    break
        return found

    def m_crm_duplicate_findbycomm(self, p: dict[str, Any]) -> Any:
        if p.get("type") not in ("PHONE", "EMAIL") or not isinstance(p.get("values"), list):
            return _error(400, "ERROR_ARGUMENT", "type and values are required")
        found = [cid for v in p["values"] for cid in self._contact_by(p["type"], str(v))]
        return {"CONTACT": found} if found else []

    def m_crm_contact_get(self, p: dict[str, Any]) -> Any:
        contact = self.contacts.get(int(p.get("id") or 0))
        return contact if contact is not None else _error(400, "", "Not found")

    def m_crm_contact_add(self, p: dict[str, Any]) -> Any:
        fields = p.get("fields") or {}
        cid = next(self._ids)
        self.contacts[cid] = {
            "ID": str(cid),
            "NAME": fields.get("NAME", ""),
            "LAST_NAME": "",
            "ASSIGNED_BY_ID": str(fields.get("ASSIGNED_BY_ID", 1)),
            "PHONE": fields.get("PHONE") or [],
            "EMAIL": fields.get("EMAIL") or [],
        }
        return cid

    def m_telephony_externalcall_register(self, p: dict[str, Any]) -> Any:
        if int(p.get("USER_ID") or 0) not in self.users or not p.get("PHONE_NUMBER"):
            return _error(400, "ERROR_ARGUMENT", "USER_ID or PHONE_NUMBER is wrong")
        if int(p.get("TYPE") or 0) not in range(1, 6):
            return _error(400, "ERROR_ARGUMENT", "TYPE must be 1..5")
        call_id = f"externalCall.{secrets.token_hex(16)}.{int(time.time())}"
        result: dict[str, Any] = {"CALL_ID": call_id}
        found = self._contact_by("PHONE", str(p["PHONE_NUMBER"]))
        if found:
            result |= {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": found[0]}
        elif int(p.get("CRM_CREATE") or 0):
            lead = next(self._ids)
            self.leads[lead] = {"PHONE": p["PHONE_NUMBER"], "ASSIGNED_BY_ID": p["USER_ID"]}
            result |= {"CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY_ID": lead, "CRM_CREATED_LEAD": lead}
        self.calls[call_id] = {**p, "shown": [], "hidden": [], "finished": None, "records": []}
        return result

    def _call(self, p: dict[str, Any]) -> dict[str, Any] | Response:
        call = self.calls.get(str(p.get("CALL_ID")))
        return call if call is not None else _error(400, "ERROR_NOT_FOUND", "Call is not found")

    def m_telephony_externalcall_show(self, p: dict[str, Any]) -> Any:
        call = self._call(p)
        if isinstance(call, Response):
            return call
        call["shown"].extend(p.get("USER_ID") or [])
        return True

    def m_telephony_externalcall_hide(self, p: dict[str, Any]) -> Any:
        call = self._call(p)
        if isinstance(call, Response):
            return call
        call["hidden"].extend(p.get("USER_ID") or [])
        return True

    def m_telephony_externalcall_finish(self, p: dict[str, Any]) -> Any:
        call = self._call(p)
        if isinstance(call, Response):
            return call
        if call["finished"] is not None:
            return _error(400, "ERROR_NOT_FOUND", "Call is not found or already finished")
        call["finished"] = p
        return {
            "CALL_ID": p["CALL_ID"],
            "CRM_ACTIVITY_ID": next(self._ids),
            "CALL_DURATION": p.get("DURATION"),
            "CALL_FAILED_CODE": p.get("STATUS_CODE"),
        }

    def m_telephony_externalcall_attachrecord(self, p: dict[str, Any]) -> Any:
        call = self._call(p)
        if isinstance(call, Response):
            return call
        if call["finished"] is None:
            return _error(400, "ERROR_CORE", "Call is not finished")
        content = base64.b64decode(p["FILE_CONTENT"]) if p.get("FILE_CONTENT") else None
        call["records"].append(
            {"FILENAME": p.get("FILENAME"), "content": content, "RECORD_URL": p.get("RECORD_URL")}
        )
        return {"FILE_ID": next(self._ids)}

    def m_crm_timeline_comment_add(self, p: dict[str, Any]) -> Any:
        fields = p.get("fields") or {}
        if (
            fields.get("ENTITY_TYPE") != "contact"
            or int(fields.get("ENTITY_ID") or 0) not in self.contacts
        ):
            return _error(400, "ERROR_ARGUMENT", "ENTITY_ID is not a contact")
        comment = {"ID": next(self._ids), **fields}
        self.comments.append(comment)
        return comment["ID"]

    def m_event_bind(self, p: dict[str, Any]) -> Any:
        if any(
            b["event"] == p.get("event") and b["handler"] == p.get("handler") for b in self.bindings
        ):
            return _error(400, "ERROR_EVENT_HANDLER_ALREADY_BINDED", "Handler already binded")
        self.bindings.append({"event": p.get("event"), "handler": p.get("handler")})
        return True


@contextmanager
def bitrix24() -> Iterator[Bitrix24]:
    """Run a :class:`Bitrix24` on a loopback port (its base URL in ``.url``)."""
    from switchboard.testing import serve_in_thread

    portal = Bitrix24()
    with serve_in_thread(portal.app) as running:
        portal.url = running.url
        yield portal


def settings(portal: Bitrix24, *, webhook: bool = False, **more: Any) -> dict[str, Any]:
    """``[plugins.bitrix24]`` for the stand-in ``portal`` (an application, or a webhook)."""
    base: dict[str, Any] = {
        "portal_url": portal.url,
        "oauth_url": portal.url,
        "users": {"anna": 1, "boris": 2},
        "requests_per_second": 200.0,
    }
    if webhook:
        base |= {"webhook_url": portal.webhook_url, "push": {"calls": False, "recordings": False}}
    else:
        base |= {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return base | more


__all__ = ["APPLICATION_TOKEN", "Bitrix24", "bitrix24", "settings"]
