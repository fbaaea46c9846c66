"""What the period's calls cost: billed minutes per tariff prefix, by one SQL aggregate.

Each answered call's customer number (the callee of an outbound call, the caller of an
inbound one) is cut to as many digits as the longest configured prefix, and the calls are
summed per cut number — talk time rounded up to the billing increment per call — in one
``GROUP BY`` that reads the ``ix_call_record_billing`` index alone. The few groups are
then given the longest prefix they start with. Costs are billed minutes times the price,
and times the reference price.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard import Switchboard
from switchboard.views import call_record
from switchboard_console.settings import Rate, TariffSettings

UNRATED = "other"
PHONE = "phone:"


def _increments(conn: Connection, seconds: Any, increment: int) -> Any:
    """Started increments of ``seconds`` (ceil), in the dialect's arithmetic."""
    if conn.dialect.name == "postgresql":
        return sa.func.ceil(seconds / float(increment))
    whole = sa.cast(seconds / float(increment), sa.Integer)  # SQLite truncates
    return whole + sa.case((seconds > whole * increment, 1), else_=0)


def _rate_of(number: str, rates: list[Rate]) -> Rate | None:
    """The longest prefix ``number`` starts with (rates sorted longest first)."""
    if not number.startswith(PHONE):
        return None
    digits = number[len(PHONE) :]
    return next((r for r in rates if digits.startswith(r.prefix)), None)


async def call_costs(
    sb: Switchboard, since: datetime, until: datetime, tariff: TariffSettings
) -> dict[str, Any]:
    """:func:`costs_in` off the event loop, on the store's database."""
    return await sb.transaction(lambda conn: costs_in(conn, since, until, tariff), write=False)


def costs_in(
    conn: Connection, since: datetime, until: datetime, tariff: TariffSettings
) -> dict[str, Any]:
    """Rows per prefix (``prefix``, ``calls``, ``minutes`` talked, ``billed_minutes``,
    ``cost``, ``reference_cost``, ``saving``) and their ``total``; calls to numbers no
    prefix matches are counted under ``other`` at no price."""
    c = call_record.c
    rates = sorted(tariff.rates, key=lambda r: len(r.prefix), reverse=True)
    longest = max((len(r.prefix) for r in rates), default=1)
    number = sa.case((c.direction == "outbound", c.to_address), else_=c.from_address)
    key = sa.func.substr(number, 1, len(PHONE) + longest).label("key")
    directions = ["outbound", "inbound"] if tariff.bill_inbound else ["outbound"]
    stmt = (
        sa.select(
            key,
            sa.func.count().label("calls"),
            sa.func.sum(c.talk_s).label("talk"),
            sa.func.sum(_increments(conn, c.talk_s, tariff.increment_seconds)).label("n"),
        )
        .where(
            c.direction.in_(directions),
            c.ringing_at >= since,
            c.ringing_at < until,
            # answered: the billing index holds just these (a literal 0, so that the
            # planners see the partial index's own condition)
            c.talk_s > sa.literal_column("0"),
        )
        .group_by(key)
    )
    groups = conn.execute(stmt).all()
    found: dict[str, dict[str, float]] = {}
    for g in groups:
        rate = _rate_of(g.key or "", rates)
        acc = found.setdefault(rate.prefix if rate else UNRATED, {"calls": 0, "talk": 0, "n": 0})
        acc["calls"] += int(g.calls)
        acc["talk"] += float(g.talk or 0)
        acc["n"] += float(g.n or 0)
    by_prefix = {r.prefix: r for r in rates}
    rows = []
    totals = {"calls": 0, "minutes": 0.0, "billed_minutes": 0.0, "cost": 0.0, "reference_cost": 0.0}
    for prefix, r in found.items():
        rate = by_prefix.get(prefix)
        billed = r["n"] * tariff.increment_seconds / 60
        price, reference = (rate.price, rate.reference) if rate else (0.0, 0.0)
        row: dict[str, Any] = {
            "prefix": rate.prefix if rate else UNRATED,
            "price": price,
            "reference_price": reference,
            "calls": int(r["calls"]),
            "minutes": round(r["talk"] / 60, 2),
            "billed_minutes": round(billed, 2),
            "cost": round(billed * price, 2),
            "reference_cost": round(billed * reference, 2),
        }
        row["saving"] = round(row["reference_cost"] - row["cost"], 2)
        rows.append(row)
        for field in totals:
            totals[field] += row[field]
    total = {k: round(v, 2) for k, v in totals.items()}
    total["saving"] = round(total["reference_cost"] - total["cost"], 2)
    rows.sort(key=lambda r: (r["prefix"] == UNRATED, r["prefix"]))
    return {
        "currency": tariff.currency,
        "reference_name": tariff.reference_name,
        "rows": rows,
        "total": total,
    }
