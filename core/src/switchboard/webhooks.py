"""Outgoing webhooks: every event, as a signed POST, at least once, in order.

Each webhook keeps a cursor in the store (the last event id it delivered) and sends the
events after it one by one: ``POST url`` with the JSON body ``{"id", "type",
"created_at", "data"}`` and the headers ``X-Switchboard-Event-Id``, ``X-Switchboard-Event``
and ``X-Switchboard-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's
secret>``. A 2xx answer advances the cursor; anything else (or no answer within
``timeout``) is retried with exponential backoff, and after ``max_attempts`` the event is
set aside in ``webhook_failure`` and the next one goes. Each webhook runs on its own, so a
dead endpoint delays only itself. Receivers dedupe on the event id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING

import httpx

from switchboard.config import WebhookSettings
from switchboard.consumers import EventConsumer
from switchboard.events import Event

if TYPE_CHECKING:
    from switchboard.core import Switchboard


def sign(secret: str, body: bytes) -> str:
    """The ``X-Switchboard-Signature`` value of a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    """One configured webhook: an event consumer (its cursor is the webhook's name, its
    loop ``webhook:NAME``) whose handler POSTs the event."""

    def __init__(
        self, core: Switchboard, settings: WebhookSettings, client: httpx.AsyncClient
    ) -> None:
        self.s = settings
        self.client = client
        self.consumer: EventConsumer = core.consumers.add_named(
            settings.name,
            f"webhook:{settings.name}",
            self.deliver,
            types=settings.events or None,
            max_attempts=settings.max_attempts,
            backoff_initial=settings.backoff_initial,
            backoff_max=settings.backoff_max,
        )

    @property
    def delivered(self) -> int:
        return self.consumer.delivered

    @property
    def failed(self) -> int:
        return self.consumer.failed

    async def deliver(self, event: Event) -> None:
        """POST the event; anything but a 2xx answer in time raises (tried again)."""
        body = json.dumps(event.payload(), separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "x-switchboard-event-id": str(event.id),
            "x-switchboard-event": event.type,
            "x-switchboard-signature": sign(self.s.secret, body),
        }
        response = await self.client.post(
            self.s.url, content=body, headers=headers, timeout=self.s.timeout
        )
        if not response.is_success:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code}", request=response.request, response=response
            )


class Webhooks:
    """The configured webhooks, each a consumer of ``core.consumers`` (started and
    stopped with the others)."""

    def __init__(self, core: Switchboard) -> None:
        self.core = core
        self.client = httpx.AsyncClient(follow_redirects=False)
        self.hooks = [Webhook(core, s, self.client) for s in core.config.core.webhooks]

    async def close(self) -> None:
        await self.client.aclose()
