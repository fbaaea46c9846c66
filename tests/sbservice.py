"""A running Switchboard service for the cross-package tests: real uvicorn on a loopback
port, loopback channels registered, agents and tokens configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import (
    LoopbackChannel,
    LoopbackPlugin,
    LoopbackVoiceChannel,
    RunningService,
    make_config,
)

TOKENS = {
    "anna": "anna-token-0123456789",
    "boris": "boris-token-0123456789",
    "sue": "sue-token-0123456789ab",
    "admin": "admin-token-0123456789",
}


def service_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    core: dict[str, Any] = {
        "default_region": "RU",
        "agents": [
            {"name": "anna", "extension": "101"},
            {"name": "boris", "extension": "102"},
            {"name": "sue", "extension": "103", "role": "supervisor"},
        ],
        "tokens": [
            {"token": TOKENS["anna"], "agent": "anna"},
            {"token": TOKENS["boris"], "agent": "boris"},
            {"token": TOKENS["sue"], "agent": "sue"},
            {"token": TOKENS["admin"], "role": "admin", "name": "crm"},
        ],
        "templates": {
            "welcome": {
                "subject": "Welcome, {{ contact.name }}",
                "text": "Hello {{ contact.name }}, your code is {{ code }}.",
            },
        },
        "outbox": {"poll_interval": 0.05, "backoff_initial": 0.05},
        "http": {"max_body_bytes": 4096, "sse_queue_size": 20, "sse_keepalive": 1},
    }
    core.update(extra)
    return {"switchboard": core}


class Service:
    def __init__(self, running: RunningService, channels: dict[str, LoopbackChannel]) -> None:
        self.running = running
        self.url = running.url
        self.channels = channels
        self.sb = running.switchboard

    def client(self, who: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


def start_service(
    tmp_path: Path, *, plugins_config: dict[str, Any] | None = None, **extra: Any
) -> tuple[Any, dict[str, LoopbackChannel]]:
    """The app and its loopback channels (``sms``, ``mail``, ``voice``); ``extra`` goes to
    ``[switchboard]``. With ``plugins_config``, the mailings plugin is loaded too (a new
    instance) and ``[plugins.NAME]`` tables come from it."""
    channels: dict[str, LoopbackChannel] = {
        "sms": LoopbackChannel("sms"),
        "mail": LoopbackChannel("mail", "email"),
        "voice": LoopbackVoiceChannel("voice"),
    }
    plugins = Plugins()
    plugins.register(LoopbackPlugin(*channels.values()), "loopback")
    # the loaded plugins, so that webhooks may name their own events (loopback.NAME)
    loaded: dict[str, Any] = {"loopback": None}
    raw = service_config(tmp_path, **extra)
    if plugins_config is not None:
        from switchboard_mailings import MailingSettings, MailingsPlugin

        plugins.register(MailingsPlugin(), "mailings")
        loaded["mailings"] = MailingSettings
        raw["plugins"] = plugins_config
    config = make_config(tmp_path, raw, loaded)
    return create_app(config, plugins=plugins), channels


class SseClient:
    """Reads an SSE stream in a thread; ``events`` fills as they arrive."""

    def __init__(self, url: str, token: str, last_event_id: str | None = None) -> None:
        import queue
        import threading

        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self._stop = threading.Event()
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.lost: Exception | None = None  # the stream broke (its runner died)
        self._thread = threading.Thread(target=self._guarded, args=(url, headers), daemon=True)
        self._thread.start()
        assert self.connected.wait(10), "SSE stream did not connect"

    def _guarded(self, url: str, headers: dict[str, str]) -> None:
        try:
            self._read(url, headers)
        except httpx.TransportError as exc:  # the runner went away: take() times out
            self.lost = exc

    def _read(self, url: str, headers: dict[str, str]) -> None:
        import json

        with (
            httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("GET", url + "/api/events", headers=headers) as response,
        ):
            assert response.status_code == 200, response.status_code
            self.connected.set()
            event: dict[str, Any] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if not line:
                    if "data" in event:
                        self.events.put(
                            {
                                "id": event.get("id"),
                                "event": event.get("event"),
                                **json.loads(event["data"]),
                            }
                        )
                    event = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(":")
                    event[key] = value.lstrip(" ")

    def take(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [self.events.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self._stop.set()
