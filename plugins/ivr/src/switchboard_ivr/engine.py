"""Runs a flow on a live call, through the ``CallSession`` protocol only."""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from switchboard import Agent, CallSession, Disposition
from switchboard_ivr.flow import Flow, Node, Prompt, prompt_path

log = logging.getLogger("switchboard.ivr")

MAX_STEPS = 200  # a safety net: checked flows cannot loop forever, but callers can


def beep(seconds: float = 0.4, freq: float = 1000.0) -> bytes:
    """The tone before a voicemail (16-bit 8 kHz mono PCM, what ``play`` takes)."""
    n = int(seconds * 8000)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / 8000))) for i in range(n)
    )


async def _never(agent_id: int) -> datetime | None:
    """No call history: every agent equally idle."""
    return None


class Engine:
    """One flow, shared by every call: ring-group state (round robin) lives here."""

    def __init__(
        self,
        flow: Flow,
        render: Callable[[Prompt], Path],
        agents: Callable[[], Sequence[Agent]],
        idle_since: Callable[[int], Awaitable[datetime | None]] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.flow = flow
        self.render = render
        self.agents = agents
        self.idle_since = idle_since or _never
        self.now = now
        self._cursor: dict[str, int] = {}
        self._consented: set[int] = set()

    def path(self, prompt: Prompt) -> Path:
        return prompt_path(prompt, self.flow.folder, self.render)

    def agent(self, name: str) -> Agent | None:
        return next((a for a in self.agents() if a.name == name), None)

    async def run(self, session: CallSession) -> None:
        """Drive the call from the start node until it is handed to an agent, ends in
        voicemail or a hang-up, or the caller leaves."""
        name: str | None = self.flow.start
        steps = 0
        try:
            while name is not None and not session.hung_up and steps < MAX_STEPS:
                steps += 1
                node = self.flow.nodes[name]
                name = await getattr(self, f"_{node.type}")(node, session)
            if steps >= MAX_STEPS and not session.hung_up:
                log.warning("call %s: IVR stopped after %d steps", session.call.call_id, steps)
                await session.hangup()
        finally:
            self._consented.discard(id(session))

    async def bridge(
        self, session: CallSession, agents: Sequence[Agent], ring_timeout: float | None
    ) -> Agent | None:
        """Ring agents; the flow's consent announcement first, once per call."""
        if self.flow.consent is not None and id(session) not in self._consented:
            self._consented.add(id(session))
            await session.play(self.path(self.flow.consent))
        if session.hung_up:
            return None
        return await session.bridge(agents, ring_timeout=ring_timeout)

    # -- node types (each returns the next node, or None when done) -----------------------

    async def _menu(self, node: Node, session: CallSession) -> str | None:
        options: dict[str, str] = node.data["options"]
        retries = int(node.data.get("retries", 2))
        timeout = float(node.data.get("timeout", 5))
        prompt = self.path(node.required_prompt("prompt"))
        invalid = node.prompt("invalid")
        for attempt in range(retries + 1):
            if session.hung_up:
                break
            digit = await session.play(prompt, interruptible=True)
            if not digit and not session.hung_up:
                digit = await session.collect_digits(1, timeout=timeout, terminator=None)
            await session.step(node.name, digit)
            if digit in options:
                return options[digit]
            if session.hung_up:
                break
            if digit and invalid is not None and attempt < retries:
                await session.play(self.path(invalid))
        if session.hung_up:
            return None
        return node.data.get("default")  # None: hang up after the retries

    async def _agent(self, node: Node, session: CallSession) -> str | None:
        await session.step(node.name)
        agent = self.agent(node.data["agent"])
        if agent is None:  # removed from the config since the flow was checked
            log.error("IVR node %s: agent %s is gone", node.name, node.data["agent"])
            return node.data.get("no_answer")
        taken = await self.bridge(session, [agent], node.data.get("ring_timeout"))
        return None if taken is not None else node.data.get("no_answer")

    async def _group(self, node: Node, session: CallSession) -> str | None:
        await session.step(node.name)
        group = self.flow.groups[node.data["group"]]
        members = [a for a in (self.agent(n) for n in group.agents) if a is not None]
        if group.strategy == "ring_all":
            taken = await self.bridge(session, members, group.ring_timeout)
            return None if taken is not None else node.data.get("no_answer")
        idle: dict[int | None, datetime | None] = {}
        if group.strategy == "longest_idle":
            idle = {a.id: await self.idle_since(a.id or 0) for a in members}
        for agent in self.order(group.name, group.strategy, members, idle):
            if session.hung_up:
                return None
            if await self.bridge(session, [agent], group.ring_timeout) is not None:
                return None
        return node.data.get("no_answer")

    def order(
        self,
        group: str,
        strategy: str,
        members: list[Agent],
        idle: Mapping[int | None, datetime | None],
    ) -> list[Agent]:
        """The order agents of a group are rung in, one after another (``idle``: when each
        agent's last call ended, for longest idle)."""
        if not members:
            return []
        if strategy == "round_robin":
            start = self._cursor.get(group, 0) % len(members)
            self._cursor[group] = start + 1
            return members[start:] + members[:start]
        # longest idle: the agent whose last call ended longest ago (never: first)
        floor = datetime.min.replace(tzinfo=UTC)
        return sorted(members, key=lambda a: idle.get(a.id) or floor)

    async def _voicemail(self, node: Node, session: CallSession) -> str | None:
        await session.step(node.name)
        prompt = node.prompt("prompt")
        if prompt is not None:
            await session.play(self.path(prompt))
        await session.play(beep())
        await session.record(float(node.data.get("max_seconds", 120)))
        await session.hangup(Disposition.VOICEMAIL)
        return None

    async def _play(self, node: Node, session: CallSession) -> str | None:
        await session.step(node.name)
        await session.play(self.path(node.required_prompt("prompt")))
        nxt: str | None = node.data.get("next")
        if nxt is None:
            await session.hangup()
        return nxt

    async def _hangup(self, node: Node, session: CallSession) -> str | None:
        await session.step(node.name)
        prompt = node.prompt("prompt")
        if prompt is not None:
            await session.play(self.path(prompt))
        await session.hangup()
        return None

    async def _hours(self, node: Node, session: CallSession) -> str | None:
        is_open = self.flow.is_open(node, self.now())
        await session.step(node.name, "open" if is_open else "closed")
        return str(node.data["open"] if is_open else node.data["closed"])

    async def _caller(self, node: Node, session: CallSession) -> str | None:
        """A known contact with an owner agent rings that agent first."""
        owner_id = session.contact.owner_agent_id
        await session.step(node.name, "owner" if owner_id is not None else "")
        if owner_id is not None and node.data.get("owner_first", True):
            owner = next((a for a in self.agents() if a.id == owner_id), None)
            if owner is not None and (owner.extension or owner.rings_browser):
                taken = await self.bridge(session, [owner], node.data.get("ring_timeout"))
                if taken is not None:
                    return None
        return str(node.data["next"])
