"""Work that must run on one runner at a time (an event consumer: a webhook, a CRM
connector; a channel's long poll or mailbox reader: ``ctx.supervise(..., one_runner=True)``),
held through a PostgreSQL advisory lock.

Each such loop, on every runner, asks for its lock (``pg_try_advisory_lock``) on a
connection of its own: the runner that gets it runs the work (``held``), the others wait
(``standby``) and ask again every ``takeover_seconds / 2``. When the holder dies, its
session ends and PostgreSQL frees the lock: another runner takes the work within
``takeover_seconds`` (a crashed process: at once; a machine that vanished: when
PostgreSQL notices the dead connection, see docs/api.md). A holder that loses its lock
connection stops the work at once (it is checked every ``takeover_seconds / 2``) and
waits again. On SQLite (one runner) the work just runs.

The work's state lives in the database (a consumer's cursor), so the next holder goes on
where the last one stopped; the events the last one handled but had not yet saved come
again (at least once, as after any crash).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from switchboard.core import Switchboard

#: A namespace for our advisory lock keys (the first 16 bits of each key).
_NAMESPACE = 0x5B0A


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name``, stable across runners."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:6], "big")
    return (_NAMESPACE << 48) | digest


class Singletons:
    """``sb.singletons``: which singleton loops this runner holds and which it waits for."""

    def __init__(self, core: Switchboard) -> None:
        self.core = core
        self.node = f"{socket.gethostname()}:{os.getpid()}"
        self.states: dict[str, str] = {}

    @property
    def takeover_seconds(self) -> float:
        return float(self.core.config.core.nodes.takeover_seconds)

    def wrap(self, name: str, run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """``run`` as the work of the singleton ``name`` (a loop for ``sb.loops``)."""

        async def held() -> None:
            await self.hold(name, run)

        return held

    async def hold(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        try:
            await self._hold(name, run)
        except asyncio.CancelledError:  # stopped (its channel, the runner): no longer ours
            self.states.pop(name, None)
            raise

    async def _hold(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        if self.core.store.engine.dialect.name != "postgresql":
            self.states[name] = "held"
            await run()
            return
        step = self.takeover_seconds / 2
        self.states[name] = "standby"
        try:
            async with await self.core.store.listen_connection() as conn:
                while True:  # asked again every step: PostgreSQL does not tell us it is free
                    if await try_lock(conn, name):
                        break
                    await asyncio.sleep(step)
                self.states[name] = "held"
                work = asyncio.ensure_future(run())
                watch = asyncio.ensure_future(keep(conn, step))
                try:
                    done, _ = await asyncio.wait({work, watch}, return_when="FIRST_COMPLETED")
                finally:
                    for task in (work, watch):
                        task.cancel()
                    await asyncio.gather(work, watch, return_exceptions=True)
                for task in done:
                    task.result()  # the work's error, or the lost connection's
        finally:
            self.states[name] = "standby"

    def health(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "held": sorted(n for n, s in self.states.items() if s == "held"),
            "standby": sorted(n for n, s in self.states.items() if s == "standby"),
        }


async def try_lock(conn: Any, name: str) -> bool:
    """Take the session advisory lock ``name`` on ``conn`` (a connection of its own:
    ``Store.listen_connection``) if nobody holds it."""
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def unlock(conn: Any, name: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))


async def keep(conn: Any, step: float) -> None:
    """Check ``conn`` every ``step`` seconds; raise once it is gone (its locks with it)."""
    while True:
        await asyncio.sleep(step)
        await conn.execute("SELECT 1")
