"""The event log's retention: old events are pruned, except what a webhook still owes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from switchboard import InboundMessage
from switchboard.events import cursor_t, event_t
from switchboard.models import utcnow
from switchboard.testing import LoopbackChannel, LoopbackPlugin

HOOK = {"name": "crm", "url": "http://127.0.0.1:9/hook", "secret": "s"}


def ids(sb: Any) -> list[int]:
    with sb.store.read() as conn:
        return list(conn.execute(sa.select(event_t.c.id).order_by(event_t.c.id)).scalars())


def age(sb: Any, days: float, up_to: int) -> None:
    with sb.store.write() as conn:
        conn.execute(
            sa.update(event_t)
            .where(event_t.c.id <= up_to)
            .values(created_at=utcnow() - timedelta(days=days))
        )


async def test_old_events_go_but_not_before_every_webhook_delivered_them(open_sb: Any) -> None:
    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch), config={"switchboard": {"webhooks": [HOOK]}})
    for n in range(4):
        await ch.inject(InboundMessage(f"m{n}", f"+7495300000{n}", text=f"hello {n}"))
    every = ids(sb)
    assert len(every) == 8  # contact.created and message.received, four times
    age(sb, 40, up_to=every[5])

    # the webhook has no cursor yet (it never ran): nothing it may still owe is deleted
    assert sb.events.prune(30) == 0
    with sb.store.write() as conn:
        conn.execute(sa.insert(cursor_t).values(name="crm", last_event_id=every[2], attempts=0))
    assert sb.events.prune(30, batch=2) == 3  # in batches of two
    assert ids(sb) == every[3:]
    with sb.store.write() as conn:
        conn.execute(sa.update(cursor_t).values(last_event_id=every[-1]))
    assert sb.events.prune(30) == 3  # the aged ones; the two recent events stay
    assert ids(sb) == every[6:]
    assert sb.events.prune(30) == 0


async def test_without_webhooks_the_age_alone_decides(open_sb: Any) -> None:
    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch))
    await ch.inject(InboundMessage("m", "+74953000000", text="hello"))
    every = ids(sb)
    age(sb, 31, up_to=every[0])
    assert sb.events.prune(30) == 1
    assert ids(sb) == every[1:]
