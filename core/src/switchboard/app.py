"""The runner: FastAPI on uvicorn around the core.

On start: open the core (plugins, config, store), then run the event hub, the webhooks,
the outbox worker and every configured channel under supervision. On SIGTERM/SIGINT
uvicorn stops taking requests and closes open streams; then in-flight sends finish,
channels stop, and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchboard import __version__
from switchboard.api import domain_error
from switchboard.api import router as api_router
from switchboard.auth import TokenBook
from switchboard.config import Config
from switchboard.core import Switchboard
from switchboard.errors import SwitchboardError
from switchboard.metrics import make_registry
from switchboard.plugins import Plugins
from switchboard.runnerlock import RunnerLock, RunnerLocked
from switchboard.secrets import Redactor, secret_values
from switchboard.webhooks import Webhooks

log = logging.getLogger("switchboard.runner")


class BodyLimit:
    """413 for request bodies over ``max_bytes``, declared or streamed; 422 for a path or
    query with a NUL character (no route takes one, and PostgreSQL cannot store it)."""

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            response = JSONResponse(
                {"detail": "a NUL character (%00) in the path or query is not accepted"},
                status_code=422,
            )
            await response(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException, so FastAPI's body parsing lets it through as is.
                    raise HTTPException(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, limited, send)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
        await response(scope, receive, send)


# any other method is counted as "other": a client cannot grow the label set
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class CountRequests:
    """Counts requests by method, route template and status, for /metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            counter = getattr(scope["app"].state, "requests", None)
            if counter is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                method = scope["method"] if scope["method"] in _METHODS else "other"
                counter.labels(method, route, str(status)).inc()


def _say_what_is_not_configured(sb: Switchboard) -> None:
    """One line per installed plugin left unconfigured (its required settings have no
    ``[plugins.NAME]`` table), with the channels it would run and where its docs are."""
    docs = {p.name: p.docs for p in sb.plugins.info()}
    for name in sb.config.unconfigured:
        channels = [c for c, h in sb.channels.items() if h.plugin == name]
        log.info(
            "plugin %s is installed but not configured%s: add a [plugins.%s] table to %s%s",
            name,
            f" (channel {', '.join(channels)} stays off)" if channels else "",
            name,
            sb.config.source,
            f"; docs: {docs[name]}" if docs.get(name) else "",
        )


def create_app(
    config: Config | str | Path | None,
    channels: Iterable[str] | None = None,
    *,
    supervise_backoff: tuple[float, float] = (1.0, 60.0),
    plugins: Plugins | None = None,
) -> FastAPI:
    """The runner's app. ``plugins`` (tests) replaces loading the installed entry points."""
    wanted = list(channels) if channels is not None else None
    state: dict[str, Any] = {"max_body": 1_048_576}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sb = await Switchboard.open(config, plugins=plugins)
        runner_lock = RunnerLock(sb.store.engine.url)
        try:
            runner_lock.acquire()  # one runner per SQLite file
        except RunnerLocked:
            await sb.close()
            raise
        redactor = Redactor(secret_values(sb.config.core, sb.config.plugins))
        redactor.install()
        app.state.redactor = redactor
        state["max_body"] = sb.config.core.http.max_body_bytes
        app.state.switchboard = sb
        app.state.tokens = TokenBook(sb.config.core.tokens, sb.store.list_agents())
        if not len(app.state.tokens):
            log.warning(
                "no [[switchboard.tokens]] configured: every /api path but /api/health answers 401"
            )
        webhooks = Webhooks(sb)
        app.state.webhooks = webhooks
        app.state.metrics, app.state.requests = make_registry(sb, webhooks)
        router = APIRouter()
        await sb.plugins.hooks.register_routes(router=router)
        app.include_router(router)
        await sb.plugins.hooks.startup(app=app)
        sb.loops.backoff_initial, sb.loops.backoff_max = supervise_backoff
        sb.loops.start("events", sb.events.run)
        if sb.store.engine.dialect.name == "postgresql":  # other runners' events, at once
            sb.loops.start("events:listen", sb.events.listen)
        sb.loops.start("outbox", sb.outbox.run)
        sb.supervise("events:prune", sb.events.prune_forever, one_runner=True)
        sb.nodes.start()  # PostgreSQL: this runner's presence, the sweep of dead ones' calls
        if sb.store.engine.dialect.name != "postgresql":
            await sb.nodes.sweep()  # the calls a runner before this one left
        await sb.consumers.start()  # the webhooks and the plugins' event consumers
        await sb.supervise_channels(
            wanted, backoff_initial=supervise_backoff[0], backoff_max=supervise_backoff[1]
        )
        _say_what_is_not_configured(sb)
        log.info(
            "Switchboard %s running: channels %s",
            __version__,
            ", ".join(f"{n}={h.state.value}" for n, h in sb.channels.items()) or "none",
        )
        try:
            yield
        finally:
            sb.outbox.stop()
            await sb.loops.wait("outbox", sb.config.core.http.shutdown_timeout)
            await sb.stop_channels()
            await sb.consumers.stop()
            await webhooks.close()
            await sb.loops.stop()
            await sb.relay.stop()  # requests other runners relayed, still being served
            await sb.plugins.hooks.shutdown(app=app)
            await sb.close()
            runner_lock.release()
            redactor.uninstall()

    app = FastAPI(
        title="Switchboard",
        version=__version__,
        lifespan=lifespan,
        description="Calls, emails and messages on one CRM timeline. See docs/api.md.",
    )
    app.add_middleware(BodyLimit, max_bytes=lambda: state["max_body"])

    app.add_middleware(CountRequests)
    # NotFound 404, Conflict 409, Invalid 422, Forbidden 403: for the API and plugins' routes
    app.add_exception_handler(SwitchboardError, domain_error)

    app.include_router(api_router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        body = await asyncio.to_thread(generate_latest, request.app.state.metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
