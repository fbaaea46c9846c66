"""The console's test rig: a runner serving the console (and the SIP and email channels when
a test gives Kamailio and an SMTP server), agents with tokens, and Debian's Chromium driven
by Playwright."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from call_seed import record_call

from switchboard import Direction, Disposition
from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.testing import (
    RunningService,
    make_config,
    missing_tool,
    serve_in_thread,
)
from switchboard_console import ConsolePlugin, ConsoleSettings

CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
# a fake microphone playing ``wav`` (looped) and no permission prompt, for the softphone


def fake_microphone(wav: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]


# screenshots of each page (git ignores /artifacts/)
ARTIFACTS = Path(os.environ.get("SWITCHBOARD_ARTIFACTS", Path(__file__).parents[3] / "artifacts"))
ARTIFACTS = ARTIFACTS / "console"

TOKENS = {
    "alice": "alice-token-0123456789",
    "bob": "bob-token-0123456789ab",
    "sue": "sue-token-0123456789ab",
}
AGENTS = [
    {"name": "alice", "extension": "101", "email": "alice@example.com"},
    {"name": "bob", "extension": "102", "email": "bob@example.com"},
    {"name": "sue", "extension": "103", "role": "supervisor"},
]
TARIFF = {
    "currency": "USD",
    "reference_name": "PSTN",
    "rates": [
        {"prefix": "+1", "price": 0.01, "reference": 0.1},
        {"prefix": "+7495", "price": 0.02, "reference": 0.25},
        {"prefix": "+7", "price": 0.05, "reference": 0.3},
    ],
}
DAY1 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
PERIOD = "from=2026-11-02&to=2026-11-03"
TEMPLATES = {
    "follow-up": {
        "subject": "Following up, {{ contact.name }}",
        "text": "Hello {{ contact.name }}, thank you for the call. {{ agent.name }}",
    }
}


def need(tool: str, install: str) -> None:
    """Skip (fail under CI) when a system tool is missing."""
    if Path(tool).exists():
        return
    missing_tool(f"needs {tool}: {install}")


def console_app(
    folder: Path,
    *plugin_objects: tuple[object, str, type[Any] | None],
    plugins_config: dict[str, Any] | None = None,
    **core: Any,
) -> Any:
    """The runner's app with the console and ``plugin_objects`` (object, name, settings)."""
    plugins = Plugins()
    settings: dict[str, type[Any] | None] = {"console": ConsoleSettings}
    assert plugins.register(ConsolePlugin(), "console")
    for obj, name, cls in plugin_objects:
        assert plugins.register(obj, name), plugins.errors
        settings[name] = cls
    data: dict[str, Any] = {
        "switchboard": {
            "default_region": "US",
            "agents": AGENTS,
            "tokens": [{"token": TOKENS[a["name"]], "agent": a["name"]} for a in AGENTS],
            "templates": TEMPLATES,
            "outbox": {"poll_interval": 0.05, "backoff_initial": 0.05},
            "http": {"sse_keepalive": 1},
            **core,
        },
        "plugins": {
            "console": {"secret": "console-test-secret-0123", "tariff": TARIFF},
            **(plugins_config or {}),
        },
    }
    return create_app(make_config(folder, data, settings), plugins=plugins)


@contextmanager
def console_service(folder: Path, *plugin_objects: Any, **kwargs: Any) -> Iterator[RunningService]:
    folder.mkdir(parents=True, exist_ok=True)
    with serve_in_thread(console_app(folder, *plugin_objects, **kwargs)) as service:
        yield service


@asynccontextmanager
async def chromium(*extra: str) -> AsyncIterator[Any]:
    """Debian's Chromium under Playwright (no browser download), with ``extra`` flags."""
    need(CHROMIUM, "apt-get install chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *extra])
        try:
            yield browser
        finally:
            await browser.close()


async def signed_in(browser: Any, url: str, who: str, locale: str = "en-US") -> Any:
    """A page of a new browser context, signed in as ``who`` through the sign-in form."""
    context = await browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(url + "/console")
    await page.fill("input[name=token]", TOKENS[who])
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/contacts")
    return page


async def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save what the page shows (all of it, or the window) as an artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path


async def seed_calls(sb: Any) -> None:
    """Six calls over two days (the analytics tests' set) to customers with known numbers."""
    await record_call(sb, "c1", DAY1, agent="alice", wait=5, talk=61, customer="+12025550101")
    await record_call(
        sb,
        "c2",
        DAY1 + timedelta(hours=1),
        agent="alice",
        wait=30,
        talk=60,
        customer="+74951234567",
    )
    await record_call(sb, "c3", DAY1 + timedelta(hours=2), customer="+74951234568")
    await record_call(
        sb,
        "c4",
        DAY1 + timedelta(hours=3),
        direction=Direction.OUTBOUND,
        agent="alice",
        wait=10,
        talk=125,
        customer="+74957654321",
    )
    await record_call(
        sb,
        "c5",
        DAY2,
        path=[("greeting", ""), ("greeting", "7")],
        disposition=Disposition.ABANDONED,
        customer="+78121234567",
    )
    await record_call(
        sb,
        "c6",
        DAY2 + timedelta(hours=1),
        direction=Direction.OUTBOUND,
        agent="bob",
        wait=8,
        talk=30,
        path=[("greeting", "1"), ("sales", "")],
        customer="+78127654321",
    )
    await record_call(
        sb,
        "c7",
        DAY2 + timedelta(hours=2),
        direction=Direction.OUTBOUND,
        agent="bob",
        wait=3,
        talk=200,
        customer="+4930123456",
    )


def cells(html: str, table: str, key: str) -> list[str]:
    """The text of a dashboard table's row (its header cell first)."""
    section = html.split(f'data-testid="{table}"', 1)[1].split("</table>", 1)[0]
    row = section.split(f'data-key="{key}"', 1)[1].split("</tr>", 1)[0]
    return [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)
    ]
