"""The `{{ cookiecutter.plugin_name }}` channel: sends through an HTTP gateway, receives
its inbound messages on a runner route."""

from __future__ import annotations

import hmac
import time
from typing import Any

import attrs
import httpx
import sqlalchemy as sa

from switchboard import (
    ChannelContext,
    InboundMessage,
    InvalidInbound,
    OutboundMessage,
    PermanentSendError,
    Receipt,
    TransientSendError,
)
from {{ cookiecutter.package }}.tables import gateway_reply_t


@attrs.define
class Settings:
    """``[plugins.{{ cookiecutter.plugin_name }}]``."""

    api_url: str
    token: str
    inbound_secret: str
    timeout: float = 10.0


class {{ cookiecutter.class_name }}Channel:
    name = "{{ cookiecutter.plugin_name }}"
    address_kind = "{{ cookiecutter.address_kind }}"

    def __init__(self) -> None:
        self.ctx: ChannelContext | None = None
        self.settings: Settings | None = None
        self.client: httpx.AsyncClient | None = None

    async def start(self, ctx: ChannelContext) -> None:
        self.ctx, self.settings = ctx, ctx.settings
        assert self.settings is not None
        self.client = httpx.AsyncClient(
            base_url=self.settings.api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {self.settings.token}"},
            timeout=self.settings.timeout,
        )

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.client is None:
            raise TransientSendError("the channel is not running")
        try:
            response = await self.client.post(
                "/messages", json={"to": message.address.value, "text": message.text or ""})
        except httpx.HTTPError as exc:
            raise TransientSendError(f"gateway unreachable: {exc}") from None
        await self.keep_reply(response)
        if response.status_code == 429:
            retry = response.headers.get("retry-after", "")
            raise TransientSendError("gateway: too many requests",
                                     retry_after=float(retry) if retry.isdigit() else None)
        if response.status_code >= 500:
            raise TransientSendError(f"gateway error {response.status_code}")
        if response.status_code >= 400:
            raise PermanentSendError(f"gateway refused ({response.status_code}): "
                                     f"{response.text[:200]}")
        try:
            return Receipt(external_id=str(response.json()["id"]))
        except (ValueError, KeyError) as exc:
            raise TransientSendError(f"gateway answered without an id: {exc}") from None

    async def keep_reply(self, response: httpx.Response) -> None:
        """A row in the plugin's own table (see tables.py) for each gateway answer."""
        assert self.ctx is not None
        try:
            external_id = str(response.json().get("id") or "")[:255] or None
        except (ValueError, AttributeError):
            external_id = None
        row = {"external_id": external_id, "status": response.status_code, "at": time.time()}
        await self.ctx.transaction(lambda conn: conn.execute(sa.insert(gateway_reply_t), row))

    def secret_matches(self, given: str) -> bool:
        secret = self.settings.inbound_secret if self.settings else ""
        return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())

    async def accept(self, payload: dict[str, Any]) -> None:
        """Store one inbound message from the gateway (the route calls this)."""
        if self.ctx is None:
            raise ValueError("the channel is not running")
        message = InboundMessage(
            external_id=str(payload["id"]),
            sender=f"{self.address_kind}:{payload['from']}",
            text=payload.get("text"),
        )
        try:
            await self.ctx.receive(message)
        except InvalidInbound as exc:
            # it can never be stored as it is: keep it with the reason and go on
            await self.ctx.quarantine(message.external_id, str(exc), payload)
