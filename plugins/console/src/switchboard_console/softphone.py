"""The console's softphone signalling: one WebSocket per tab, tied to the console session.

The browser connects to ``/console/softphone``; the connection is taken only from a page
of this console (the ``Origin`` must be this host: no other site's page can open it with
the agent's cookie) and with a signed-in session whose token names an agent. The first
message must carry the session's CSRF token. From then on messages are JSON objects (at
most ``MAX_MESSAGE`` bytes each) with a ``type``:

- to the voice channel's leg, through the core's ``Softphones`` (``answer``, ``decline``,
  ``hangup``, ``dtmf``); refused for a leg that does not ring this agent;
- call control through the core's service API, with the session's rights (``hold``,
  ``resume``, ``transfer``, ``consult`` with the call's id, and ``to`` for the last two);
- ``take``: make this tab the agent's softphone when another one is.

docs/softphone.md has the whole exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from switchboard import Address, Agent, Invalid, Switchboard, SwitchboardError

log = logging.getLogger("switchboard.console.softphone")

MAX_MESSAGE = 64 * 1024  # an SDP answer is a few KB
HELLO_SECONDS = 10.0
CONTROL = ("hold", "resume", "transfer", "consult")
POLICY_VIOLATION = 1008


class WebSocketLink:
    """A connected tab, as the core's ``SoftphoneLink``."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()  # one frame at a time on the socket

    async def send(self, message: Mapping[str, Any]) -> None:
        async with self._lock:
            await self.ws.send_text(json.dumps(dict(message)))


def same_origin(ws: WebSocket) -> bool:
    """Whether the page that opened the socket is this console's (cross-site WebSocket
    hijacking: a browser sends the agent's cookie with any site's WebSocket)."""
    origin = ws.headers.get("origin")
    host = ws.headers.get("host")
    return bool(origin and host and urlsplit(origin).netloc == host)


async def target(sb: Switchboard, to: object) -> Agent | Address:
    """An agent (by name or extension), else a number."""
    if not isinstance(to, str) or not 0 < len(to) <= 100:
        raise ValueError("to: an agent's name or extension, or a number")
    try:
        return await sb.call_target(to)
    except Invalid as exc:
        raise ValueError(f"to: {exc}") from None


def add_routes(router: APIRouter, console: Any) -> None:
    @router.websocket("/softphone")
    async def softphone(ws: WebSocket) -> None:
        session = await console.session(ws)
        agent = session.who.agent if session is not None else None
        if not same_origin(ws) or session is None or agent is None or agent.id is None:
            await ws.close(code=POLICY_VIOLATION)
            return
        await ws.accept()
        try:
            hello = json.loads(await asyncio.wait_for(ws.receive_text(), HELLO_SECONDS))
        except (TimeoutError, ValueError, WebSocketDisconnect):
            await _close(ws)
            return
        if not isinstance(hello, dict) or hello.get("csrf") != session.csrf:
            await _close(ws)
            return
        sb: Switchboard = ws.app.state.switchboard
        phones = sb.softphones
        link = WebSocketLink(ws)
        active = phones.connect(agent.id, link)
        if not active and hello.get("take"):
            await phones.take(agent.id, link)
            active = True
        await link.send({"type": "ready" if active else "busy", "agent": agent.name})
        try:
            while True:
                raw = await ws.receive_text()
                reply = await _handle(sb, session.who, agent.id, link, raw)
                if reply is not None:
                    await link.send(reply)
        except WebSocketDisconnect:
            pass
        finally:
            phones.disconnect(agent.id, link)


_control_tasks: set[asyncio.Task[None]] = set()


def _control(
    sb: Switchboard, who: Any, link: WebSocketLink, kind: str, message: dict[str, Any]
) -> None:
    """Hold, resume, transfer or consult, in the background: a transfer waits for the
    target to answer, and meanwhile the tab's other messages (hang up, keys) must go
    through. It goes on if the tab closes; its outcome is sent to the tab if still there."""

    async def run() -> None:
        call_id = message.get("call")
        try:
            if not isinstance(call_id, str) or not call_id:
                raise ValueError("call: the call's id")
            to = await target(sb, message.get("to")) if kind in ("transfer", "consult") else None
            record = await sb.control_call(who, call_id, kind, to)
            reply = {"type": "done", "action": kind, "call": call_id, "agent": record.agent_id}
        except (LookupError, ValueError, SwitchboardError) as exc:
            reply = {"type": "error", "call": str(call_id)[:200], "message": str(exc)[:300]}
        with contextlib.suppress(Exception):  # the tab may be gone
            await link.send(reply)

    task = asyncio.get_running_loop().create_task(run(), name=f"softphone-{kind}")
    _control_tasks.add(task)
    task.add_done_callback(_control_tasks.discard)


async def _close(ws: WebSocket) -> None:
    with contextlib.suppress(Exception):
        await ws.close(code=POLICY_VIOLATION)


async def _handle(
    sb: Switchboard, who: Any, agent_id: int, link: WebSocketLink, raw: str
) -> dict[str, Any] | None:
    """One message from the tab; what to answer (an ``error`` naming the leg or call)."""
    if len(raw) > MAX_MESSAGE:
        return {"type": "error", "message": f"a message of at most {MAX_MESSAGE} bytes"}
    try:
        message = json.loads(raw)
    except ValueError:
        return {"type": "error", "message": "not JSON"}
    if not isinstance(message, dict):
        return {"type": "error", "message": "a JSON object with a type"}
    kind = message.get("type")
    about = {k: message[k] for k in ("leg", "call") if isinstance(message.get(k), str)}
    phones = sb.softphones
    if kind == "take":
        await phones.take(agent_id, link)
        return {"type": "ready"}
    if not phones.connect(agent_id, link):  # not the active tab: only "take" goes
        return {"type": "busy"}
    if kind in CONTROL:
        _control(sb, who, link, kind, message)
        return None
    try:
        await phones.received(agent_id, message)
    except PermissionError as exc:
        log.warning("softphone of agent %s: refused %s: %s", agent_id, str(kind)[:20], exc)
        return {"type": "error", **about, "message": str(exc)}
    except (LookupError, ValueError, SwitchboardError) as exc:
        return {"type": "error", **about, "message": str(exc)[:300]}
    return None
