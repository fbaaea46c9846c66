"""Odoo's external API over JSON-RPC (``POST /jsonrpc``), as the connector uses it.

Every request is ``{"jsonrpc": "2.0", "method": "call", "params": {"service", "method",
"args"}}``: ``common.version`` and ``common.authenticate(db, login, api_key, {})`` once,
then ``object.execute_kw(db, uid, api_key, model, method, args, kwargs)``. Odoo answers
200 with an ``error`` member when a call fails; its ``data.name`` (the exception's class)
decides: ``AccessDenied`` and an expired session log in again once, then the connector
fails visibly; a database conflict is retried; any other (a validation error, a record
gone) sets that one item aside. We speak JSON-RPC with httpx rather than through OdooRPC
(blocking, XML-RPC's faults are text) so the shared fault rules of
:class:`switchboard.crm.CrmHttp` apply to it as to the other CRMs.
"""

from __future__ import annotations

import itertools
from typing import Any

from switchboard import SkipEvent
from switchboard.crm import CrmHttp, CrmUnauthorized, CrmUnavailable, shape
from switchboard_odoo.settings import OdooSettings

UNAUTHORIZED = ("AccessDenied", "SessionExpired")
TRANSIENT = ("SerializationFailure", "ConcurrencyError", "LockNotAvailable", "ServiceUnavailable")


def _error(error: Any, what: str) -> Exception:
    error = error if isinstance(error, dict) else {}
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    name = str(data.get("name") or "")
    message = str(data.get("message") or error.get("message") or "")[:300]
    text = f"{what}: {name or 'error'}: {message}"
    if any(n in name for n in UNAUTHORIZED):
        return CrmUnauthorized(text)
    if any(n in name for n in TRANSIENT):
        return CrmUnavailable(text)
    return SkipEvent(text)


class OdooRpc:
    def __init__(self, settings: OdooSettings) -> None:
        self.settings = settings
        self.http = CrmHttp(
            settings.url,
            rate=settings.requests_per_second,
            timeout=settings.request_timeout,
        )
        self.uid: int | None = None
        self.version: tuple[int, int] = (0, 0)
        self.logins = 0
        self._ids = itertools.count(1)

    async def close(self) -> None:
        await self.http.close()

    async def call(self, service: str, method: str, *args: Any, what: str) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": list(args)},
            "id": next(self._ids),
        }
        answer = await self.http.request("POST", "/jsonrpc", json=body, what=what)
        data = shape(CrmHttp.json_of(answer, what), dict, what, "body")
        if "error" in data:
            raise _error(data["error"], what)
        if "result" not in data:
            raise SkipEvent(f"{what}: an answer without result or error")
        return data["result"]

    async def login(self) -> int:
        s = self.settings
        info = shape(
            await self.call("common", "version", what="common.version"),
            dict,
            "common.version",
            "result",
        )
        numbers = [n for n in info.get("server_version_info") or [] if isinstance(n, int)]
        major, minor = [*numbers, 0, 0][:2]
        self.version = (major, minor)
        uid = await self.call(
            "common",
            "authenticate",
            s.database,
            s.login,
            s.api_key,
            {},
            what="common.authenticate",
        )
        if not isinstance(uid, int) or isinstance(uid, bool):
            raise CrmUnauthorized(
                f"Odoo refused the login {s.login!r} to database {s.database!r} "
                "(check login and api_key)"
            )
        self.uid = uid
        self.logins += 1
        return uid

    async def execute(
        self, model: str, method: str, args: list[Any], kwargs: dict[str, Any] | None = None
    ) -> Any:
        """``model.method(*args, **kwargs)`` as the API key's user; logs in again once
        when Odoo says the credentials no longer work."""
        what = f"{model}.{method}"
        for attempt in (1, 2):
            if self.uid is None:
                await self.login()
            s = self.settings
            try:
                return await self.call(
                    "object",
                    "execute_kw",
                    s.database,
                    self.uid,
                    s.api_key,
                    model,
                    method,
                    args,
                    kwargs or {},
                    what=what,
                )
            except CrmUnauthorized:
                self.uid = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
