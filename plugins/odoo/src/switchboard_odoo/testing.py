"""A loopback stand-in for Odoo's external JSON-RPC API, written from Odoo's "External
API" documentation and its models' behaviour, recording what it received.

``POST /jsonrpc`` with ``{"jsonrpc": "2.0", "method": "call", "params": {"service",
"method", "args"}}``:

- ``common.version`` (``server_version_info``, 17.0 unless told), ``common.authenticate``
  / ``common.login`` (``db``, ``login``, API key: the uid, or ``false``);
- ``object.execute_kw(db, uid, key, model, method, args, kwargs)``, the key checked on
  every call (``odoo.exceptions.AccessDenied`` once :attr:`Odoo.revoked`):
  ``res.users.search_read``; ``res.partner`` ``fields_get`` / ``search_read`` (domains
  with ``=``, ``=ilike``, ``in`` and ``|``; ``phone_sanitized`` computed in E.164 from
  ``phone``, as Odoo's ``phone_validation`` does) / ``create`` / ``message_post``;
  ``ir.attachment.create`` (``datas`` base64); ``crm.lead`` ``create`` /
  ``message_post``.
- ``message_post`` escapes the body from 17.0 unless ``body_is_html`` is true (Odoo 17's
  rule for a body that is not ``Markup``), and keeps what it stored in ``messages``.

Errors come as Odoo sends them: HTTP 200 with ``error.data.name`` the exception's class.
:meth:`Odoo.fail_next` queues HTTP failures; ``down`` answers 503; ``delay`` slows
answers; ``garbage`` answers that many calls with a ``result`` of the wrong shape.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import phonenumbers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DATABASE = "switchboard"
LOGIN = "api@example.com"
API_KEY = "odoo-api-key-0123456789abcdef"
API_UID = 2
USERS = {2: "Mitchell Admin", 6: "Anna Sales", 7: "Boris Support"}


class OdooError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def sanitized(phone: str | None, region: str = "RU") -> str | None:
    """``phone_sanitized`` as Odoo computes it: E.164, or nothing when it cannot parse."""
    if not phone:
        return None
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class Odoo:
    def __init__(self, *, version: tuple[int, int] = (17, 0)) -> None:
        self.version = version
        self.users = dict(USERS)
        self.partners: dict[int, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []
        self.attachments: dict[int, dict[str, Any]] = {}
        self.leads: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, list[Any]]] = []  # (service, method, args)
        self.revoked = False
        self.down = False
        self.delay = 0.0
        self.garbage = 0
        self.failures: list[int] = []
        self.url = ""
        self._ids = itertools.count(101)
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/jsonrpc", self.jsonrpc, methods=["POST"])])

    # -- test controls ----------------------------------------------------------------------

    def add_partner(
        self, name: str, phone: str | None = None, email: str | None = None, user: int | None = None
    ) -> int:
        with self._lock:
            pid = next(self._ids)
            self.partners[pid] = {
                "id": pid,
                "name": name,
                "phone": phone,
                "email": email,
                "user_id": user,
            }
            return pid

    def fail_next(self, status: int, times: int = 1) -> None:
        self.failures.extend([status] * times)

    def executed(self, model: str, method: str) -> list[list[Any]]:
        return [
            a[3:]
            for s, m, a in list(self.requests)
            if s == "object" and m == "execute_kw" and a[3:5] == [model, method]
        ]

    # -- the API ----------------------------------------------------------------------------

    async def jsonrpc(self, request: Request) -> Response:
        if self.delay:
            await anyio.sleep(self.delay)
        if self.down:
            return Response("Service Unavailable", status_code=503)
        if self.failures:
            return Response("injected failure", status_code=self.failures.pop(0))
        try:
            body = json.loads(await request.body())
            params = body["params"]
            service, method, args = params["service"], params["method"], list(params["args"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": "Invalid Request"},
                }
            )
        self.requests.append((service, method, args))
        try:
            if self.garbage and service == "object":
                self.garbage -= 1
                result: Any = {"unexpected": "shape"}
            else:
                result = self.dispatch(service, method, args)
        except OdooError as exc:
            return JSONResponse(
                {
                    "jsonrpc": "2.0",
                    "id": body.get("id"),
                    "error": {
                        "code": 200,
                        "message": "Odoo Server Error",
                        "data": {
                            "name": exc.name,
                            "message": str(exc),
                            "arguments": [str(exc)],
                            "debug": "Traceback (most recent call last): ...",
                            "context": {},
                        },
                    },
                }
            )
        return JSONResponse({"jsonrpc": "2.0", "id": body.get("id"), "result": result})

    def dispatch(self, service: str, method: str, args: list[Any]) -> Any:
        if service == "common" and method == "version":
            return {
                "server_version": ".".join(map(str, self.version)),
                "server_version_info": [*self.version, 0, "final", 0, ""],
                "server_serie": ".".join(map(str, self.version)),
                "protocol_version": 1,
            }
        if service == "common" and method in ("authenticate", "login"):
            db, login, key = args[:3]
            ok = db == DATABASE and login == LOGIN and key == API_KEY and not self.revoked
            return API_UID if ok else False
        if service == "object" and method == "execute_kw":
            db, uid, key, model, name = args[:5]
            rest = args[5] if len(args) > 5 else []
            kwargs = args[6] if len(args) > 6 else {}
            if db != DATABASE or uid != API_UID or key != API_KEY or self.revoked:
                raise OdooError("odoo.exceptions.AccessDenied", "Access Denied")
            with self._lock:
                return self.execute(model, name, rest, kwargs)
        raise OdooError("builtins.Exception", f"no such service method {service}.{method}")

    def execute(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if model == "res.users" and method == "search_read":
            rows = [{"id": uid, "name": name} for uid, name in self.users.items()]
            return [r for r in rows if self._match(r, args[0])]
        if model == "res.partner" and method == "fields_get":
            fields = ["id", "name", "phone", "email", "user_id", "phone_sanitized"]
            if self.version < (19, 0):
                fields.append("mobile")
            return {f: {"type": "char"} for f in fields}
        if model == "res.partner" and method == "search_read":
            rows = [self._partner(p) for p in self.partners.values()]
            found = [r for r in rows if self._match(r, args[0])][: kwargs.get("limit") or None]
            wanted = kwargs.get("fields") or list(rows[0]) if rows else []
            return [{k: r[k] for k in wanted if k in r} for r in found]
        if model == "res.partner" and method == "create":
            values = args[0]
            if not values.get("name"):
                raise OdooError("odoo.exceptions.ValidationError", "a partner needs a name")
            pid = next(self._ids)
            self.partners[pid] = {
                "id": pid,
                "name": values["name"],
                "phone": values.get("phone"),
                "email": values.get("email"),
                "user_id": values.get("user_id"),
            }
            return pid
        if model == "ir.attachment" and method == "create":
            values = args[0]
            raw = base64.b64decode(values.get("datas") or "", validate=True)
            aid = next(self._ids)
            self.attachments[aid] = {**values, "id": aid, "size": len(raw), "raw": raw}
            return aid
        if model == "crm.lead" and method == "create":
            lid = next(self._ids)
            self.leads.append({**args[0], "id": lid})
            return lid
        if method == "message_post" and model in ("res.partner", "crm.lead"):
            ids = args[0]
            known = self.partners if model == "res.partner" else {x["id"] for x in self.leads}
            if not ids or ids[0] not in known:
                raise OdooError("odoo.exceptions.MissingError", "Record does not exist")
            body = kwargs.get("body") or ""
            if self.version >= (17, 0) and not kwargs.get("body_is_html"):
                body = html.escape(body)
            for aid in kwargs.get("attachment_ids") or []:
                if aid not in self.attachments:
                    raise OdooError("odoo.exceptions.MissingError", f"attachment {aid}")
            mid = next(self._ids)
            self.messages.append(
                {
                    "id": mid,
                    "model": model,
                    "res_id": ids[0],
                    "body": body,
                    "subject": kwargs.get("subject"),
                    "subtype_xmlid": kwargs.get("subtype_xmlid"),
                    "attachment_ids": list(kwargs.get("attachment_ids") or []),
                }
            )
            return mid
        raise OdooError(
            "builtins.AttributeError",
            f"The method '{method}' does not exist on the model '{model}'",
        )

    def _partner(self, p: dict[str, Any]) -> dict[str, Any]:
        user = p.get("user_id")
        return {
            **p,
            "phone_sanitized": sanitized(p.get("phone")),
            "user_id": [user, self.users.get(user, "")] if user else False,
        }

    def _match(self, row: dict[str, Any], domain: list[Any]) -> bool:
        def term(t: list[Any]) -> bool:
            field, op, value = t
            have = row.get(field)
            if op == "=":
                return bool(have == value)
            if op == "=ilike":
                return isinstance(have, str) and have.lower() == str(value).lower()
            if op == "in":
                return have in value
            raise OdooError("builtins.ValueError", f"Invalid domain operator {op!r}")

        stack: list[Any] = list(domain)

        def evaluate() -> bool:
            item = stack.pop(0)
            if item == "|":
                left, right = evaluate(), evaluate()
                return left or right
            if item == "&":
                left, right = evaluate(), evaluate()
                return left and right
            return term(item)

        result = True
        while stack:
            result = evaluate() and result
        return result


@contextmanager
def odoo(**kwargs: Any) -> Iterator[Odoo]:
    """Run an :class:`Odoo` on a loopback port (its base URL in ``.url``)."""
    from switchboard.testing import serve_in_thread

    server = Odoo(**kwargs)
    with serve_in_thread(server.app) as running:
        server.url = running.url
        yield server


def settings(url: str, **more: Any) -> dict[str, Any]:
    """``[plugins.odoo]`` for the stand-in at ``url``."""
    return {
        "url": url,
        "database": DATABASE,
        "login": LOGIN,
        "api_key": API_KEY,
        "users": {"anna": 6, "boris": 7},
    } | more


__all__ = ["API_KEY", "Odoo", "odoo", "sanitized", "settings"]
