"""``/api/analytics/calls``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from switchboard.api.common import (
    Caller,
    Core,
    csv_response,
    require_zones,
    supervisor_only,
)

router = APIRouter(prefix="/api")

# -- analytics ----------------------------------------------------------------------------


@router.get("/analytics/calls", response_model=None)
async def call_analytics(
    sb: Core,
    who: Caller,
    since: Annotated[datetime, Query(alias="from", description="start (ISO 8601, with a zone)")],
    until: Annotated[datetime, Query(alias="to", description="end, excluded")],
    group_by: str = Query(default="agent", pattern="^(agent|day|ivr_node)$"),
    format: str = Query(default="json", pattern="^(json|csv)$"),
) -> dict[str, Any] | Response:
    """Calls by agent, by (UTC) day or by IVR node, by SQL aggregates (supervisors, admins)."""
    supervisor_only(who, "call analytics")
    require_zones(since, until)
    rows = await sb.call_stats(since, until, group_by)
    if format == "csv":
        return csv_response(rows, f"calls-by-{group_by}.csv")
    return {"from": since.isoformat(), "to": until.isoformat(), "group_by": group_by, "rows": rows}
