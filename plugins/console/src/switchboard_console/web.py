"""The console's pages under ``/console``: server-rendered HTML, forms with CSRF tokens, one
small packaged script for the screen pop. Every action goes through the same service
methods of ``Switchboard`` as the HTTP API's handlers, so the same rules and errors apply.

(No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations,
which name dependencies local to :func:`build_router`.)"""

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, time, timedelta
from importlib.resources import files
from time import time as wall_clock
from typing import Annotated, Any
from urllib.parse import quote

import attrs
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.engine import Connection
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import HTTPConnection

from switchboard import (
    ChannelState,
    Event,
    EventType,
    InteractionStatus,
    Invalid,
    NotFound,
    Principal,
    Switchboard,
    SwitchboardError,
    Timeline,
    can_hear,
    to_json,
    web,
)
from switchboard_console import softphone
from switchboard_console.charts import bar_chart
from switchboard_console.i18n import Formats, choose, translations
from switchboard_console.settings import LANGUAGES, ConsoleSettings
from switchboard_console.tables import signout_t
from switchboard_console.tariff import call_costs

SESSION_COOKIE = "switchboard_console"
LOGIN_COOKIE = "switchboard_console_login"  # the sign-in form's CSRF token
LANG_COOKIE = "switchboard_console_lang"
FLASH_COOKIE = "switchboard_console_flash"
TABLES = ("agent", "day", "ivr_node", "costs", "mailings", "speech")
SECURITY_HEADERS = {
    # our own scripts and styles only (style attributes allowed: the charts' legend colours)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; style-src-attr 'unsafe-inline'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
STATIC = {
    "console.css": "text/css",
    "console.js": "text/javascript",
    "softphone.js": "text/javascript",
    "live.js": "text/javascript",
}


@attrs.frozen
class Session:
    who: Principal
    csrf: str
    lang: str


class Console:
    """The settings, the signer of session cookies and a template set per language."""

    def __init__(self, settings: ConsoleSettings, switchboard: Switchboard) -> None:
        self.settings = settings
        self.switchboard = switchboard
        self.signer = URLSafeTimedSerializer(
            settings.secret or secrets.token_urlsafe(32), salt="switchboard-console-session"
        )
        self.envs = {lang: self._environment(lang) for lang in LANGUAGES}
        self.formats = {lang: Formats(lang, settings.timezone) for lang in LANGUAGES}

    @staticmethod
    def _environment(lang: str) -> Environment:
        env = Environment(
            loader=PackageLoader("switchboard_console", "templates"),
            autoescape=select_autoescape(default=True),
            extensions=["jinja2.ext.i18n"],
        )
        env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
        return env

    # -- sessions -----------------------------------------------------------------------

    def language(self, request: HTTPConnection) -> str:
        return choose(
            request.headers.get("accept-language"),
            self.settings.language,
            request.cookies.get(LANG_COOKIE),
        )

    async def session(self, request: HTTPConnection) -> Session | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self.signer.loads(raw, max_age=int(self.settings.session_hours * 3600))
        except BadSignature:
            return None
        who = web.principal_of_fingerprint(request, data.get("k", ""))
        if who is None:  # the token was removed from the config
            return None
        if await self.signed_out(data["c"]):
            return None
        return Session(who, data["c"], self.language(request))

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        """A console cookie (``Secure`` is added by :meth:`harden` where it applies)."""
        response.set_cookie(
            name, value, max_age=max_age, path="/console", httponly=True, samesite="lax"
        )

    def harden(self, request: Request, response: Response) -> None:
        """What every console page gets: headers that keep it out of frames and its
        scripts to our own files, and ``Secure`` cookies over HTTPS (or when
        ``secure_cookie`` says so)."""
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        secure = self.settings.secure_cookie
        if secure is None:
            secure = request.url.scheme == "https"
        if secure:
            response.raw_headers[:] = [
                (k, v + b"; Secure" if k == b"set-cookie" and b"; secure" not in v.lower() else v)
                for k, v in response.raw_headers
            ]

    # -- sessions revoked by signing out --------------------------------------------------

    async def revoke(self, session_id: str) -> None:
        """Sign-out: the session's cookie is refused from now on by every runner sharing
        the database, even if a copy was kept elsewhere; rows of expired sessions go."""
        now = wall_clock()
        key = _key(session_id)

        def write(conn: Connection) -> None:
            conn.execute(sa.delete(signout_t).where(signout_t.c.until < now))
            conn.execute(sa.delete(signout_t).where(signout_t.c.session == key))
            until = now + self.settings.session_hours * 3600
            conn.execute(sa.insert(signout_t).values(session=key, until=until))

        await self.switchboard.transaction(write)

    async def signed_out(self, session_id: str) -> bool:
        key = _key(session_id)

        def read(conn: Connection) -> bool:
            query = sa.select(signout_t.c.until).where(signout_t.c.session == key)
            return conn.execute(query).first() is not None

        return await self.switchboard.transaction(read, write=False)

    # -- rendering ----------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        lang: str,
        session: Session | None = None,
        status_code: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        flash = request.cookies.get(FLASH_COOKIE)
        html = (
            self.envs[lang]
            .get_template(template)
            .render(
                lang=lang,
                fmt=self.formats[lang],
                who=session.who if session else None,
                csrf=session.csrf if session else None,
                path=request.url.path,
                searchable=self.switchboard.call_search is not None,
                flash=json.loads(flash) if flash and flash.startswith("{") else None,
                **values,
            )
        )
        response = HTMLResponse(html, status_code=status_code)
        if flash:
            response.delete_cookie(FLASH_COOKIE, path="/console")
        return response

    def fragment(self, template: str, lang: str, **values: Any) -> str:
        return (
            self.envs[lang]
            .get_template(template)
            .render(lang=lang, fmt=self.formats[lang], **values)
        )

    def redirect(self, url: str, flash: tuple[str, str] | None = None) -> RedirectResponse:
        """303 to ``url``; ``flash`` (kind, message) shows once on the next page."""
        response = RedirectResponse(url, status_code=303)
        if flash is not None:
            kind, text = flash
            self.set_cookie(response, FLASH_COOKIE, json.dumps({"kind": kind, "text": text}), 60)
        return response


def build_router(console: Console) -> APIRouter:
    class Hardened(APIRoute):
        """Every console route's response goes through :meth:`Console.harden`."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def hardened(request: Request) -> Response:
                response = await handler(request)
                console.harden(request, response)
                return response

            return hardened

    router = APIRouter(prefix="/console", include_in_schema=False, route_class=Hardened)
    softphone.add_routes(router, console)

    async def signed_in(request: Request) -> Session:
        session = await console.session(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(
                303,
                "sign in first",
                headers={"Location": f"/console/login?next={quote(target, safe='')}"},
            )
        return session

    async def checked(request: Request, session: Annotated[Session, Depends(signed_in)]) -> Session:
        """A signed-in session whose form (or ``X-CSRF-Token``) carries its CSRF token."""
        given = request.headers.get("x-csrf-token")
        if given is None:
            form = await request.form()
            value = form.get("csrf")
            given = value if isinstance(value, str) else ""
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page")
        return session

    Signed = Annotated[Session, Depends(signed_in)]
    Checked = Annotated[Session, Depends(checked)]

    # -- static files and language ------------------------------------------------------

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        body = (files("switchboard_console") / "static" / name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

    @router.get("/lang/{lang}")
    async def set_language(lang: str, next: str = "/console/contacts") -> Response:
        if lang not in LANGUAGES:
            raise HTTPException(404, f"no language {lang!r}: {', '.join(LANGUAGES)}")
        response = console.redirect(_local(next))
        console.set_cookie(response, LANG_COOKIE, lang, 365 * 86400)
        return response

    # -- sign-in ------------------------------------------------------------------------

    @router.get("", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/console/contacts", status_code=303)

    @router.get("/login")
    async def login_page(request: Request, next: str = "/console/contacts") -> Response:
        if await console.session(request) is not None:
            return console.redirect(_local(next))
        return _login_form(request, next)

    def _login_form(request: Request, next: str, error: str | None = None) -> Response:
        token = secrets.token_urlsafe(16)
        response = console.render(
            request,
            "login.html",
            console.language(request),
            status_code=401 if error else 200,
            login_csrf=token,
            next=_local(next),
            error=error,
        )
        console.set_cookie(response, LOGIN_COOKIE, token, 3600)
        return response

    @router.post("/login")
    async def login(
        request: Request,
        token: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/console/contacts",
    ) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
            return _login_form(request, next, "stale")
        who = web.principal_of_token(request, token.strip())
        if who is None:
            return _login_form(request, next, "token")
        response = console.redirect(_local(next))
        session = {"k": web.token_fingerprint(token.strip()), "c": secrets.token_urlsafe(24)}
        value = console.signer.dumps(session)
        console.set_cookie(
            response, SESSION_COOKIE, value, int(console.settings.session_hours * 3600)
        )
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    @router.post("/logout")
    async def logout(session: Checked) -> Response:
        await console.revoke(session.csrf)
        response = console.redirect("/console/login")
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    # -- contacts -----------------------------------------------------------------------

    @router.get("/contacts")
    async def contacts(
        request: Request,
        session: Signed,
        sb: web.Core,
        q: str = "",
    ) -> Response:
        items, total = await sb.search_contacts(q.strip() or None, limit=50)
        found = {"items": [to_json(c) for c in items], "total": total}
        return console.render(
            request,
            "contacts.html",
            session.lang,
            session,
            q=q,
            found=found,
            agents=await _agent_names(sb),
        )

    @router.post("/contacts")
    async def new_contact(
        session: Checked,
        sb: web.Core,
        name: Annotated[str, Form()],
        company: Annotated[str, Form()] = "",
        phone: Annotated[str, Form()] = "",
        email: Annotated[str, Form()] = "",
        owner: Annotated[str, Form()] = "",
    ) -> Response:
        """A contact typed in by an agent (a prospect to call); the API's rules apply."""
        try:
            addresses = [sb.parse_address(a.strip()) for a in (phone, email) if a.strip()]
            created = await sb.create_contact(
                name.strip(),
                addresses,
                company=company.strip() or None,
                owner_agent_id=(await sb.agent(owner)).id if owner else None,
            )
        except SwitchboardError as exc:
            return console.redirect("/console/contacts", ("error", str(exc)))
        return console.redirect(f"/console/contacts/{created.id}", ("ok", "saved"))

    @router.get("/contacts/{contact_id}")
    async def card(
        request: Request,
        contact_id: int,
        session: Signed,
        sb: web.Core,
        before: int | None = None,
    ) -> Response:
        try:
            contact = to_json(await sb.contact(contact_id))
            page = await sb.timeline(contact_id, limit=50, before=before)
        except NotFound:
            return console.render(
                request, "error.html", session.lang, session, status_code=404, status=404
            )
        items = _timeline_json(page, session.who)
        await _add_analyses(sb, items)
        timeline = {"items": items, "next_before": page.next_before}
        windows = await sb.windows(contact_id)
        now = datetime.now(UTC)
        # a closed window (WhatsApp's 24 hours) takes only the templates made for it, or
        # nothing at all where the channel sends none outside it (Messenger's)
        closed = {
            channel: sb.templates.for_channel(channel)
            for channel, end in windows.items()
            if end is None or end <= now
        }
        templated = {
            c for c in closed if getattr(sb.channel_objects[c], "templates_outside_window", False)
        }
        targets = _targets(sb, contact)
        return console.render(
            request,
            "card.html",
            session.lang,
            session,
            contact=contact,
            timeline=timeline,
            agents=await _agent_names(sb),
            targets=[t for t in targets if t["channel"] not in closed],
            closed=[
                (channel, names, [t for t in targets if t["channel"] == channel])
                for channel, names in sorted(closed.items())
                if channel in templated
            ],
            templated=templated,
            windows=windows,
            now=now,
            can_call=sb.voice_channel() is not None,
            templates=list(sb.templates.names),
        )

    @router.post("/contacts/{contact_id}")
    async def edit(
        contact_id: int,
        session: Checked,
        sb: web.Core,
        name: Annotated[str, Form()],
        company: Annotated[str, Form()] = "",
        owner: Annotated[str, Form()] = "",
        add_address: Annotated[str, Form()] = "",
    ) -> Response:
        back = f"/console/contacts/{contact_id}"
        try:
            changes: dict[str, Any] = {
                "company": company.strip() or None,
                "owner": await sb.agent(owner) if owner else None,
            }
            if name.strip():
                changes["name"] = name.strip()
            await sb.update_contact(
                contact_id, add=[add_address.strip()] if add_address.strip() else [], **changes
            )
        except SwitchboardError as exc:
            return console.redirect(back, ("error", str(exc)))
        return console.redirect(back, ("ok", "saved"))

    @router.post("/contacts/{contact_id}/merge")
    async def merge(
        contact_id: int,
        session: Checked,
        sb: web.Core,
        address: Annotated[str, Form()],
    ) -> Response:
        """The person also has this address: the card holding it joins this one."""
        back = f"/console/contacts/{contact_id}"
        try:
            await sb.merge_into(contact_id, address.strip())
        except SwitchboardError as exc:
            return console.redirect(back, ("error", str(exc)))
        return console.redirect(back, ("ok", "saved"))

    @router.post("/contacts/{contact_id}/call")
    async def call(
        request: Request,
        contact_id: int,
        session: Checked,
        sb: web.Core,
        address: Annotated[str, Form()],
    ) -> Response:
        back = f"/console/contacts/{contact_id}"
        # the softphone's script posts this without leaving the page (the page's
        # WebSocket must stay up: the browser leg rings on it); it asks for JSON
        quiet = "application/json" in request.headers.get("accept", "")
        agent = session.who.agent
        if agent is None:
            if quiet:
                return JSONResponse({"detail": "no agent to call from"}, status_code=422)
            return console.redirect(back, ("error", "no_extension"))
        try:
            call_id = await sb.place_call(session.who, agent, to=address)
        except SwitchboardError as exc:
            if quiet:
                return JSONResponse({"detail": str(exc)}, status_code=422)
            return console.redirect(back, ("error", str(exc)))
        if quiet:
            return JSONResponse({"call_id": call_id})
        return console.redirect(back, ("ok", f"calling:{call_id}"))

    @router.post("/contacts/{contact_id}/message")
    async def message(
        request: Request,
        contact_id: int,
        session: Checked,
        sb: web.Core,
        target: Annotated[str, Form()],
        text: Annotated[str, Form()] = "",
        subject: Annotated[str, Form()] = "",
        template: Annotated[str, Form()] = "",
    ) -> Response:
        back = f"/console/contacts/{contact_id}"
        channel, _, address = target.partition("|")
        try:
            await sb.send_message(
                session.who,
                channel,
                contact_id=contact_id,
                address=address or None,
                text=None if template else text,
                subject=None if template else (subject.strip() or None),
                template=template or None,
            )
        except SwitchboardError as exc:
            return console.redirect(back, ("error", str(exc)))
        return console.redirect(back, ("ok", "queued"))

    @router.get("/interactions/{interaction_id}/attachments/{index}")
    async def attachment(
        interaction_id: int, index: int, session: Signed, sb: web.Core
    ) -> Response:
        """A file a message carried: a photo shown on the card, a voice note played, a
        document downloaded."""
        return web.attachment_response(*await sb.attachment(interaction_id, index))

    @router.get("/calls/{call_id:path}/recording")
    async def recording(call_id: str, session: Signed, sb: web.Core) -> Response:
        return web.recording_response(call_id, await sb.recording_file(session.who, call_id))

    # -- callback tasks -----------------------------------------------------------------

    @router.get("/tasks")
    async def tasks(request: Request, session: Signed, sb: web.Core) -> Response:
        """Open callback tasks: an agent's own; everyone's for supervisors and admins."""
        who = session.who
        found = await sb.tasks(who, limit=500) if who.sees_all or who.agent_id else []
        cards = await sb.contacts(t.contact_id for t in found)
        names = {i: c.name for i, c in cards.items()}
        return console.render(
            request,
            "tasks.html",
            session.lang,
            session,
            tasks=[to_json(t) for t in found],
            contacts=names,
            agents=await _agent_names(sb),
        )

    @router.post("/tasks/{task_id}/done")
    async def task_done(
        task_id: int,
        session: Checked,
        sb: web.Core,
        back: Annotated[str, Form()] = "/console/tasks",
    ) -> Response:
        back = _local(back)
        try:
            await sb.finish_task(session.who, task_id)
        except SwitchboardError as exc:
            return console.redirect(back, ("error", str(exc)))
        return console.redirect(back, ("ok", "task_done"))

    # -- the screen pop -----------------------------------------------------------------

    @router.get("/events")
    async def events(request: Request, session: Signed, sb: web.Core) -> EventSourceResponse:
        """Pops (``pop``: the card's HTML) for calls ringing for this agent, and the state
        of those calls (``call``: answered, ended)."""
        mine = session.who.agent_id

        def render(e: Event) -> ServerSentEvent | None:
            if mine is None or e.agents is None or mine not in e.agents:
                return None
            data = e.data
            if e.type == EventType.CALL_RINGING:
                html = console.fragment(
                    "pop.html", session.lang, call=data["call"], contact=data["contact"], event=e
                )
                return ServerSentEvent(id=str(e.id), event="pop", data=html)
            if e.type in (EventType.CALL_ANSWERED, EventType.CALL_ENDED):
                call = data["call"]
                state = {"call_id": call["call_id"], "state": e.type.split(".")[1]}
                return ServerSentEvent(id=str(e.id), event="call", data=json.dumps(state))
            return None

        return web.event_stream(request, sb, session.who, render)

    # -- the dashboard ------------------------------------------------------------------

    def period(start: date | None, end: date | None) -> tuple[date, date]:
        today = datetime.now(UTC).date()
        end = end or today
        start = start or end - timedelta(days=console.settings.dashboard_days - 1)
        if start > end:
            start, end = end, start
        return start, end

    async def figures(
        sb: Switchboard, start: date, end: date, tables: tuple[str, ...] = TABLES
    ) -> dict[str, Any]:
        """The dashboard's ``tables`` for the days ``start`` to ``end`` (UTC, included)."""
        since = datetime.combine(start, time(), UTC)
        until = datetime.combine(end + timedelta(days=1), time(), UTC)
        sla = sb.config.core.analytics.service_level_seconds
        out: dict[str, Any] = {"sla": sla}
        for group in ("agent", "day", "ivr_node"):
            if group in tables:
                out[group] = await sb.call_stats(since, until, group)
        if "agent" in tables:
            out["agent"].sort(key=lambda r: (r["agent"] == "unassigned", r["agent"]))
        if "day" in tables:
            out["totals"] = _totals(out["day"])
        if "costs" in tables:
            tariff = console.settings.tariff
            out["costs"] = await call_costs(sb, since, until, tariff)
        service = getattr(sb.plugin("mailings"), "mailings", None)  # switchboard-mailings
        speech = _speech(sb)
        if "speech" in tables and speech is not None:
            out["speech"] = await speech.agent_summary(since, until)
        if "mailings" in tables and service is not None:
            mailings = await service.list_mailings()
            out["mailings"] = [  # those created in the period
                m for m in mailings if since <= datetime.fromisoformat(m["created_at"]) < until
            ]
        return out

    @router.get("/dashboard")
    async def dashboard(
        request: Request,
        session: Signed,
        sb: web.Core,
        start: Annotated[date | None, Depends(_date("from"))],
        end: Annotated[date | None, Depends(_date("to"))],
    ) -> Response:
        if not session.who.sees_all:
            return console.render(
                request, "error.html", session.lang, session, status_code=403, status=403
            )
        start, end = period(start, end)
        data = await figures(sb, start, end)
        return console.render(
            request,
            "dashboard.html",
            session.lang,
            session,
            start=start,
            end=end,
            data=data,
            charts=_charts(data),
            query=f"from={start.isoformat()}&to={end.isoformat()}",
        )

    # -- what was said in calls (switchboard-speech) -------------------------------------

    @router.get("/search")
    async def search(request: Request, session: Signed, sb: web.Core, q: str = "") -> Response:
        """Calls found by the words said in them: the calls the agent may hear (all for
        supervisors), each with its passages (and when in the call) and a link to the
        card."""
        found: list[dict[str, Any]] = []
        error = None
        if q.strip():
            try:
                hits = await sb.search_calls(session.who, q[:200], limit=50)
            except Invalid as exc:
                error = str(exc)
            else:
                for call, hit in hits:
                    found.append(
                        {"call": to_json(call), "matches": [to_json(m) for m in hit.matches]}
                    )
        return console.render(
            request,
            "search.html",
            session.lang,
            session,
            q=q,
            found=found,
            error=error,
            agents=await _agent_names(sb),
        )

    # -- calls talking now, for supervisors to join -------------------------------------

    @router.get("/live")
    async def live(request: Request, session: Signed, sb: web.Core) -> Response:
        """The calls talking now (a fragment the dashboard reloads), each with Listen,
        Whisper and Barge in."""
        if not session.who.sees_all:
            return HTMLResponse("", status_code=403)
        since = datetime.now(UTC) - timedelta(days=1)
        calls = [
            c
            for c in await sb.find_calls(since=since, limit=500)
            if c.status is InteractionStatus.ANSWERED
        ]
        html = console.fragment(
            "live.html",
            session.lang,
            calls=calls,
            agents=await _agent_names(sb),
            now=datetime.now(UTC),
            me=session.who.agent_id,
        )
        return HTMLResponse(html)

    @router.post("/calls/{call_id:path}/supervise")
    async def supervise(
        call_id: str, session: Checked, sb: web.Core, mode: Annotated[str, Form()]
    ) -> Response:
        """Join a call from the supervisor's own phone or softphone; answers once they are
        in (their softphone answers such a call by itself)."""
        record = await sb.supervise_call(session.who, call_id, mode)  # errors: JSON, by kind
        return JSONResponse({"call_id": record.call_id, "mode": mode})

    @router.get("/dashboard/{table}.csv")
    async def dashboard_csv(
        table: str,
        session: Signed,
        sb: web.Core,
        start: Annotated[date | None, Depends(_date("from"))],
        end: Annotated[date | None, Depends(_date("to"))],
    ) -> Response:
        if not session.who.sees_all:
            raise HTTPException(403, "the dashboard is for supervisors and admins")
        if table not in TABLES:
            raise HTTPException(404, f"no table {table!r}: {', '.join(TABLES)}")
        start, end = period(start, end)
        rows = (await figures(sb, start, end, (table,))).get(table)
        if rows is None:  # mailings or speech without their plugin
            raise HTTPException(404, f"no table {table!r}: its plugin is not installed")
        if table == "costs":
            rows = cost_rows(rows)
        name = f"{table}-{start.isoformat()}-{end.isoformat()}.csv"
        return web.csv_response(rows, name)

    return router


# -- helpers ------------------------------------------------------------------------------


def _timeline_json(page: Timeline, who: Principal) -> list[dict[str, Any]]:
    """A timeline page for the card: each item as JSON, a call's with its record, its
    talk time and its recording's console link (``allowed``: may ``who`` hear it)."""
    out = []
    for item in page.items:
        data = to_json(item)
        call = page.calls.get(item.id)
        if call is not None:
            record = to_json(call)
            talk = None
            if call.answered_at and call.ended_at:
                talk = (call.ended_at - call.answered_at).total_seconds()
            record["talk_s"] = talk
            if call.recording is not None:
                record["recording"] = {
                    "duration": call.recording.duration,
                    "url": f"/console/calls/{quote(call.call_id)}/recording",
                    "allowed": can_hear(call, who),
                }
            data["call"] = record
        data["files"] = web.attachments_json(item, "/console")
        out.append(data)
    return out


def _speech(sb: Switchboard) -> Any:
    """The speech plugin's service (switchboard-speech), or None when not installed."""
    return getattr(sb.plugin("speech"), "speech", None)


async def _add_analyses(sb: Switchboard, items: list[dict[str, Any]]) -> None:
    """Each call the agent may hear gets its speech analysis (``call.analysis``: status,
    metrics, score, rules, transcript segments), when the speech plugin is installed."""
    speech = _speech(sb)
    if speech is None:
        return
    calls = {
        i["call"]["call_id"]: i["call"]
        for i in items
        if i.get("call") and (i["call"].get("recording") or {}).get("allowed")
    }
    if calls:
        for call_id, analysis in (await speech.analyses(list(calls))).items():
            calls[call_id]["analysis"] = analysis


def cost_rows(costs: dict[str, Any]) -> list[dict[str, Any]]:
    """The cost table's rows and its total, as CSV rows."""
    return [*costs["rows"], {"prefix": "total", **costs["total"]}]


def _date(name: str) -> Any:
    def parse(request: Request) -> date | None:
        raw = request.query_params.get(name)
        if not raw:
            return None
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise HTTPException(
                422,
                [{"loc": ["query", name], "msg": "a date as YYYY-MM-DD", "type": "value"}],
            ) from None

    return parse


def _key(session_id: str) -> str:
    """What the database keeps of a session id: its hash (the id is the CSRF token)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def _local(url: str) -> str:
    """Only paths of the console: no redirect elsewhere."""
    return url if url.startswith("/console") and not url.startswith("//") else "/console/contacts"


def _detail(exc: HTTPException | SwitchboardError) -> str:
    """What went wrong, for the page: an HTTP error's detail or a domain error's message."""
    if isinstance(exc, SwitchboardError):
        return str(exc)
    detail = exc.detail
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


async def _agent_names(sb: Switchboard) -> dict[int, str]:
    return {a.id: a.name for a in await sb.agents() if a.id is not None}


def _targets(sb: Switchboard, contact: dict[str, Any]) -> list[dict[str, str]]:
    """Each running channel paired with each of the contact's addresses it can send to."""
    out = []
    for name, handle in sorted(sb.channels.items()):
        if handle.state is not ChannelState.RUNNING:
            continue
        kind = handle.channel.address_kind
        for address in contact["addresses"]:
            if address.startswith(kind + ":"):
                value = address.partition(":")[2]
                out.append(
                    {"value": f"{name}|{address}", "channel": name, "address": value, "kind": kind}
                )
    return out


def _totals(days: list[dict[str, Any]]) -> dict[str, Any]:
    """The period's figures, from its days' (shares and averages weighted back)."""
    calls_in = sum(r["calls_in"] for r in days)
    answered = sum(r["answered"] for r in days)
    answered_in = sum((r["answer_rate"] or 0) * r["calls_in"] for r in days)
    in_sla = sum((r["service_level"] or 0) * r["calls_in"] for r in days)
    wait = sum((r["avg_wait_s"] or 0) * r["answered"] for r in days)
    talk = sum((r["avg_talk_s"] or 0) * r["answered"] for r in days)
    return {
        "calls": sum(r["calls"] for r in days),
        "calls_in": calls_in,
        "calls_out": sum(r["calls_out"] for r in days),
        "answered": answered,
        "missed": sum(r["missed"] + r["abandoned"] for r in days),
        "answer_rate": answered_in / calls_in if calls_in else None,
        "service_level": in_sla / calls_in if calls_in else None,
        "avg_wait_s": wait / answered if answered else None,
        "avg_talk_s": talk / answered if answered else None,
    }


def _charts(data: dict[str, Any]) -> dict[str, Any]:
    agents = data["agent"]
    days = data["day"]
    nodes = data["ivr_node"]
    costs = data["costs"]["rows"]
    return {
        "agents": bar_chart(
            [r["agent"] for r in agents],
            [
                ("answered", [r["answered"] for r in agents]),
                ("missed", [r["missed"] + r["abandoned"] for r in agents]),
            ],
        ),
        "days": bar_chart(
            [r["day"][5:] for r in days],
            [("in", [r["calls_in"] for r in days]), ("out", [r["calls_out"] for r in days])],
        ),
        "ivr": bar_chart(
            [r["ivr_node"] for r in nodes],
            [
                ("visits", [r["visits"] for r in nodes]),
                ("abandoned", [r["abandoned"] for r in nodes]),
            ],
        ),
        "costs": bar_chart(
            [r["prefix"] for r in costs],
            [
                ("cost", [r["cost"] for r in costs]),
                ("reference", [r["reference_cost"] for r in costs]),
            ],
        ),
    }


def build_api_router(console: Console) -> APIRouter:
    """``GET /api/analytics/costs``: the dashboard's call costs for a CRM (bearer token)."""
    router = APIRouter(prefix="/api/analytics", tags=["analytics"])

    @router.get("/costs", response_model=None)
    async def call_cost_analytics(
        sb: web.Core,
        who: web.Caller,
        since: Annotated[datetime, Query(alias="from", description="start (ISO 8601, zone)")],
        until: Annotated[datetime, Query(alias="to", description="end, excluded")],
        format: str = Query(default="json", pattern="^(json|csv)$"),
    ) -> dict[str, Any] | Response:
        """What the period's answered calls cost per tariff prefix, beside the reference
        tariff (``[plugins.console.tariff]``); supervisors and admins."""
        web.supervisor_only(who, "call costs")
        web.require_zones(since, until)
        costs = await call_costs(sb, since, until, console.settings.tariff)
        if format == "csv":
            return web.csv_response(cost_rows(costs), "call-costs.csv")
        return {"from": since.isoformat(), "to": until.isoformat(), **costs}

    return router
