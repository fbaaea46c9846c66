"""The runner's HTTP application (FastAPI). This is the seed of the runner service: it
starts the core, the channels and the outbox worker, and serves ``/api/health``. The full
HTTP API, event stream and webhooks come with the runner issue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from switchboard import __version__
from switchboard.core import Switchboard


def create_app(config_path: str | Path | None, channels: Iterable[str] | None = None) -> FastAPI:
    wanted = list(channels) if channels is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sb: Switchboard = await Switchboard.open(config_path)
        app.state.switchboard = sb
        router = APIRouter()
        await sb.plugins.call("register_routes", router=router)
        app.include_router(router)
        await sb.plugins.call("startup", app=app)
        await sb.start_channels(wanted)
        worker = asyncio.create_task(sb.outbox.run(), name="switchboard-outbox")
        try:
            yield
        finally:
            sb.outbox.stop()
            await worker
            await sb.stop_channels()
            await sb.plugins.call("shutdown", app=app)
            await sb.close()

    app = FastAPI(title="Switchboard", version=__version__, lifespan=lifespan)

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        sb: Switchboard = app.state.switchboard
        try:
            revision = await asyncio.to_thread(sb.store.current_revision)
            store = {"ok": True, "backend": sb.store.dialect, "revision": revision}
        except Exception as exc:
            store = {"ok": False, "backend": sb.store.dialect, "error": str(exc)}
        channels = {
            name: {"plugin": h.plugin, "state": h.state.value, "last_error": h.last_error}
            for name, h in sb.channels.items()
        }
        plugins = [
            {"name": p.name, "version": p.version, "hooks": list(p.hooks)}
            for p in sb.plugins.info()
        ]
        errors = [str(e) for e in sb.plugins.errors]
        return {
            "status": "ok" if store["ok"] and not errors else "degraded",
            "version": __version__,
            "store": store,
            "plugins": plugins,
            "plugin_errors": errors,
            "hook_errors": [str(e) for e in sb.plugins.hook_errors[-10:]],
            "channels": channels,
            "outbox_depth": await asyncio.to_thread(sb.outbox.depth),
        }

    return app
