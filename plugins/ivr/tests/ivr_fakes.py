"""An in-memory CallSession for the flow engine's unit tests (the end-to-end tests use the
real SIP channel)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from switchboard import (
    Agent,
    CallRecord,
    Contact,
    Direction,
    Disposition,
    InteractionStatus,
)

HANGUP = "<hangup>"


class FakeSession:
    """A caller who presses the scripted ``inputs`` one per prompt/collect ("" = silence,
    HANGUP = hangs up); agents in ``answering`` pick up when rung."""

    def __init__(
        self,
        inputs: Sequence[str] = (),
        answering: Sequence[str] = (),
        owner_agent_id: int | None = None,
    ) -> None:
        self.inputs = list(inputs)
        self.answering = set(answering)
        self.call = CallRecord(
            id=1,
            interaction_id=1,
            contact_id=1,
            call_id="fake-1",
            channel="fake",
            direction=Direction.INBOUND,
            from_address="phone:+12025550143",
            to_address="100",
            status=InteractionStatus.RINGING,
            ringing_at=datetime.now(UTC),
        )
        self.contact = Contact(id=1, name="Caller", owner_agent_id=owner_agent_id)
        self.log: list[tuple[str, Any]] = []
        self.steps: list[tuple[str, str]] = []
        self.rung: list[list[str]] = []
        self.disposition: Disposition | None = None
        self._hung_up = False
        self.answered = False

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    def _next(self) -> str:
        value = self.inputs.pop(0) if self.inputs else ""
        if value == HANGUP:
            self._hung_up = True
            return ""
        return value

    async def answer(self) -> None:
        self.answered = True

    async def play(
        self, prompt: str | os.PathLike[str] | bytes, *, interruptible: bool = False
    ) -> str:
        if self._hung_up:
            return ""
        self.answered = True
        self.log.append(("play", prompt if isinstance(prompt, bytes) else os.fspath(prompt)))
        return ""

    async def collect_digits(
        self, max_digits: int = 1, timeout: float = 5.0, terminator: str | None = "#"
    ) -> str:
        if self._hung_up:
            return ""
        return self._next()

    async def bridge(
        self, agents: Sequence[Agent], *, ring_timeout: float | None = None
    ) -> Agent | None:
        if self._hung_up:
            return None
        self.rung.append([a.name for a in agents])
        for agent in agents:
            if agent.name in self.answering:
                return agent
        return None

    async def record(self, max_seconds: float = 120.0) -> str | None:
        self.log.append(("record", max_seconds))
        return "/tmp/voicemail.wav"

    async def step(self, node: str, digits: str = "") -> None:
        self.steps.append((node, digits))

    async def hangup(self, disposition: Disposition | None = None) -> None:
        self.disposition = disposition
        self._hung_up = True
