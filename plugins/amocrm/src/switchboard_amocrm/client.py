"""amoCRM's API v4 as the connector uses it, and its OAuth 2.0 tokens.

amoCRM rotates the refresh token on every refresh and the old one stops working at once,
so the new pair is written to ``amocrm_token`` (one transaction) before it is used: a
crash after the refresh loses nothing the next start needs. The access token (24 hours)
is renewed ``refresh_before_s`` before it expires, and once more after a 401.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import sqlalchemy as sa

from switchboard import SkipEvent
from switchboard.crm import CrmHttp, CrmUnauthorized, CrmUnavailable, shape
from switchboard_amocrm.settings import AmoCrmSettings
from switchboard_amocrm.tables import token_t

if TYPE_CHECKING:
    from switchboard import Switchboard

log = logging.getLogger("switchboard.amocrm")


class Tokens:
    """The access token for each request: the long-lived one, or the OAuth pair kept in
    the store and refreshed before it expires."""

    def __init__(self, core: Switchboard, settings: AmoCrmSettings, client: httpx.AsyncClient):
        self.core = core
        self.settings = settings
        self.client = client
        self.access: str | None = settings.long_lived_token
        self.expires_at = None if settings.long_lived_token else datetime.now(UTC)
        self.refreshes = 0
        self._lock = asyncio.Lock()
        self._loaded = settings.long_lived_token is not None

    async def headers(self) -> dict[str, str]:
        async with self._lock:
            if not self._loaded:
                await asyncio.to_thread(self._load)
                self._loaded = True
            if self.expires_at is not None and (
                self.access is None
                or self.expires_at - datetime.now(UTC)
                < timedelta(seconds=self.settings.refresh_before_s)
            ):
                await self._refresh()
        return {"Authorization": f"Bearer {self.access}"}

    async def refresh(self) -> None:
        """After a 401: renew now (nothing to renew for a long-lived token)."""
        if self.settings.long_lived_token is not None:
            raise CrmUnauthorized("amoCRM refused the long-lived token (401)")
        async with self._lock:
            await self._refresh()

    def _load(self) -> None:
        with self.core.store.engine.connect() as conn:
            row = conn.execute(sa.select(token_t).where(token_t.c.id == 1)).first()
        if row is not None:
            self.access, self.expires_at = row.access_token, row.expires_at
            self._refresh_token: str | None = row.refresh_token
        else:
            self.access, self._refresh_token = None, self.settings.refresh_token

    async def _refresh(self) -> None:
        s = self.settings
        body: dict[str, Any] = {
            "client_id": s.client_id,
            "client_secret": s.client_secret,
            "redirect_uri": s.redirect_uri,
        }
        if self._refresh_token:
            body |= {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        elif s.authorization_code:
            body |= {"grant_type": "authorization_code", "code": s.authorization_code}
        else:
            raise CrmUnauthorized("amoCRM: no refresh token stored and no authorization_code")
        try:
            answer = await self.client.post(
                f"{s.base_url.rstrip('/')}/oauth2/access_token", json=body
            )
        except httpx.HTTPError as exc:
            raise CrmUnavailable(f"oauth2/access_token: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise CrmUnauthorized(
                f"oauth2/access_token: {answer.status_code} {answer.text[:200]} "
                "(a new authorization_code is needed)"
            )
        data = answer.json()
        access = shape(data.get("access_token"), str, "oauth2/access_token", "access_token")
        refresh = shape(data.get("refresh_token"), str, "oauth2/access_token", "refresh_token")
        expires_in = shape(data.get("expires_in"), int, "oauth2/access_token", "expires_in")
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)

        def store() -> None:  # the new pair first: the old refresh token is dead already
            with self.core.store.write() as conn:
                conn.execute(sa.delete(token_t))
                conn.execute(
                    sa.insert(token_t).values(
                        id=1, access_token=access, refresh_token=refresh, expires_at=expires_at
                    )
                )

        await asyncio.to_thread(store)
        self.access, self._refresh_token, self.expires_at = access, refresh, expires_at
        self.refreshes += 1
        log.info("amoCRM access token renewed (valid %d s)", expires_in)


class AmoApi:
    """The requests the connector makes, each paced and with the shared fault rules."""

    def __init__(self, core: Switchboard, settings: AmoCrmSettings) -> None:
        client = httpx.AsyncClient(timeout=settings.request_timeout)
        self.tokens = Tokens(core, settings, client)
        self.http = CrmHttp(
            settings.base_url,
            rate=settings.requests_per_second,
            headers=self.tokens.headers,
            refresh=self.tokens.refresh,
            client=client,
        )

    async def close(self) -> None:
        await self.http.close()

    async def users(self) -> dict[int, str]:
        """Every user of the account: id to name."""
        what = "GET /api/v4/users"
        data = CrmHttp.json_of(
            await self.http.request("GET", "/api/v4/users", what=what, params={"limit": 250}),
            what,
        )
        users = shape(shape(data, dict, what, "body").get("_embedded"), dict, what, "_embedded")
        found = {}
        for user in shape(users.get("users"), list, what, "_embedded.users"):
            user = shape(user, dict, what, "a user")
            found[shape(user.get("id"), int, what, "user.id")] = str(user.get("name") or "")
        return found

    async def find_contact(self, query: str) -> dict[str, Any] | None:
        """The first contact whose fields match ``query`` (a phone's digits or an email);
        amoCRM answers 204 without a body when none does."""
        what = "GET /api/v4/contacts"
        answer = await self.http.request(
            "GET", "/api/v4/contacts", what=what, params={"query": query}, ok=(200, 204)
        )
        if answer.status_code == 204 or not answer.content:
            return None
        data = shape(CrmHttp.json_of(answer, what), dict, what, "body")
        contacts = shape(
            shape(data.get("_embedded"), dict, what, "_embedded").get("contacts"),
            list,
            what,
            "_embedded.contacts",
        )
        if not contacts:
            return None
        first = shape(contacts[0], dict, what, "a contact")
        shape(first.get("id"), int, what, "contact.id")
        return first

    async def create_contact(
        self, name: str, phones: list[str], emails: list[str], user: int | None
    ) -> int:
        what = "POST /api/v4/contacts"
        fields = []
        if phones:
            fields.append(
                {
                    "field_code": "PHONE",
                    "values": [{"value": p, "enum_code": "WORK"} for p in phones],
                }
            )
        if emails:
            fields.append(
                {
                    "field_code": "EMAIL",
                    "values": [{"value": e, "enum_code": "WORK"} for e in emails],
                }
            )
        item: dict[str, Any] = {"name": name[:250], "custom_fields_values": fields}
        if user is not None:
            item["responsible_user_id"] = user
        answer = await self.http.request("POST", "/api/v4/contacts", what=what, json=[item])
        return self._first_id(CrmHttp.json_of(answer, what), what, "contacts")

    async def add_call(self, call: dict[str, Any]) -> dict[str, Any] | None:
        """``POST /api/v4/calls``: the call lands on the contact (or its single open lead)
        with this phone; None when amoCRM found no entity for it."""
        what = "POST /api/v4/calls"
        answer = await self.http.request("POST", "/api/v4/calls", what=what, json=[call])
        data = shape(CrmHttp.json_of(answer, what), dict, what, "body")
        calls = shape(data.get("_embedded") or {}, dict, what, "_embedded").get("calls") or []
        if not shape(calls, list, what, "_embedded.calls"):
            return None
        first = shape(calls[0], dict, what, "a call")
        shape(first.get("id"), int, what, "call.id")
        return first

    async def add_unsorted_call(self, item: dict[str, Any]) -> str:
        """``POST /api/v4/leads/unsorted/sip``: an unknown caller's call as an unsorted
        lead; its ``uid``."""
        what = "POST /api/v4/leads/unsorted/sip"
        answer = await self.http.request(
            "POST", "/api/v4/leads/unsorted/sip", what=what, json=[item]
        )
        data = shape(CrmHttp.json_of(answer, what), dict, what, "body")
        unsorted = shape(
            shape(data.get("_embedded"), dict, what, "_embedded").get("unsorted"),
            list,
            what,
            "_embedded.unsorted",
        )
        if not unsorted:
            raise SkipEvent(f"{what}: no unsorted lead in the answer")
        return shape(shape(unsorted[0], dict, what, "unsorted").get("uid"), str, what, "uid")

    async def add_note(self, contact_id: int, text: str) -> int:
        what = "POST /api/v4/contacts/{id}/notes"
        answer = await self.http.request(
            "POST",
            f"/api/v4/contacts/{contact_id}/notes",
            what=what,
            json=[{"note_type": "common", "params": {"text": text}}],
        )
        return self._first_id(CrmHttp.json_of(answer, what), what, "notes")

    @staticmethod
    def _first_id(data: Any, what: str, key: str) -> int:
        items = shape(
            shape(shape(data, dict, what, "body").get("_embedded"), dict, what, "_embedded").get(
                key
            ),
            list,
            what,
            f"_embedded.{key}",
        )
        if not items:
            raise SkipEvent(f"{what}: no {key} in the answer")
        return shape(shape(items[0], dict, what, key).get("id"), int, what, f"{key}[0].id")
