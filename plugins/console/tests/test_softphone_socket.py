"""The softphone's WebSocket (docs/softphone.md, "Signalling"): who may open it, one active
tab per agent, and what it refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_peers import TOKENS, console_service
from test_console_pages import csrf_of
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard.testing import RunningService

AGENTS = [
    {"name": "alice", "ring": "browser"},
    {"name": "bob", "ring": "browser"},
    {"name": "sue", "extension": "103", "role": "supervisor"},
]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    with console_service(tmp_path / "service", agents=AGENTS) as running:
        yield running


def session_of(service: RunningService, who: str) -> tuple[str, str]:
    """A signed-in session's cookie header and CSRF token."""
    with httpx.Client(base_url=service.url, timeout=10) as c:
        form = c.get("/console/login")
        c.post("/console/login", data={"token": TOKENS[who], "csrf": csrf_of(form.text)})
        page = c.get("/console/contacts")
        assert 'id="softphone"' in page.text  # the panel, for an agent ringing in the browser
        return f"switchboard_console={c.cookies['switchboard_console']}", csrf_of(page.text)


def socket(service: RunningService, cookie: str | None, origin: str | None = None) -> Any:
    headers = {"Cookie": cookie} if cookie else {}
    url = service.url.replace("http://", "ws://") + "/console/softphone"
    return connect(url, additional_headers=headers, origin=origin or service.url)  # type: ignore[arg-type]


async def said(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.recv(decode=True))
    return message


async def test_only_this_consoles_pages_with_a_session_and_its_csrf_token_get_in(
    service: RunningService,
) -> None:
    cookie, csrf = session_of(service, "alice")
    for who, origin in ((cookie, "http://evil.example"), (None, None)):
        with pytest.raises(InvalidStatus) as refused:  # closed before the handshake: 403
            async with socket(service, who, origin):
                pass
        assert refused.value.response.status_code == 403
    async with socket(service, cookie) as ws:
        await ws.send(json.dumps({"type": "hello", "csrf": "not-the-token"}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with socket(service, cookie) as ws:
        await ws.send(json.dumps({"type": "hello", "csrf": csrf}))
        assert await said(ws) == {"type": "ready", "agent": "alice"}


async def test_one_tab_is_the_softphone_and_another_may_take_over(
    service: RunningService,
) -> None:
    cookie, csrf = session_of(service, "alice")
    hello = json.dumps({"type": "hello", "csrf": csrf})
    async with socket(service, cookie) as first, socket(service, cookie) as second:
        await first.send(hello)
        assert (await said(first))["type"] == "ready"
        await second.send(hello)
        assert (await said(second))["type"] == "busy"
        await second.send(json.dumps({"type": "hangup", "leg": "x"}))
        assert (await said(second))["type"] == "busy"  # only "take" from a busy tab
        await second.send(json.dumps({"type": "take"}))
        assert (await said(second))["type"] == "ready"
        assert (await said(first))["type"] == "replaced"
        assert service.switchboard.softphones.status()["connected"] == 1


async def test_bad_and_foreign_messages_are_refused_with_a_reason(
    service: RunningService,
) -> None:
    sb = service.switchboard
    alice, alice_csrf = session_of(service, "alice")
    bob, bob_csrf = session_of(service, "bob")

    class Ringing:  # a voice channel's leg ringing bob
        signals: list[Any] = []

        async def signal(self, message: Any) -> None:
            self.signals.append(message)

        def link_lost(self) -> None:
            pass

        def link_restored(self) -> None:
            pass

    async with socket(service, alice) as a, socket(service, bob) as b:
        await a.send(json.dumps({"type": "hello", "csrf": alice_csrf}))
        await b.send(json.dumps({"type": "hello", "csrf": bob_csrf}))
        assert (await said(a))["type"] == (await said(b))["type"] == "ready"
        bob_id = sb.store.get_agent("bob").id
        leg = Ringing()
        leg_id = sb.softphones.open(bob_id, leg)
        cases = [
            ("not json", "not JSON"),
            ("[1, 2]", "a JSON object"),
            ("x" * 70_000, "at most"),
            (json.dumps({"type": "decline", "leg": leg_id}), "does not ring this agent"),
            (json.dumps({"type": "answer", "leg": "gone"}), "no such call"),
            (json.dumps({"type": "hold"}), "call: the call's id"),
            (json.dumps({"type": "transfer", "call": "c1", "to": ""}), "to: an agent"),
            (json.dumps({"type": "hold", "call": "no-such-call"}), "no-such-call"),
        ]
        for sent, reason in cases:
            await a.send(sent)
            answer = await said(a)
            assert answer["type"] == "error" and reason in answer["message"], (sent[:40], answer)
        assert leg.signals == []  # nothing of alice's reached bob's call
        await b.send(json.dumps({"type": "decline", "leg": leg_id}))
        await b.send(json.dumps({"type": "take"}))  # a message to wait for
        assert (await said(b))["type"] == "ready"
        assert leg.signals == [{"type": "decline", "leg": leg_id}]
