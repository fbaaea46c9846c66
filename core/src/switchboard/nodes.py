"""Which runners are alive, and the calls of one that died.

A call lives in the memory of the runner whose channel handles it (its SIP dialogs, its
media). When that runner dies, the call is gone with it, but its record would stay
``ringing`` or ``answered`` for ever. Each record names its runner (``call_record.node``,
``host:pid``, as ``sb.singletons.node``), and:

- on PostgreSQL each runner holds an advisory lock named after itself on a connection of
  its own for as long as it lives (loop ``nodes:presence``); one runner at a time (loop
  ``calls:sweep``) looks at the runners named by calls not yet ended, and a runner whose
  lock it can take is dead: its calls are ended (``hangup_cause`` "runner lost: NODE";
  the disposition follows as for any end: answered if it was, else missed, which makes a
  callback task), each with its ``call.ended`` event;
- on SQLite (one runner) the calls another process left are ended when ``serve`` starts
  (the runner lock says no other process is serving).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from switchboard.calls import CallStateError
from switchboard.models import utcnow
from switchboard.singletons import keep, try_lock, unlock
from switchboard.store import call_t

if TYPE_CHECKING:
    from switchboard.core import Switchboard

log = logging.getLogger("switchboard.nodes")


def _presence(node: str) -> str:
    """The name of the advisory lock a runner holds while it lives."""
    return f"runner:{node}"


class Nodes:
    """``sb.nodes``: this runner's presence, and the sweep of dead runners' calls."""

    def __init__(self, core: Switchboard) -> None:
        self.core = core

    @property
    def node(self) -> str:
        return self.core.singletons.node

    @property
    def interval(self) -> float:
        return float(self.core.config.core.nodes.takeover_seconds)

    async def presence(self) -> None:
        """Hold this runner's own advisory lock until stopped (PostgreSQL)."""
        async with await self.core.store.listen_connection() as conn:
            if not await try_lock(conn, _presence(self.node)):
                raise RuntimeError(f"another runner is named {self.node}")
            await keep(conn, self.interval)  # the lock lives as long as this connection

    def _open_calls_by_node(self, settled_before: Any) -> dict[str, list[tuple[str, str]]]:
        """The calls not ended, by the runner named on them (not this one), that started
        before ``settled_before`` (a runner just started may not hold its lock yet)."""
        with self.core.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(call_t.c.node, call_t.c.channel, call_t.c.call_id).where(
                    call_t.c.ended_at.is_(None),
                    call_t.c.node.is_not(None),
                    call_t.c.node != self.node,
                    call_t.c.ringing_at < settled_before,
                )
            ).all()
        found: dict[str, list[tuple[str, str]]] = {}
        for node, channel, call_id in rows:
            found.setdefault(node, []).append((channel, call_id))
        return found

    async def sweep(self, conn: Any | None = None) -> int:
        """End the calls of dead runners (on PostgreSQL ``conn``: the sweeper's own
        connection, to ask for their locks; on SQLite every other runner is dead)."""
        # on PostgreSQL, leave the newest calls: a runner just started may not hold its
        # lock yet; on SQLite, this runner alone serves, whatever another process left
        settled = utcnow() - (timedelta(seconds=self.interval) if conn is not None else timedelta())
        found = await asyncio.to_thread(self._open_calls_by_node, settled)
        ended = 0
        for node, calls in found.items():
            if conn is not None and not await try_lock(conn, _presence(node)):
                continue  # alive
            try:
                for channel, call_id in calls:
                    try:
                        await self.core.calls.ended(
                            channel, call_id, hangup_cause=f"runner lost: {node}"[:255]
                        )
                        ended += 1
                    except CallStateError:  # ended meanwhile
                        pass
            finally:
                if conn is not None:
                    await unlock(conn, _presence(node))
            log.warning("runner %s is gone: %d of its calls ended", node, len(calls))
        return ended

    async def sweep_forever(self) -> None:
        """``calls:sweep`` (on one runner at a time): look for dead runners' calls every
        ``takeover_seconds``."""
        async with await self.core.store.listen_connection() as conn:
            while True:
                await self.sweep(conn)
                await asyncio.sleep(self.interval)

    def start(self) -> None:
        """The loops, for ``serve`` (PostgreSQL: presence and the sweep)."""
        if self.core.store.engine.dialect.name == "postgresql":
            self.core.supervise("nodes:presence", self.presence)
            self.core.supervise("calls:sweep", self.sweep_forever, one_runner=True)
            self.core.supervise("calls:relay", self.core.relay.listen)
