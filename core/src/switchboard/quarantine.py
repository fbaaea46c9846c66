"""Quarantine: inbound items a channel could not store, kept with the reason.

A channel that meets an item it cannot process (a sender no address book can read, a
field the database refuses, a crash in its own parsing) calls ``ctx.quarantine(...)``,
acknowledges the item upstream and moves on: one bad item never stops a channel or fails
other people's messages. The item is kept here (bounded: the raw form is cut to
:data:`MAX_RAW` characters), reported once in the log and as a ``message.quarantined``
event, and listed by ``GET /api/quarantine`` for a person to look at.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from switchboard import limits
from switchboard.events import record
from switchboard.models import EventType, utcnow
from switchboard.tables import QuarantineRow

if TYPE_CHECKING:
    from switchboard.core import Switchboard

log = logging.getLogger("switchboard.quarantine")

quarantine_t: sa.Table = QuarantineRow.__table__  # type: ignore[attr-defined]

#: Characters of an item's raw form kept (the rest is cut, and the cut is marked).
MAX_RAW = 65_536
MAX_REASON = 2_000


@attrs.frozen
class QuarantinedItem:
    id: int
    channel: str
    external_id: str
    reason: str
    raw: str | None
    created_at: datetime


def raw_text(raw: str | bytes | Mapping[str, Any] | None) -> str | None:
    """The raw form of an item as bounded text: bytes decoded (undecodable bytes escaped),
    mappings as JSON."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        text = raw[: MAX_RAW * 4].decode("utf-8", "backslashreplace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = json.dumps(raw, default=str, ensure_ascii=False)
    cut, was_cut = limits.text(text, MAX_RAW)
    return (cut or "") + ("\n[cut]" if was_cut else "")


class Quarantine:
    def __init__(self, core: Switchboard) -> None:
        self.core = core

    async def put(
        self,
        channel: str,
        external_id: str,
        reason: str,
        raw: str | bytes | Mapping[str, Any] | None = None,
    ) -> bool:
        """Keep an item a channel could not store; False if it was kept before."""
        external_id = limits.external_id(external_id) or "?"
        reason = limits.one_line(reason, MAX_REASON) or "?"
        text = raw_text(raw)

        def store() -> bool:
            try:
                return insert()
            except IntegrityError:  # another runner kept it at the same moment
                return False

        def insert() -> bool:
            with self.core.store.write() as conn:
                known = conn.execute(
                    sa.select(quarantine_t.c.id).where(
                        quarantine_t.c.channel == channel,
                        quarantine_t.c.external_id == external_id,
                    )
                ).first()
                if known is not None:
                    return False
                conn.execute(
                    sa.insert(quarantine_t).values(
                        channel=channel,
                        external_id=external_id,
                        reason=reason,
                        raw=text,
                        created_at=utcnow(),
                    )
                )
                record(
                    conn,
                    [
                        (
                            EventType.MESSAGE_QUARANTINED,
                            {"channel": channel, "external_id": external_id, "reason": reason},
                            None,
                        )
                    ],
                )
                return True

        fresh = await asyncio.to_thread(store)
        if fresh:
            log.warning("%s: item %s quarantined: %s", channel, external_id, reason)
            self.core.events.notify()
        return fresh

    def list(self, channel: str | None = None, limit: int = 100) -> list[QuarantinedItem]:
        """The newest quarantined items first."""
        query = sa.select(quarantine_t).order_by(quarantine_t.c.id.desc()).limit(limit)
        if channel is not None:
            query = query.where(quarantine_t.c.channel == channel)
        with self.core.store.read() as conn:
            return [
                QuarantinedItem(r.id, r.channel, r.external_id, r.reason, r.raw, r.created_at)
                for r in conn.execute(query)
            ]
