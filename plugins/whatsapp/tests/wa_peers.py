"""A runner with the WhatsApp channel against the loopback Graph API stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import RunningService, kept_read, make_config, serve_in_thread
from switchboard_whatsapp import WEBHOOK_PATH, WhatsAppPlugin, WhatsAppSettings
from switchboard_whatsapp.tables import webhook_t
from switchboard_whatsapp.testing import (
    APP_SECRET,
    PHONE_ID,
    VERIFY_TOKEN,
    GraphApi,
    signature,
)

API_TOKEN = "crm-token-0123456789abcdef"


def wa_settings(graph: GraphApi, **extra: Any) -> dict[str, Any]:
    return {
        "phone_number_id": PHONE_ID,
        "access_token": graph.token,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "graph_url": graph.url,
        "per_recipient_seconds": 0.0,
        **extra,
    }


def wa_config(
    folder: Path,
    graph: GraphApi,
    database_url: str | None = None,
    templates: dict[str, Any] | None = None,
    **extra: Any,
) -> Any:
    core: dict[str, Any] = {
        "default_region": "US",
        "tokens": [{"token": API_TOKEN, "role": "admin", "name": "crm"}],
        "outbox": {"poll_interval": 0.05, "backoff_initial": 0.05, "backoff_max": 0.2},
    }
    if database_url:
        core["database_url"] = database_url
    if templates:
        core["templates"] = templates
    data = {"switchboard": core, "plugins": {"whatsapp": wa_settings(graph, **extra)}}
    return make_config(folder, data, {"whatsapp": WhatsAppSettings})


@contextmanager
def whatsapp_service(
    folder: Path,
    graph: GraphApi,
    database_url: str | None = None,
    templates: dict[str, Any] | None = None,
    **extra: Any,
) -> Iterator[RunningService]:
    plugins = Plugins()
    assert plugins.register(WhatsAppPlugin(), "whatsapp"), plugins.errors
    config = wa_config(folder, graph, database_url, templates, **extra)
    app = create_app(config, plugins=plugins)
    with serve_in_thread(app) as running:
        yield running


def settled(service: RunningService, within: float = 10.0) -> None:
    """Wait until the channel has read every webhook body it kept."""
    kept_read(service, webhook_t, within=within)


def post_webhook(
    target: RunningService | str, body: bytes, sig: str | None = "good"
) -> httpx.Response:
    """POST a webhook body (signed unless told otherwise); with a running service, wait
    until the channel has read what it accepted."""
    url = target if isinstance(target, str) else target.url
    headers = {"Content-Type": "application/json"}
    if sig == "good":
        headers["X-Hub-Signature-256"] = signature(body)
    elif sig is not None:
        headers["X-Hub-Signature-256"] = sig
    response = httpx.post(url + WEBHOOK_PATH, content=body, headers=headers, timeout=10)
    if response.status_code == 200 and not isinstance(target, str):
        settled(target)
    return response


def api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10)


def loads(body: bytes) -> Any:
    return json.loads(body)
