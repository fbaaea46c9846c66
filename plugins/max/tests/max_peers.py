"""A runner with the MAX channel against the loopback MAX Bot API stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from switchboard import ChannelState
from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import RunningService, kept_read, make_config, serve_in_thread
from switchboard_max import WEBHOOK_PATH, MaxPlugin, MaxSettings
from switchboard_max.tables import webhook_t
from switchboard_max.testing import SECRET, MaxApiStandIn

API_TOKEN = "crm-token-0123456789abcdef"


def max_settings(api: MaxApiStandIn, **extra: Any) -> dict[str, Any]:
    return {
        "token": api.token,
        "api_url": api.url,
        "secret": SECRET,
        "webhook_url": "https://crm.example.com/max/webhook",
        "poll_timeout": 1,
        **extra,
    }


def until(check: Any, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


@contextmanager
def max_service(
    folder: Path, api: MaxApiStandIn, database_url: str | None = None, **extra: Any
) -> Iterator[RunningService]:
    plugins = Plugins()
    assert plugins.register(MaxPlugin(), "max"), plugins.errors
    calls = len(api.calls)
    core: dict[str, Any] = {
        "default_region": "RU",
        "tokens": [{"token": API_TOKEN, "role": "admin", "name": "crm"}],
        "outbox": {"poll_interval": 0.05, "backoff_initial": 0.05, "backoff_max": 0.2},
    }
    if database_url:
        core["database_url"] = database_url
    data = {"switchboard": core, "plugins": {"max": max_settings(api, **extra)}}
    app = create_app(make_config(folder, data, {"max": MaxSettings}), plugins=plugins)
    with serve_in_thread(app) as running:
        if "token" not in extra:  # a refused token never runs
            channels = running.switchboard.channels
            until(lambda: channels["max"].state is ChannelState.RUNNING)
        if extra.get("mode", "longpoll") == "longpoll" and "token" not in extra:
            # with no marker saved, MAX's updates start from the request: wait for it
            until(lambda: any(w == "GET /updates" for _, w in api.calls[calls:]))
        yield running


def settled(service: RunningService, within: float = 10.0) -> None:
    """Wait until the channel has read every webhook body it kept."""
    kept_read(service, webhook_t, within=within)


def post_webhook(
    service: RunningService, update: dict[str, Any] | bytes, secret: str | None = SECRET
) -> httpx.Response:
    """POST a webhook update; when answered 200, wait until it is read."""
    body = update if isinstance(update, bytes) else json.dumps(update).encode()
    headers = {"X-Max-Bot-Api-Secret": secret} if secret is not None else {}
    response = httpx.post(service.url + WEBHOOK_PATH, content=body, headers=headers, timeout=10)
    if response.status_code == 200:
        settled(service)
    return response


def api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10)
