"""``switchboard.crm``'s parts without a CRM: the lookup cache, recording links, the
external-id map, which events a connector asks for. The connectors' own tests run them
against loopback CRMs (plugins/amocrm, plugins/bitrix24, plugins/odoo)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import sqlalchemy as sa

from switchboard import sharing
from switchboard.crm import CrmPush, Link, Links, TtlCache, customer_address, links_table


async def test_a_lookup_runs_once_and_finishes_after_its_caller_stopped_waiting() -> None:
    cache: TtlCache[str, str] = TtlCache(ttl=60)
    calls = 0

    async def slow() -> str | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return "Olga"

    # the core gives up on resolve_contact after its timeout: the lookup goes on
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(cache.fetch("phone:+7", slow), 0.05)
    together = await asyncio.gather(cache.fetch("phone:+7", slow), cache.fetch("phone:+7", slow))
    assert together == ["Olga", "Olga"] and calls == 1
    assert await cache.fetch("phone:+7", slow) == "Olga" and calls == 1  # kept

    async def none() -> str | None:
        return None

    assert await cache.fetch("phone:+8", none) is None  # "the CRM has none" is kept too
    cache.drop("phone:+7")
    await cache.fetch("phone:+7", slow)
    assert calls == 2


async def test_a_failed_lookup_is_not_kept() -> None:
    cache: TtlCache[str, str] = TtlCache()

    async def down() -> str | None:
        raise ConnectionError("down")

    for _ in range(2):
        try:
            await cache.fetch("k", down)
        except ConnectionError:
            pass
        else:
            raise AssertionError("the error reached nobody")


def test_recording_link_tokens_are_for_one_call_until_they_expire() -> None:
    token = sharing.make_token("s" * 20, "call/1", 60, now=1000.0)
    assert sharing.read_token("s" * 20, token, now=1059.0) == "call/1"
    assert sharing.read_token("s" * 20, token, now=1061.0) is None  # expired
    assert sharing.read_token("t" * 20, token, now=1000.0) is None  # another secret
    _, mac = token.split(".")
    other = sharing.make_token("s" * 20, "call/2", 60, now=1000.0).split(".")[0]
    assert sharing.read_token("s" * 20, f"{other}.{mac}", now=1000.0) is None  # swapped
    assert sharing.read_token("s" * 20, "x" * 2000, now=1000.0) is None
    assert sharing.read_token("s" * 20, "no-dot", now=1000.0) is None


def test_push_settings_ask_for_the_events_they_need() -> None:
    assert CrmPush().event_types() == {
        "call.ringing",
        "call.answered",
        "call.ended",
        "call.recorded",
        "message.received",
        "message.sent",
    }
    only_messages = CrmPush(calls=False, recordings=False, emails=False)
    assert only_messages.event_types() == {"message.received", "message.sent"}
    assert customer_address({"direction": "inbound", "from_address": "phone:+1"}) == "phone:+1"
    assert customer_address({"direction": "outbound", "to_address": "phone:+2"}) == "phone:+2"


async def test_the_external_id_map_upserts(open_sb: Any) -> None:
    """On SQLite and PostgreSQL: one upsert per put; remembered kinds read back once."""
    metadata = sa.MetaData()
    table = links_table(metadata, "acme_link")
    sb = await open_sb(start=False)
    metadata.create_all(sb.store.engine)
    links = Links(sb, table)
    assert await links.get("call", "c1") is None
    await links.put("call", "c1", 42, "registered")
    await links.put("call", "c1", 42, "finished", {"recording": True})
    link = await links.get("call", "c1")
    assert link is not None
    assert (link.crm_id, link.state, link.data) == ("42", "finished", {"recording": True})
    await links.put("contact", 7, "crm-7", "found")
    with sb.store.engine.begin() as conn:  # gone from the table: a remembered kind stays
        conn.execute(sa.delete(table))
    assert (await links.get("contact", 7)) == Link("crm-7", "found")
    assert await links.get("call", "c1") is None  # calls' states are read each time
