"""Bitrix24's REST API as a local application (or an inbound webhook) uses it.

An application gets its tokens when the portal installs it (``ONAPPINSTALL``, posted to
``/bitrix24/install``): the access token lives an hour, the refresh token rotates on each
renewal (``POST {oauth_url}/oauth/token/``), and the new pair is written to
``bitrix24_install`` in one transaction before it is used. A method is ``POST
{client_endpoint}{method}.json`` with a JSON body carrying ``auth`` (in the body, not the
URL: request URLs reach logs). Bitrix24 answers ``{"result": ...}`` or ``{"error",
"error_description"}``: 401 ``expired_token`` renews once; 503 ``QUERY_LIMIT_EXCEEDED``
and 5xx are retried by the consumer; other errors set the item aside.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import httpx
import sqlalchemy as sa

from switchboard import SkipEvent
from switchboard.crm import CrmError, CrmHttp, CrmUnauthorized, CrmUnavailable, shape
from switchboard_bitrix24.settings import Bitrix24Settings
from switchboard_bitrix24.tables import install_t

if TYPE_CHECKING:
    from switchboard import Switchboard

log = logging.getLogger("switchboard.bitrix24")

#: Renew the access token (an hour's) this long before it expires.
RENEW_BEFORE = timedelta(minutes=5)


@attrs.define
class Installation:
    """What ``ONAPPINSTALL`` brought (and each renewal since)."""

    member_id: str
    domain: str
    client_endpoint: str
    application_token: str
    access_token: str = attrs.field(repr=False)
    refresh_token: str = attrs.field(repr=False)
    expires_at: datetime
    events_bound: bool = False

    @classmethod
    def from_auth(cls, auth: Mapping[str, str]) -> Installation:
        """From the ``auth[...]`` fields of an ``ONAPPINSTALL`` post (each bounded to its
        column); KeyError or ValueError when they are incomplete."""
        return cls(
            member_id=auth["member_id"][:64],
            domain=auth.get("domain", "")[:255],
            client_endpoint=auth["client_endpoint"][:500],
            application_token=auth["application_token"][:128],
            access_token=auth["access_token"],
            refresh_token=auth["refresh_token"],
            expires_at=datetime.now(UTC) + timedelta(seconds=int(auth.get("expires_in", "3600"))),
        )


def same_portal(settings: Bitrix24Settings, url: str) -> bool:
    """Whether ``url`` (an endpoint Bitrix24 told us) is on the configured portal: no text
    from outside chooses where our requests and tokens go."""
    mine, theirs = urlsplit(settings.portal_url), urlsplit(url)
    return (theirs.scheme, theirs.netloc) == (mine.scheme, mine.netloc)


class Bitrix24Api:
    def __init__(self, core: Switchboard, settings: Bitrix24Settings) -> None:
        self.core = core
        self.settings = settings
        self.client = httpx.AsyncClient(timeout=settings.request_timeout)
        self.http = CrmHttp(
            settings.portal_url, rate=settings.requests_per_second, client=self.client
        )
        self.installation: Installation | None = None
        self.renewals = 0
        self._lock = asyncio.Lock()
        self._loaded = False

    async def close(self) -> None:
        await self.http.close()

    # -- the installation -----------------------------------------------------------------

    def load(self) -> Installation | None:
        with self.core.store.engine.connect() as conn:
            row = conn.execute(sa.select(install_t).where(install_t.c.id == 1)).first()
        if row is None:
            return None
        values = {f.name: getattr(row, f.name) for f in attrs.fields(Installation)}
        return Installation(**values)

    def save(self, installation: Installation) -> None:
        values = attrs.asdict(installation)
        with self.core.store.write() as conn:
            conn.execute(sa.delete(install_t))
            conn.execute(sa.insert(install_t).values(id=1, **values))

    async def installed(self) -> Installation:
        """The installation, loaded once from the store; CrmError while there is none."""
        async with self._lock:
            if self.installation is None:
                self.installation = await asyncio.to_thread(self.load)
            if self.installation is None:
                raise CrmError(
                    "the Bitrix24 application is not installed yet: install it on the portal "
                    "(docs/crm-bitrix24.md); events wait until then"
                )
            return self.installation

    async def installed_or_none(self) -> Installation | None:
        try:
            return await self.installed()
        except CrmError:
            return None

    async def install(self, installation: Installation) -> None:
        """Keep a new installation once its token works on the configured portal."""
        if not same_portal(self.settings, installation.client_endpoint):
            raise CrmUnauthorized("the installation names another portal's endpoint")
        await self._call(installation, "app.info", {})  # raises unless the token works here
        async with self._lock:
            await asyncio.to_thread(self.save, installation)
            self.installation = installation
        log.info("Bitrix24 application installed on %s", installation.domain)

    async def _renew(self, installation: Installation) -> None:
        s = self.settings
        try:
            answer = await self.client.post(
                f"{s.oauth_url.rstrip('/')}/oauth/token/",
                data={
                    "grant_type": "refresh_token",
                    "client_id": s.client_id or "",
                    "client_secret": s.client_secret or "",
                    "refresh_token": installation.refresh_token,
                },
            )
        except httpx.HTTPError as exc:
            raise CrmUnavailable(f"oauth/token: {type(exc).__name__}") from None
        if answer.status_code >= 500:
            raise CrmUnavailable(f"oauth/token: {answer.status_code}")
        if answer.status_code != 200:
            raise CrmUnauthorized(
                f"oauth/token: {answer.status_code} {answer.text[:200]} "
                "(reinstall the application on the portal)"
            )
        data = shape(CrmHttp.json_of(answer, "oauth/token"), dict, "oauth/token", "body")
        access = shape(data.get("access_token"), str, "oauth/token", "access_token")
        refresh = shape(data.get("refresh_token"), str, "oauth/token", "refresh_token")
        expires_in = shape(data.get("expires_in"), int, "oauth/token", "expires_in")
        endpoint = data.get("client_endpoint")
        renewed = attrs.evolve(
            installation,
            access_token=access,
            refresh_token=refresh,
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
            client_endpoint=endpoint
            if isinstance(endpoint, str) and same_portal(s, endpoint)
            else installation.client_endpoint,
        )
        await asyncio.to_thread(self.save, renewed)  # first: the old refresh token is dead
        self.installation = renewed
        self.renewals += 1

    async def _fresh(self, *, force: bool = False) -> Installation:
        installation = await self.installed()
        async with self._lock:
            installation = self.installation or installation
            if force or installation.expires_at - datetime.now(UTC) < RENEW_BEFORE:
                await self._renew(installation)
            assert self.installation is not None
            return self.installation

    # -- methods ------------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """``method`` with ``params``: its ``result``."""
        if not self.settings.app:
            return await self._call(None, method, params)
        installation = await self._fresh()
        try:
            return await self._call(installation, method, params)
        except CrmUnauthorized:
            installation = await self._fresh(force=True)
            return await self._call(installation, method, params)

    async def _call(
        self, installation: Installation | None, method: str, params: dict[str, Any]
    ) -> Any:
        if installation is None:
            url = f"{(self.settings.webhook_url or '').rstrip('/')}/{method}.json"
            body = params
        else:
            url = f"{installation.client_endpoint.rstrip('/')}/{method}.json"
            body = {**params, "auth": installation.access_token}
        answer = await self.http.request(
            "POST", url, what=method, json=body, ok=(200, 400, 401, 403, 404)
        )
        data = shape(CrmHttp.json_of(answer, method), dict, method, "body")
        error = data.get("error")
        if error is None and answer.status_code == 200:
            if "result" not in data:
                raise SkipEvent(f"{method}: an answer without result")
            return data["result"]
        text = f"{method}: {answer.status_code} {error}: {str(data.get('error_description'))[:200]}"
        if answer.status_code == 401 or error in (
            "expired_token",
            "invalid_token",
            "NO_AUTH_FOUND",
        ):
            raise CrmUnauthorized(text)
        if error in ("QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT", "INTERNAL_SERVER_ERROR"):
            raise CrmUnavailable(text)
        if error in ("WRONG_AUTH_TYPE", "insufficient_scope", "ACCESS_DENIED"):
            raise CrmError(text)  # a person must act (scope, app): held, shown in health
        raise SkipEvent(text)
