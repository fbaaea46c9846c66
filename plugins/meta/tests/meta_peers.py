"""A runner with the Meta channels against the loopback Graph API stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import RunningService, kept_read, make_config, serve_in_thread
from switchboard_meta import WEBHOOK_PATH, MetaPlugin, MetaSettings
from switchboard_meta.tables import webhook_tables
from switchboard_meta.testing import MetaGraph, settings, signature

API_TOKEN = "crm-token-0123456789abcdef"


def meta_config(
    folder: Path,
    graph: MetaGraph,
    database_url: str | None = None,
    meta: dict[str, Any] | None = None,
    templates: dict[str, Any] | None = None,
) -> Any:
    core: dict[str, Any] = {
        "tokens": [{"token": API_TOKEN, "role": "admin", "name": "crm"}],
        "outbox": {"poll_interval": 0.05, "backoff_initial": 0.05, "backoff_max": 0.2},
    }
    if database_url:
        core["database_url"] = database_url
    if templates:
        core["templates"] = templates
    data = {"switchboard": core, "plugins": {"meta": meta or settings(graph)}}
    return make_config(folder, data, {"meta": MetaSettings})


@contextmanager
def meta_service(
    folder: Path,
    graph: MetaGraph,
    database_url: str | None = None,
    meta: dict[str, Any] | None = None,
    templates: dict[str, Any] | None = None,
) -> Iterator[RunningService]:
    plugins = Plugins()
    assert plugins.register(MetaPlugin(), "meta"), plugins.errors
    app = create_app(meta_config(folder, graph, database_url, meta, templates), plugins=plugins)
    with serve_in_thread(app) as running:
        yield running


def settled(service: RunningService, within: float = 10.0) -> None:
    """Wait until both channels have read every webhook body they kept."""
    kept_read(service, *webhook_tables.values(), within=within)


def post_webhook(
    target: RunningService | str, body: bytes, sig: str | None = "good"
) -> httpx.Response:
    """POST a webhook body (signed unless told otherwise); with a running service, wait
    until the channels have read what they accepted."""
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
