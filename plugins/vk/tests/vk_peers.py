"""A runner with the VK channel against the loopback VK API stand-in."""

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
from switchboard_vk import CALLBACK_PATH, VkPlugin, VkSettings
from switchboard_vk.tables import callback_t
from switchboard_vk.testing import CONFIRMATION, GROUP_ID, SECRET, VkApiStandIn

API_TOKEN = "crm-token-0123456789abcdef"


def vk_settings(vk: VkApiStandIn, **extra: Any) -> dict[str, Any]:
    return {
        "group_id": GROUP_ID,
        "access_token": vk.token,
        "api_url": vk.url,
        "confirmation_code": CONFIRMATION,
        "secret": SECRET,
        "long_poll_wait": 1,
        **extra,
    }


@contextmanager
def vk_service(
    folder: Path, vk: VkApiStandIn, database_url: str | None = None, **extra: Any
) -> Iterator[RunningService]:
    plugins = Plugins()
    assert plugins.register(VkPlugin(), "vk"), plugins.errors
    calls = len(vk.calls)
    core: dict[str, Any] = {
        "default_region": "RU",
        "tokens": [{"token": API_TOKEN, "role": "admin", "name": "crm"}],
        "outbox": {"poll_interval": 0.05, "backoff_initial": 0.05, "backoff_max": 0.2},
    }
    if database_url:
        core["database_url"] = database_url
    data = {"switchboard": core, "plugins": {"vk": vk_settings(vk, **extra)}}
    app = create_app(make_config(folder, data, {"vk": VkSettings}), plugins=plugins)
    with serve_in_thread(app) as running:
        if "access_token" not in extra:  # a refused token never runs
            channels = running.switchboard.channels
            until(lambda: channels["vk"].state is ChannelState.RUNNING)
        if extra.get("mode", "longpoll") == "longpoll" and "access_token" not in extra:
            # VK's long poll starts from "now" when no position was saved: wait for it,
            # so updates pushed next are the channel's to read
            until(lambda: any(m == "groups.getLongPollServer" for _, m in vk.calls[calls:]))
        yield running


def settled(service: RunningService, within: float = 10.0) -> None:
    """Wait until the channel has read every Callback API body it kept."""
    kept_read(service, callback_t, within=within)


def post_callback(service: RunningService, update: dict[str, Any] | bytes) -> httpx.Response:
    """POST a Callback API event; when answered ``ok``, wait until it is read."""
    body = update if isinstance(update, bytes) else json.dumps(update).encode()
    response = httpx.post(service.url + CALLBACK_PATH, content=body, timeout=10)
    if response.text == "ok":
        settled(service)
    return response


def api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10)


def until(check: Any, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value
