"""Requests for the runner that holds a call.

A live call exists in the runner whose channel handles it (its dialogs, its media). With
several runners behind a load balancer, a request to hold, resume, transfer, consult or
supervise that call (``sb.control_call``, ``sb.supervise_call``: the API and the console)
reaches any of them. The record names the runner (``call_record.node``); when that is
another live runner, this one asks it over PostgreSQL (``NOTIFY switchboard_calls``; each
runner LISTENs, loop ``calls:relay``) and returns its answer: the same result and the same
domain errors as if the request had come to it.

The runner asked acknowledges at once (a runner that does not within
``ACK_SECONDS`` is taken for gone: ``Unavailable``) and answers when done (at most
``ANSWER_SECONDS``: a transfer waits for its target). Who asks travels as their name,
role and agent id, and is checked again by the runner that acts; only those who can
write to the database can NOTIFY.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from switchboard.auth import Principal
from switchboard.errors import Conflict, Forbidden, Invalid, NotFound, SwitchboardError, Unavailable
from switchboard.models import Agent, Role
from switchboard.store import call_t
from switchboard.tasks import Tasks

if TYPE_CHECKING:
    from switchboard.core import Switchboard
    from switchboard.models import CallRecord

log = logging.getLogger("switchboard.relay")

RELAY_CHANNEL = "switchboard_calls"
ACK_SECONDS = 3.0
ANSWER_SECONDS = 90.0
_ERRORS: dict[str, type[SwitchboardError]] = {
    e.__name__: e for e in (NotFound, Conflict, Invalid, Forbidden, Unavailable)
}


class CallRelay:
    """``sb.relay``: ask the runner holding a call to act on it."""

    def __init__(self, core: Switchboard) -> None:
        self.core = core
        self._waiting: dict[str, tuple[asyncio.Event, asyncio.Future[dict[str, Any]]]] = {}
        self._tasks = Tasks(log)

    @property
    def node(self) -> str:
        return self.core.singletons.node

    async def holder(self, call: CallRecord) -> str | None:
        """The other runner holding ``call`` while it lasts (PostgreSQL), else None: this
        runner acts itself."""
        if call.ended_at is not None or self.core.store.engine.dialect.name != "postgresql":
            return None

        def read() -> str | None:
            with self.core.store.engine.connect() as conn:
                return conn.execute(
                    sa.select(call_t.c.node).where(
                        call_t.c.call_id == call.call_id, call_t.c.channel == call.channel
                    )
                ).scalar()

        node = await asyncio.to_thread(read)
        return node if node and node != self.node else None

    async def listen(self) -> None:
        """``calls:relay``: take the requests and answers addressed to this runner."""
        async with await self.core.store.listen_connection() as conn:
            await conn.execute(f"LISTEN {RELAY_CHANNEL}")
            async for note in conn.notifies():
                self._received(note.payload)

    def _received(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("to") != self.node:
            return
        kind = message.get("kind")
        if kind == "ask":
            self._tasks.spawn(self._serve(message), name="relay-serve")
        elif kind in ("ack", "answer") and message.get("id") in self._waiting:
            acked, answered = self._waiting[message["id"]]
            acked.set()
            if kind == "answer" and not answered.done():
                answered.set_result(message)

    async def ask(self, node: str, op: str, who: Principal, **args: str | None) -> None:
        """Have ``node`` do ``op`` (``control``, ``supervise``) for ``who``; raises what
        it raised (a domain error), or ``Unavailable`` when it does not answer."""
        ident = uuid.uuid4().hex
        acked = asyncio.Event()
        answered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = (acked, answered)
        try:
            await self._notify(
                {
                    "kind": "ask",
                    "to": node,
                    "from": self.node,
                    "id": ident,
                    "op": op,
                    "args": args,
                    "who": {"name": who.name, "role": str(who.role), "agent": who.agent_id},
                }
            )
            try:
                await asyncio.wait_for(acked.wait(), ACK_SECONDS)
            except TimeoutError:
                raise Unavailable(f"the runner holding the call ({node}) does not answer") from None
            try:
                answer = await asyncio.wait_for(answered, ANSWER_SECONDS)
            except TimeoutError:
                raise Unavailable(
                    f"the runner holding the call ({node}) did not finish within "
                    f"{ANSWER_SECONDS:.0f} s"
                ) from None
        finally:
            self._waiting.pop(ident, None)
        error = answer.get("error")
        if error:
            raise _ERRORS.get(str(error), Unavailable)(str(answer.get("message") or error))

    async def _serve(self, message: dict[str, Any]) -> None:
        reply = {"to": message.get("from"), "id": message.get("id")}
        await self._notify({"kind": "ack", **reply})
        answer: dict[str, Any] = {"kind": "answer", **reply}
        try:
            who = await self._principal(message.get("who"))
            args = message.get("args")
            if not isinstance(args, dict):
                raise Invalid("a relayed request without arguments")
            call_id = str(args.get("call_id") or "")
            if message.get("op") == "control":
                to = args.get("to")
                target = await self.core.call_target(str(to)) if to else None
                await self.core.control_call_here(who, call_id, str(args.get("action")), target)
            elif message.get("op") == "supervise":
                await self.core.supervise_call_here(who, call_id, str(args.get("mode")))
            else:
                raise Invalid(f"unknown relayed request {str(message.get('op'))[:40]!r}")
        except SwitchboardError as exc:
            answer.update(error=type(exc).__name__, message=str(exc))
        except Exception as exc:  # reported to the asker, not raised here
            log.exception("relayed request %s failed", message.get("op"))
            answer.update(error="Unavailable", message=f"{type(exc).__name__}: {exc}")
        await self._notify(answer)

    async def _principal(self, raw: Any) -> Principal:
        if not isinstance(raw, dict):
            raise Forbidden("a relayed request without who asks")
        try:
            role = Role(str(raw.get("role")))
        except ValueError:
            raise Forbidden("a relayed request with an unknown role") from None
        agent: Agent | None = None
        if raw.get("agent") is not None:
            agent = await self.core.agent(int(raw["agent"]))
        return Principal(str(raw.get("name") or "relayed"), role, agent)

    async def _notify(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message)

        def send() -> None:
            with self.core.store.write() as conn:
                conn.execute(
                    sa.text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": RELAY_CHANNEL, "payload": payload},
                )

        await asyncio.to_thread(send)

    async def stop(self) -> None:
        await self._tasks.cancel_all()
