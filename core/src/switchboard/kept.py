"""Webhook bodies kept before the sender gets its answer, then read by the channel.

A provider that posts updates to the runner (Meta's webhooks, VK's Callback API) counts
one as delivered when it gets its answer (200, ``ok``), and sends it again otherwise. The
safe order is: check the signature or secret, **keep** the raw body (committed), answer,
then turn it into messages. :class:`KeptBodies` does the keeping and the reading (of JSON
bodies, which every such provider sends) for a channel: concurrent bodies share one
transaction (group commit), a reader task reads them oldest first, many at a time, and
deletes them once handled, so a crash after the answer loses nothing (a body read twice
must store its messages once: by their ids).

The table is the plugin's own (its migrations), with three columns::

    sa.Table("NAME", metadata,
             sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("body", sa.LargeBinary, nullable=False),
             sa.Column("received_at", sa.Float, nullable=False))
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from switchboard.groupcommit import GroupCommit

if TYPE_CHECKING:
    from switchboard.channels import ChannelContext

READ_BATCH = 200  # kept bodies read at a time


class KeptBodies:
    def __init__(
        self,
        ctx: ChannelContext,
        table: sa.Table,
        read: Callable[[Any], Awaitable[object]],
        *,
        after: Callable[[], Awaitable[None]] | None = None,
        batch: int = READ_BATCH,
    ) -> None:
        """``read(payload)`` handles one body's decoded JSON (an item it cannot read it
        quarantines; if it raises, the reader stops, the channel is restarted and the body
        read again; a kept body that is not JSON is quarantined here);
        ``after()`` runs each time the kept bodies are all read (housekeeping)."""
        self.ctx = ctx
        self.table = table
        self.read = read
        self.after = after
        self.batch = batch
        self._wake = asyncio.Event()
        self._accepted: GroupCommit[bytes, None] = GroupCommit(
            self._keep, name=f"{ctx.channel}-kept"
        )

    def start(self) -> None:
        """Start the reader (a task of the channel); bodies kept before a restart are read
        first."""
        self._wake.set()
        self.ctx.spawn(self._read_kept(), name=f"{self.ctx.channel}-kept")

    async def close(self) -> None:
        await self._accepted.close()

    async def accept(self, body: bytes) -> None:
        """Keep ``body`` (committed when this returns; concurrent bodies in one
        transaction) and wake the reader. Answer the sender after this."""
        await self._accepted.submit(body)
        self._wake.set()

    async def backlog(self) -> int:
        """How many bodies wait to be read."""
        count = sa.select(sa.func.count()).select_from(self.table)
        return int(await self.ctx.transaction(lambda c: c.execute(count).scalar_one(), write=False))

    async def _keep(self, bodies: list[bytes]) -> list[BaseException | None]:
        now = time.time()
        rows = [{"body": b, "received_at": now} for b in bodies]
        await self.ctx.transaction(lambda conn: conn.execute(sa.insert(self.table), rows))
        return [None] * len(bodies)

    async def _decoded(self, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except ValueError as exc:  # the route checked it: only a damaged row gets here
            await self.ctx.quarantine("kept", f"not JSON: {exc}", None)
            return
        await self.read(payload)

    async def _read_kept(self) -> None:
        t = self.table
        oldest = sa.select(t.c.id, t.c.body).order_by(t.c.id).limit(self.batch)

        def take(conn: sa.Connection) -> list[Any]:
            return [tuple(r) for r in conn.execute(oldest)]

        def forget(ids: list[int], conn: sa.Connection) -> None:
            conn.execute(sa.delete(t).where(t.c.id.in_(ids)))

        while True:
            await self._wake.wait()
            self._wake.clear()
            while rows := await self.ctx.transaction(take, write=False):
                # concurrently: the inbox stores concurrent messages in one transaction
                await asyncio.gather(*(self._decoded(body) for _, body in rows))
                await self.ctx.transaction(functools.partial(forget, [i for i, _ in rows]))
            if self.after is not None:
                await self.after()


class Position:
    """Where a channel stands in a provider's stream of updates (VK's long poll ``ts``,
    MAX's ``marker``), kept in a table of the plugin's own with the columns ``name``
    (string primary key) and ``value`` (string). Save it only after the updates before it
    are stored: a restart goes on from there, losing nothing."""

    def __init__(self, ctx: ChannelContext, table: sa.Table, name: str) -> None:
        self.ctx = ctx
        self.table = table
        self.name = name

    async def load(self) -> str | None:
        t = self.table
        query = sa.select(t.c.value).where(t.c.name == self.name)

        def read(conn: sa.Connection) -> str | None:
            value = conn.execute(query).scalar()
            return str(value) if value is not None else None

        return await self.ctx.transaction(read, write=False)

    async def save(self, value: str) -> None:
        t = self.table

        def write(conn: sa.Connection) -> None:
            updated = conn.execute(sa.update(t).where(t.c.name == self.name).values(value=value))
            if updated.rowcount == 0:
                conn.execute(sa.insert(t).values(name=self.name, value=value))

        await self.ctx.transaction(write)
