"""Call statistics by agent, by day and by IVR node, computed by SQL aggregates.

Every figure is one pass over the call records of the period (``ringing_at`` in
``[since, until)``, an indexed range), on SQLite and PostgreSQL alike; days are UTC days.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard.calls import ivr_step_t
from switchboard.store import Store, agent_t, call_t

GROUPS = ("agent", "day", "ivr_node")


def _day(conn: Connection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.substr(column, 1, 10)


def _count(condition: Any) -> Any:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def call_stats(
    store: Store,
    since: datetime,
    until: datetime,
    group_by: str = "agent",
    service_level_seconds: float = 20.0,
) -> list[dict[str, Any]]:
    """Rows of figures per agent or per day (see docs/api.md), or per IVR node."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}, got {group_by!r}")
    with store.read() as conn:
        if group_by == "ivr_node":
            return _ivr(conn, since, until)
        c = call_t.c
        inbound = c.direction == "inbound"
        answered = c.wait_s.is_not(None)  # set when answered (and in the covering index)
        key = c.agent_id if group_by == "agent" else _day(conn, c.ringing_at)
        stmt = (
            sa.select(
                key.label("key"),
                sa.func.count().label("calls"),
                _count(inbound).label("calls_in"),
                _count(c.direction == "outbound").label("calls_out"),
                _count(answered).label("answered"),
                _count(sa.and_(inbound, answered)).label("answered_in"),
                _count(c.disposition == "missed").label("missed"),
                _count(c.disposition == "abandoned").label("abandoned"),
                _count(c.disposition == "voicemail").label("voicemail"),
                _count(c.disposition == "busy").label("busy"),
                _count(sa.and_(inbound, c.wait_s <= service_level_seconds)).label("in_sla"),
                sa.func.sum(c.wait_s).label("wait_sum"),
                sa.func.sum(c.talk_s).label("talk_sum"),
            )
            .where(c.ringing_at >= since, c.ringing_at < until)
            .group_by(key)
            .order_by(key)
        )
        rows = conn.execute(stmt).all()
        names = dict(conn.execute(sa.select(agent_t.c.id, agent_t.c.name)).all())
    out = []
    for r in rows:
        label: Any = r.key
        if group_by == "agent":
            label = names.get(r.key, "unassigned") if r.key is not None else "unassigned"
        answered_n = int(r.answered or 0)
        calls_in = int(r.calls_in or 0)
        out.append(
            {
                group_by: label,
                "calls": int(r.calls),
                "calls_in": calls_in,
                "calls_out": int(r.calls_out or 0),
                "answered": answered_n,
                "missed": int(r.missed or 0),
                "abandoned": int(r.abandoned or 0),
                "voicemail": int(r.voicemail or 0),
                "busy": int(r.busy or 0),
                "answer_rate": round(int(r.answered_in or 0) / calls_in, 4) if calls_in else None,
                "service_level": round(int(r.in_sla or 0) / calls_in, 4) if calls_in else None,
                "avg_wait_s": round(float(r.wait_sum or 0) / answered_n, 2) if answered_n else None,
                "avg_talk_s": round(float(r.talk_sum or 0) / answered_n, 2) if answered_n else None,
            }
        )
    return out


def _ivr(conn: Connection, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Per IVR node: visits, the digits pressed there (the branches taken), and the callers
    who hung up there (abandoned calls whose path ends at the node)."""
    st = ivr_step_t.c
    nodes: dict[str, dict[str, Any]] = {}

    def entry(node: str) -> dict[str, Any]:
        return nodes.setdefault(node, {"ivr_node": node, "visits": 0, "digits": {}, "abandoned": 0})

    for node, digits, n in conn.execute(
        sa.select(st.node, st.digits, sa.func.count())
        .where(st.ringing_at >= since, st.ringing_at < until)
        .group_by(st.node, st.digits)
    ):
        e = entry(node)
        e["visits"] += int(n)
        if digits:
            e["digits"][digits] = e["digits"].get(digits, 0) + int(n)
    c = call_t.c
    for node, n in conn.execute(
        sa.select(c.ivr_last_node, sa.func.count())
        .where(
            c.ringing_at >= since,
            c.ringing_at < until,
            c.disposition == "abandoned",
            c.ivr_last_node.is_not(None),
        )
        .group_by(c.ivr_last_node)
    ):
        entry(node)["abandoned"] = int(n)
    return [nodes[k] for k in sorted(nodes)]
