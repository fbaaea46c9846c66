"""The console with switchboard-speech: the transcript, talk metrics and score under the
recording on the card (a line's time plays the recording from there, in Chromium), the
transcript search page, and the dashboard's speech table; what was said only for those
who may hear the recording."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_peers import chromium, console_service, screenshot, signed_in
from test_console_pages import client, sign_in

from switchboard.testing import RunningService
from switchboard_speech import SpeechPlugin, SpeechSettings
from switchboard_speech.testing import Line, conversation

RULES = [
    {"name": "greeting", "phrases": ["good morning"], "within_s": 5},
    {"name": "next step", "phrases": ["schedule a demo"]},
]
SCRIPT = [
    Line("agent", 0.5, "Good morning, thank you for calling Acme."),
    Line("customer", 4.0, "Hello, I have a problem with my order."),
]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    with console_service(
        tmp_path / "service",
        (SpeechPlugin(), "speech", SpeechSettings),
        plugins_config={"speech": {"rules": RULES}},
    ) as running:
        yield running


def analysed_call(service: RunningService, tmp_path: Path) -> int:
    """A call alice took, recorded and analysed by the runner; its contact's id."""
    from speech_rig import recorded_call

    sb = service.switchboard
    wav = tmp_path / "call.wav"
    conversation(wav, SCRIPT, 8)
    service.call(recorded_call(sb, "call-1", wav))
    speech: Any = sb.plugin("speech").speech  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    while service.call(speech.analyses(["call-1"])).get("call-1", {}).get("status") != "done":
        assert time.monotonic() < deadline, "not analysed within 60 s"
        time.sleep(0.1)
    return int(sb.store.get_call("call-1").contact_id)


def test_the_card_search_and_dashboard_show_what_was_said(
    service: RunningService, tmp_path: Path
) -> None:
    contact_id = analysed_call(service, tmp_path)
    with client(service) as alice:
        sign_in(alice, "alice")
        card = alice.get(f"/console/contacts/{contact_id}").text
        assert 'data-testid="transcript"' in card and "problem with my order" in card
        assert 'data-rule="greeting"' in card and "Score 50" in card
        assert "interruptions 0" in card
        found = alice.get("/console/search", params={"q": "order"}).text
        assert "<mark>order</mark>" in found and f"/console/contacts/{contact_id}" in found
    with client(service) as bob:
        sign_in(bob, "bob")
        assert 'data-testid="transcript"' not in bob.get(f"/console/contacts/{contact_id}").text
        assert "No call has these words." in bob.get("/console/search", params={"q": "order"}).text
    with client(service) as sue:
        sign_in(sue, "sue")
        board = sue.get("/console/dashboard").text
        assert (
            'data-testid="speech"' in board
            and '<tr data-key="alice"><th>alice</th><td>1</td><td>50' in board
        )
        rows = sue.get("/console/dashboard/speech.csv").text.splitlines()
        assert rows[0].startswith("agent,calls,score") and rows[1].startswith("alice,1,50.0")
        assert "Nothing" not in sue.get("/console/search", params={"q": '"my order" -zebra'}).text


async def test_a_transcript_line_plays_the_recording_from_its_time(
    service: RunningService, tmp_path: Path
) -> None:
    contact_id = await asyncio.to_thread(analysed_call, service, tmp_path)
    async with chromium("--autoplay-policy=no-user-gesture-required") as browser:
        page = await signed_in(browser, service.url, "alice")
        await page.goto(f"{service.url}/console/contacts/{contact_id}")
        lines = page.locator("[data-testid=transcript] li")
        assert await lines.count() == 2
        await lines.nth(1).locator("[data-seek]").click()
        at = await page.evaluate("document.querySelector('[data-testid=recording]').currentTime")
        assert 3.5 <= at <= 5.5  # the customer's line starts at 4 s
        await screenshot(page, "speech-card")
    async with httpx.AsyncClient(base_url=service.url) as c:
        assert (await c.get("/console/search")).status_code in (303, 307, 401)
