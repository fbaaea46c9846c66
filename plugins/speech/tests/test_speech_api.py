"""The plugin in a running service: ``call.recorded`` reaches its consumer, its workers
(``speech:jobs`` in /api/health) analyse the recording, and ``GET /api/calls?q=`` finds
the call by a word, for those who may hear it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from speech_rig import SCRIPT, SECONDS, config, recorded_call

from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import RunningService, make_config, serve_in_thread
from switchboard_speech import SpeechPlugin, SpeechSettings
from switchboard_speech.testing import conversation

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
ADMIN = "admin-token-0123456789"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningService]:
    raw = config()
    raw["switchboard"]["tokens"] = [
        *({"token": t, "agent": a} for a, t in TOKENS.items()),
        {"token": ADMIN, "role": "admin", "name": "crm"},
    ]
    plugins = Plugins()
    plugins.register(SpeechPlugin(), "speech")
    app = create_app(make_config(tmp_path, raw, {"speech": SpeechSettings}), plugins=plugins)
    with serve_in_thread(app) as service:
        yield service


def get(service: RunningService, path: str, token: str = ADMIN, **params: Any) -> httpx.Response:
    return httpx.get(
        service.url + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_a_recording_is_analysed_by_the_runner_and_found_through_the_api(
    running: RunningService, tmp_path: Path
) -> None:
    health = get(running, "/api/health").json()
    assert health["loops"]["speech:jobs"]["state"] == "running"
    assert "consumer:speech" in health["consumers"]
    wav = tmp_path / "call.wav"
    conversation(wav, SCRIPT, SECONDS)
    running.call(recorded_call(running.switchboard, "call-1", wav))
    deadline = time.monotonic() + 60
    while not (items := get(running, "/api/calls", q="problem order").json()["items"]):
        assert time.monotonic() < deadline, "not found within 60 s"
        time.sleep(0.2)
    [item] = items
    assert item["call_id"] == "call-1" and item["recording"]["allowed"]
    [match] = item["matches"]
    assert match["speaker"] == "customer" and "<mark>order</mark>" in match["highlighted"]
    mine = get(running, "/api/calls", TOKENS["alice"], q="order").json()["items"]
    assert [c["call_id"] for c in mine] == ["call-1"]
    assert get(running, "/api/calls", TOKENS["bob"], q="order").json() == {"items": []}
    assert get(running, "/api/calls", q="").status_code == 422
    assert get(running, "/api/calls", q="x" * 201).status_code == 422
