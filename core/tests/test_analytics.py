"""Call statistics by agent, day and IVR node: SQL aggregates on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from call_seed import record_call

from switchboard import Direction, Disposition
from switchboard.analytics import call_stats
from switchboard.calls import ivr_step_t
from switchboard.store import call_t

AGENTS = {
    "switchboard": {
        "default_region": "RU",
        "agents": [{"name": "anna", "extension": "101"}, {"name": "boris", "extension": "102"}],
    }
}
DAY1 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


async def seeded(open_sb: Any) -> Any:
    sb = await open_sb(config=AGENTS)
    await record_call(sb, "c1", DAY1, agent="anna", wait=5, talk=60)
    await record_call(sb, "c2", DAY1 + timedelta(hours=1), agent="anna", wait=30, talk=60)
    await record_call(sb, "c3", DAY1 + timedelta(hours=2))  # missed
    await record_call(
        sb,
        "c4",
        DAY1 + timedelta(hours=3),
        direction=Direction.OUTBOUND,
        agent="anna",
        wait=10,
        talk=120,
    )
    await record_call(
        sb,
        "c5",
        DAY2,
        path=[("greeting", ""), ("greeting", "7")],
        disposition=Disposition.ABANDONED,
    )
    await record_call(
        sb,
        "c6",
        DAY2 + timedelta(hours=1),
        agent="boris",
        wait=8,
        talk=40,
        path=[("greeting", "1"), ("sales", "")],
    )
    return sb


async def test_by_agent(open_sb: Any) -> None:
    sb = await seeded(open_sb)
    rows = {r["agent"]: r for r in call_stats(sb.store, DAY1, DAY2 + timedelta(days=1), "agent")}
    anna = rows["anna"]
    assert (anna["calls"], anna["calls_in"], anna["calls_out"], anna["answered"]) == (3, 2, 1, 3)
    assert anna["answer_rate"] == 1.0
    assert anna["service_level"] == 0.5  # c1 within 20 s, c2 after 30 s
    assert anna["avg_wait_s"] == pytest.approx(15.0, abs=0.01)
    assert anna["avg_talk_s"] == pytest.approx(80.0, abs=0.01)
    nobody = rows["unassigned"]
    assert (nobody["calls"], nobody["answered"], nobody["missed"], nobody["abandoned"]) == (
        2,
        0,
        1,
        1,
    )
    assert nobody["answer_rate"] == 0.0 and nobody["avg_wait_s"] is None
    assert rows["boris"]["service_level"] == 1.0


async def test_by_day_and_the_period_bounds(open_sb: Any) -> None:
    sb = await seeded(open_sb)
    rows = call_stats(sb.store, DAY1, DAY2 + timedelta(days=1), "day")
    assert [(r["day"], r["calls"], r["answered"]) for r in rows] == [
        ("2026-11-02", 4, 3),
        ("2026-11-03", 2, 1),
    ]
    only_first = call_stats(sb.store, DAY1, DAY2, "day")  # the end is excluded
    assert [r["day"] for r in only_first] == ["2026-11-02"]


async def test_by_ivr_node(open_sb: Any) -> None:
    sb = await seeded(open_sb)
    rows = {
        r["ivr_node"]: r for r in call_stats(sb.store, DAY1, DAY2 + timedelta(days=1), "ivr_node")
    }
    assert rows["greeting"] == {
        "ivr_node": "greeting",
        "visits": 3,
        "digits": {"7": 1, "1": 1},
        "abandoned": 1,
    }
    assert rows["sales"]["visits"] == 1 and rows["sales"]["abandoned"] == 0


async def test_unknown_grouping_is_refused(open_sb: Any) -> None:
    sb = await open_sb(config=AGENTS)
    with pytest.raises(ValueError, match="group_by must be one of"):
        call_stats(sb.store, DAY1, DAY2, "week")


async def test_the_answer_and_talk_times_are_kept_as_the_call_goes(open_sb: Any) -> None:
    sb = await open_sb(config=AGENTS)
    await sb.calls.ringing(
        "sip", "live", direction=Direction.INBOUND, from_address="+74951112200", to_address="1"
    )
    await sb.calls.ivr_step("sip", "live", "greeting", "1")
    await sb.calls.answered("sip", "live", sb.store.get_agent("anna"))
    await sb.calls.ended("sip", "live")
    with sb.store.read() as conn:
        row = conn.execute(sa.select(call_t).where(call_t.c.call_id == "live")).one()
        steps = conn.execute(sa.select(ivr_step_t.c.node, ivr_step_t.c.digits)).all()
    assert row.wait_s is not None and 0 <= row.wait_s < 5
    assert row.talk_s is not None and 0 <= row.talk_s < 5
    assert row.ivr_last_node == "greeting"
    assert [tuple(s) for s in steps] == [("greeting", "1")]
