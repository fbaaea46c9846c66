"""``/api/health`` and ``/api/agents``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from switchboard.api.common import (
    Caller,
    Core,
    bearer,
    run,
)
from switchboard.channels import ChannelState
from switchboard.events import to_json

router = APIRouter(prefix="/api")

# -- health and agents ----------------------------------------------------------------------


@router.get("/health")
async def health(sb: Core, request: Request) -> dict[str, Any]:
    """Service, store, plugins, channels and background loops. Needs no token (for load
    balancers), and then answers states only: error texts, plugins and versions need a
    token (they can name files, hosts and, through a library's message, a secret)."""
    try:
        revision = await run(sb.store.current_revision)
        store: dict[str, Any] = {"ok": True, "backend": sb.store.dialect, "revision": revision}
        if sb.schemas:  # the plugins' own migrations (register_migrations)
            store["plugin_revisions"] = await run(sb.store.plugin_revisions, sb.schemas)
    except Exception as exc:
        store = {"ok": False, "backend": sb.store.dialect, "error": str(exc)}
    channels = {
        name: {
            "plugin": h.plugin,
            "state": h.state.value,
            "last_error": h.last_error,
            "restarts": h.restarts,
        }
        for name, h in sb.channels.items()
    }
    try:
        depth: int | None = await run(sb.outbox.depth)
    except Exception:  # health answers whatever broke; the loops say what
        depth = None
    failing = (
        depth is None
        or sb.loops.failing
        or any(h.state is ChannelState.FAILING for h in sb.channels.values())
        or sb.consumers.stuck()
    )
    errors = [str(e) for e in sb.plugins.errors]
    from switchboard import __version__

    status = "ok" if store["ok"] and not errors and not failing else "degraded"
    token = bearer(request)
    if token is None or request.app.state.tokens.check(token) is None:
        return {
            "status": status,
            "store": {"ok": store["ok"]},
            "channels": {n: {"state": c["state"]} for n, c in channels.items()},
            "loops": {n: {"state": v["state"]} for n, v in sb.loops.health().items()},
            "details": "send a bearer token for error texts, plugins and versions",
        }
    redact = request.app.state.redactor.redact
    for c in channels.values():
        c["last_error"] = c["last_error"] and redact(c["last_error"])
    loops = sb.loops.health()
    consumers = sb.consumers.health()
    for v in [*loops.values(), *consumers.values()]:
        v["last_error"] = v["last_error"] and redact(v["last_error"])
    return {
        "status": status,
        "version": __version__,
        "store": store,
        "plugins": [
            {"name": p.name, "version": p.version, "hooks": list(p.hooks)}
            for p in sb.plugins.info()
        ],
        "plugin_errors": [redact(e) for e in errors],
        "hook_errors": [redact(str(e)) for e in sb.plugins.hook_errors[-10:]],
        "channels": channels,
        "loops": loops,
        # each webhook's and plugin's event consumer: how far behind, and why
        "consumers": consumers,
        # this runner, and the singleton work it holds or waits for (several runners)
        "singletons": sb.singletons.health(),
        "outbox_depth": depth,
        "event_subscribers": sb.events.subscribers,
        # browser softphones connected through the console, and their legs now
        "softphones": sb.softphones.status(),
    }


@router.get("/agents")
async def agents(sb: Core, who: Caller) -> list[dict[str, Any]]:
    return [to_json(a) for a in await run(sb.store.list_agents)]
