"""Seeding call records for this repository's analytics and console tests (not part of
``switchboard.testing``: it writes the store's tables directly and makes up numbers)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchboard import Direction, Disposition
from switchboard.calls import ivr_step_t
from switchboard.store import call_t


async def record_call(
    sb: Any,
    call_id: str,
    ringing: datetime,
    *,
    direction: Direction = Direction.INBOUND,
    agent: str | None = None,
    wait: float | None = None,
    talk: float = 0.0,
    path: Sequence[tuple[str, str]] = (),
    disposition: Disposition | None = None,
    customer: str | None = None,
) -> None:
    """A call as the voice channel reports it (ringing, IVR steps, answered by ``agent``
    after ``wait`` seconds, ``talk`` seconds long, ended), then moved to ``ringing``: seeds
    the call analytics. ``customer`` defaults to a Moscow number made from the call id."""
    customer = customer or f"+7495{zlib.crc32(call_id.encode()) % 10_000_000:07d}"
    await sb.calls.ringing(
        "sip",
        call_id,
        direction=direction,
        from_address=customer if direction is Direction.INBOUND else "101",
        to_address="100" if direction is Direction.INBOUND else customer,
    )
    for node, digits in path:
        await sb.calls.ivr_step("sip", call_id, node, digits)
    if wait is not None:
        await sb.calls.answered("sip", call_id, sb.store.get_agent(agent))
    await sb.calls.ended("sip", call_id, disposition)
    # the calls happened on DAY1/DAY2: move their times (and what is derived from them)
    values: dict[str, Any] = {"ringing_at": ringing}
    if wait is not None:
        values["answered_at"] = ringing + timedelta(seconds=wait)
        values["ended_at"] = ringing + timedelta(seconds=wait + talk)
        values["wait_s"], values["talk_s"] = wait, talk
    else:
        values["ended_at"] = ringing + timedelta(seconds=30)
    with sb.store.write() as conn:
        conn.execute(sa.update(call_t).where(call_t.c.call_id == call_id).values(**values))
        record_id = conn.execute(
            sa.select(call_t.c.id).where(call_t.c.call_id == call_id)
        ).scalar_one()
        conn.execute(
            sa.update(ivr_step_t)
            .where(ivr_step_t.c.call_record_id == record_id)
            .values(ringing_at=ringing)
        )
