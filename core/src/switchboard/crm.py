"""What a CRM connector is made of, none of it any one CRM's (docs/writing-a-plugin.md,
"A CRM connector"): the Bitrix24, amoCRM and Odoo plugins stand on it, and so can another.

- :class:`CrmConnector`: a durable event consumer (``switchboard.consumers``) that hands
  each call, recording and message event to one method of the connector, after checking
  once that every agent it maps has a user in the CRM.
- :class:`Links`: the connector's external-id map (our contact / call / message to the
  CRM's entity), in a table the plugin owns (:func:`links_table`, its own migration); it
  makes every push idempotent: an event delivered twice finds its link and is not sent
  twice.
- :class:`CrmHttp`: an httpx client for a CRM's REST API with the fault rules of every
  connector: paced to the CRM's rate, 429 waits ``Retry-After``, 5xx and network errors
  raise :class:`CrmUnavailable` (the consumer retries with backoff, the events after it
  wait), 401 refreshes the credentials once then raises :class:`CrmUnauthorized`, and an
  answer of an unexpected shape raises :class:`switchboard.SkipEvent` for that event only.
- :class:`TtlCache`: the short cache ``resolve_contact`` answers from.
- :class:`CrmPush`: which kinds of events a connector pushes (a ``push`` table in its
  settings), and :func:`check_agent_names` for ``check_config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import httpx
import sqlalchemy as sa

from switchboard.address import Address
from switchboard.consumers import SkipEvent
from switchboard.errors import Unavailable
from switchboard.events import Event
from switchboard.models import Contact, EventType, utcnow
from switchboard.pacing import Pacer
from switchboard.plugins import hookimpl
from switchboard.tables import UTCDateTime

if TYPE_CHECKING:
    from switchboard.config import CoreSettings
    from switchboard.core import Switchboard

__all__ = [
    "CrmConnector",
    "CrmError",
    "CrmHttp",
    "CrmPlugin",
    "CrmPush",
    "CrmUnauthorized",
    "CrmUnavailable",
    "Link",
    "Links",
    "TtlCache",
    "check_agent_names",
    "customer_address",
    "customer_number",
    "links_columns",
    "links_table",
    "message_lines",
    "values_of",
]

log = logging.getLogger("switchboard.crm")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: A connector's cursor is saved at most this often (seconds): its pushes are idempotent.
SAVE_EVERY = 0.5
#: How long a 429's Retry-After is waited for inside one attempt; longer goes to backoff.
MAX_RETRY_AFTER = 30.0


# -- what is pushed ---------------------------------------------------------------------


@attrs.define
class CrmPush:
    """``[plugins.NAME.push]``: what a connector sends to its CRM."""

    calls: bool = True  # calls registered, shown to the agent's CRM user, finished
    recordings: bool = True  # recordings attached to the CRM's call
    messages: bool = True  # messengers' and SMS messages, in and out
    emails: bool = True  # emails, in and out

    def event_types(self) -> set[str]:
        types: set[str] = set()
        if self.calls:
            types |= {EventType.CALL_RINGING, EventType.CALL_ANSWERED, EventType.CALL_ENDED}
        if self.recordings:
            types |= {EventType.CALL_ENDED, EventType.CALL_RECORDED}
        if self.messages or self.emails:
            types |= {EventType.MESSAGE_RECEIVED, EventType.MESSAGE_SENT}
        return types


def check_agent_names(users: Mapping[str, Any], core: CoreSettings, where: str) -> list[str]:
    """Problems for ``check_config``: every agent a connector maps to a CRM user must be a
    configured agent (``[[switchboard.agents]]``)."""
    names = {a.name for a in core.agents}
    return [
        f"{where}: {name!r} is not an agent in [[switchboard.agents]]"
        for name in users
        if name not in names
    ]


def customer_address(call: Mapping[str, Any]) -> str:
    """The customer's side of a call event's ``call``: the caller of an inbound call, the
    callee of an outbound one (``phone:+7...``, or the text a withheld number came as)."""
    inbound = call.get("direction") == "inbound"
    return str(call.get("from_address" if inbound else "to_address") or "")


def customer_number(call: Mapping[str, Any]) -> str:
    """The customer's number of a call event's ``call`` (``+7...``), or the text a withheld
    number came as (``anonymous``)."""
    address = customer_address(call)
    return address.partition(":")[2] if address.startswith("phone:") else address


def message_lines(interaction: Mapping[str, Any]) -> list[str]:
    """A message or email event's ``interaction`` as lines for a CRM note: the channel,
    the direction and the address (``email ← email:ivan@example.com``), ``Subject: ...``,
    the text, and how many files it carried."""
    arrow = "←" if interaction.get("direction") == "inbound" else "→"
    lines = [f"{interaction.get('channel')} {arrow} {interaction.get('address') or ''}".strip()]
    if interaction.get("subject"):
        lines.append(f"Subject: {interaction['subject']}")
    if interaction.get("text"):
        lines.append(str(interaction["text"]))
    files = (interaction.get("meta") or {}).get("attachments") or []
    if files:
        lines.append(f"({len(files)} attachment(s) in Switchboard)")
    return lines


def values_of(addresses: Iterable[str], kind: str) -> list[str]:
    """The values of the addresses of one kind: ``values_of(["phone:+7..."], "phone")``."""
    return [a.partition(":")[2] for a in addresses if a.startswith(f"{kind}:")]


# -- the external-id map ----------------------------------------------------------------


def links_columns() -> list[sa.Column[Any]]:
    """The columns of a connector's external-id map: for its table and its migration
    (``op.create_table(name, *links_columns())``)."""
    return [
        # what of ours: "contact", "call", "message" (or the connector's own kinds)
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("our_id", sa.String(200), primary_key=True),  # contact id, call id, ...
        sa.Column("crm_id", sa.String(200), nullable=False),  # the CRM's entity id
        sa.Column("state", sa.String(32), nullable=False),  # how far the push went
        sa.Column("data", sa.JSON, nullable=True),  # anything else the connector keeps
        sa.Column("updated_at", UTCDateTime, nullable=False),
    ]


def links_table(metadata: sa.MetaData, name: str) -> sa.Table:
    """A connector's external-id map, ``name`` in its own ``metadata``."""
    return sa.Table(name, metadata, *links_columns())


@attrs.frozen
class Link:
    """One entry of the map: the CRM's id of something of ours, and how far its push went."""

    crm_id: str
    state: str = ""
    data: dict[str, Any] = attrs.field(factory=dict)


class Links:
    """A connector's external-id map (see :func:`links_table`), in the store's database.
    The kinds in ``remember`` (ids that never change once made, such as a contact's) are
    also kept in memory once read or written, so a busy connector does not read them back
    for every event."""

    def __init__(
        self, core: Switchboard, table: sa.Table, remember: Iterable[str] = ("contact",)
    ) -> None:
        self.core = core
        self.table = table
        self.remember = frozenset(remember)
        self._known: dict[tuple[str, str], Link] = {}

    async def get(self, kind: str, our_id: str | int) -> Link | None:
        key = (kind, str(our_id))
        known = self._known.get(key)
        if known is not None:
            return known
        t = self.table

        def read() -> Link | None:
            with self.core.store.engine.connect() as conn:
                row = conn.execute(
                    sa.select(t.c.crm_id, t.c.state, t.c.data).where(
                        t.c.kind == kind, t.c.our_id == key[1]
                    )
                ).first()
            return None if row is None else Link(row.crm_id, row.state, dict(row.data or {}))

        link = await asyncio.to_thread(read)
        if link is not None:
            self._keep(key, link)
        return link

    async def put(
        self,
        kind: str,
        our_id: str | int,
        crm_id: str | int,
        state: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> Link:
        """Record (or update) the CRM's id of ``our_id`` and the push's state: one
        statement (an upsert)."""
        t = self.table
        values = {
            "crm_id": str(crm_id),
            "state": state,
            "data": dict(data or {}),
            "updated_at": utcnow(),
        }
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if self.core.store.dialect == "postgresql" else sqlite
        upsert = (
            dialect.insert(t)
            .values(kind=kind, our_id=str(our_id), **values)
            .on_conflict_do_update(index_elements=[t.c.kind, t.c.our_id], set_=values)
        )

        def write() -> None:
            with self.core.store.write() as conn:
                conn.execute(upsert)

        await asyncio.to_thread(write)
        link = Link(str(crm_id), state, dict(data or {}))
        self._keep((kind, str(our_id)), link)
        return link

    def _keep(self, key: tuple[str, str], link: Link) -> None:
        if key[0] in self.remember:
            if len(self._known) >= 50_000:
                self._known.clear()
            self._known[key] = link


class TtlCache(Generic[K, V]):
    """At most ``size`` answers (None too: "the CRM has none"), each kept ``ttl`` seconds,
    the oldest dropped first. A lookup runs once however many ask for the same key at a
    time, and runs to its end even when the one who asked stops waiting (the core gives
    ``resolve_contact`` only ``resolve_timeout``): its answer is kept for the next."""

    def __init__(self, ttl: float = 60.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[K, tuple[float, V | None]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V | None]] = {}

    async def fetch(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """The kept answer for ``key``, else ``await load()`` (kept)."""
        item = self._items.get(key)
        if item is not None and item[0] >= time.monotonic():
            return item[1]
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key, load))
            loading.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._loading[key] = loading
        return await asyncio.shield(loading)

    async def _load(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        try:
            value = await load()
        finally:
            self._loading.pop(key, None)
        self._items[key] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def drop(self, key: K) -> None:
        self._items.pop(key, None)


# -- talking to the CRM -----------------------------------------------------------------


class CrmError(Exception):
    """The CRM did not take a request; the consumer tries the event again later."""


class CrmUnavailable(CrmError):
    """Down, overloaded (5xx, 429) or out of reach: retried with backoff."""


class CrmUnauthorized(CrmError):
    """Refused our credentials even after a refresh: retried with backoff (a person must
    act: ``/api/health`` shows the consumer failing with this error)."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


class CrmHttp:
    """A CRM's REST API over httpx, with the fault rules every connector shares (see the
    module's text). ``headers()`` gives the auth headers of each request (a token that
    may have been refreshed meanwhile); ``refresh()`` renews them after a 401 (None:
    nothing to renew, a 401 is final)."""

    def __init__(
        self,
        base_url: str,
        *,
        rate: float,
        timeout: float = 10.0,
        headers: Callable[[], Awaitable[dict[str, str]]] | None = None,
        refresh: Callable[[], Awaitable[None]] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.pacer = Pacer(rate, 0.0)
        self.headers = headers
        self.refresh = refresh
        self.client = client or httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_connections=20)
        )
        self.requests = 0

    async def close(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        data: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> httpx.Response:
        """One request (``what`` names the CRM method in errors and logs); the answer
        when its status is in ``ok``. Raises as the module's text says."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        refreshed = False
        waits = 0  # 429s waited out in this request
        while True:
            await self.pacer.wait("")
            headers = await self.headers() if self.headers is not None else {}
            self.requests += 1
            try:
                answer = await self.client.request(
                    method,
                    url,
                    json=json,
                    data=data,
                    params=params,
                    content=content,
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                raise CrmUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
            if answer.status_code in ok:
                return answer
            if answer.status_code == 401 and self.refresh is not None and not refreshed:
                refreshed = True
                await self.refresh()
                continue
            if answer.status_code == 401:
                raise CrmUnauthorized(f"{what}: 401 {answer.text[:300]}")
            if answer.status_code == 429:
                wait = _retry_after(answer.headers.get("retry-after"))
                if wait is not None and wait <= MAX_RETRY_AFTER and waits < 5:
                    waits += 1
                    await asyncio.sleep(wait)
                    continue
                raise CrmUnavailable(f"{what}: 429 rate limited")
            if answer.status_code >= 500 or answer.status_code in (408, 409, 423):
                raise CrmUnavailable(f"{what}: {answer.status_code} {answer.text[:300]}")
            raise self.refused(what, answer)

    def refused(self, what: str, answer: httpx.Response) -> Exception:
        """What a 4xx answer other than 401/429 becomes: the CRM will never take this
        item (a bad id, a missing field), so it is set aside (:class:`SkipEvent`)."""
        return SkipEvent(f"{what}: {answer.status_code} {answer.text[:300]}")

    @staticmethod
    def json_of(answer: httpx.Response, what: str) -> Any:
        """The JSON of an answer; :class:`SkipEvent` (logged with the method) when it is
        not JSON."""
        try:
            return answer.json()
        except ValueError:
            log.warning("%s: an answer that is not JSON (%d bytes)", what, len(answer.content))
            raise SkipEvent(f"{what}: the answer is not JSON") from None


def shape(value: Any, kind: type[V], what: str, where: str) -> V:
    """``value`` if it is a ``kind``; else :class:`SkipEvent` (logged with the method): a
    CRM answer of an unexpected shape skips that one item, it never stalls the consumer."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    log.warning("%s: unexpected answer at %s: %.200r", what, where, value)
    raise SkipEvent(f"{what}: unexpected answer at {where}: {value!r:.200}")


# -- the connector ----------------------------------------------------------------------


class CrmConnector:
    """The base of a connector: ``users`` maps agent names to the CRM's user ids,
    ``links`` is the connector's id-map table (:attr:`links`), ``lookup_ttl`` how long
    :attr:`lookups` keeps an answer. A subclass sets ``name``, implements :meth:`check_users`
    and the ``on_*`` methods it needs, and is added from the plugin's ``configure`` hook
    with :meth:`attach`. Each ``on_*`` returns when the CRM has the event, raises
    :class:`CrmError` (or anything) to have it again after a backoff, or
    :class:`switchboard.SkipEvent` to set it aside."""

    name: str = "crm"

    def __init__(
        self,
        core: Switchboard,
        push: CrmPush,
        users: Mapping[str, object],
        *,
        links: sa.Table,
        lookup_ttl: float = 60.0,
    ) -> None:
        self.core = core
        self.push = push
        self.users = {name: str(user) for name, user in users.items()}  # agent: CRM user
        self.user_of_agent: dict[int, str] = {}  # agent id: the CRM's user id
        self.checked = False
        #: The connector's id map, on ``links`` (its table from :func:`links_table`).
        self.links = Links(core, links)
        #: Lookups of the CRM's people by address (``find_person``'s cache).
        self.lookups: TtlCache[str, dict[str, Any]] = TtlCache(lookup_ttl)

    def require_users(
        self, crm: str, known: Iterable[object], also: Mapping[str, object] | None = None
    ) -> None:
        """For :meth:`check_users`: :class:`CrmError` naming each mapped agent (and each of
        ``also``, e.g. a default user) whose CRM user is not among ``known``."""
        have = {str(k) for k in known}
        wanted = {**self.users, **{k: str(v) for k, v in (also or {}).items()}}
        missing = [f"{name} (user {user})" for name, user in wanted.items() if user not in have]
        if missing:
            raise CrmError(f"{crm} has no such user for agent(s): {', '.join(missing)}")

    def agent_of_user(self, user: str | None) -> int | None:
        """Our agent mapped to a CRM user (None: none is)."""
        return next((a for a, u in self.user_of_agent.items() if u == user), None)

    async def recording_bytes(self, call_id: str, limit: int) -> bytes | None:
        """The call's recording (the WAV the store names) when it is on disk and at most
        ``limit`` bytes; None otherwise (give :meth:`recording_link` instead)."""
        recording = (await self.core.call(call_id)).recording
        if recording is None:
            return None
        path = Path(recording.path)
        size = await asyncio.to_thread(lambda: path.stat().st_size if path.is_file() else -1)
        if not 0 <= size <= limit:
            return None
        return await asyncio.to_thread(path.read_bytes)

    def recording_link(self, call_id: str, days: float) -> str | None:
        """A signed link to the call's recording that works ``days`` days, or None (and a
        warning) when the runner has no ``[switchboard.http] public_url`` and
        ``link_secret``."""
        try:
            return self.core.recording_link(call_id, days * 86_400)
        except Unavailable as exc:
            log.warning("%s: call %s goes without its recording: %s", self.name, call_id, exc)
            return None

    def attach(self) -> None:
        """Add the connector's durable consumer (loop ``consumer:NAME``)."""
        agents = {a.name: a.id for a in self.core.store.list_agents()}
        self.user_of_agent = {
            agent_id: user
            for name, user in self.users.items()
            if (agent_id := agents.get(name)) is not None
        }
        self.core.consumers.add(
            self.name,
            self.handle,
            types=self.push.event_types(),
            backoff_max=60.0,
            save_every=SAVE_EVERY,  # every push is idempotent through the id map
        )

    async def check_users(self) -> None:
        """Raise :class:`CrmError` naming each mapped CRM user the CRM does not know."""

    async def find_person(self, address: str) -> tuple[str | None, str | None] | None:
        """The CRM's person with this address (``phone:+7...``, ``email:...``): their name
        and the CRM user responsible for them; None when the CRM has none. Keep it short
        (a :class:`TtlCache`): ``resolve_contact`` asks it while a call rings."""
        return None

    async def resolve(self, address: Address) -> Contact | None:
        """``resolve_contact``'s answer from :meth:`find_person`: the CRM's name, and as
        owner the agent mapped to the CRM's responsible user. A CRM that fails is not an
        answer: the store decides, and the consumer links the contact later."""
        try:
            found = await self.find_person(str(address))
        except (CrmError, SkipEvent) as exc:
            log.info("%s: looking up %s failed: %s", self.name, address, exc)
            return None
        if found is None:
            return None
        name, user = found
        owner = self.agent_of_user(user)
        return Contact(
            id=None,
            name=(name or address.value)[:200],
            addresses=(address,),
            owner_agent_id=owner,
        )

    async def handle(self, event: Event) -> None:
        if not self.checked:
            await self.check_users()  # raises: the events wait, health says why
            self.checked = True
        data = event.data
        kind = event.type
        if kind.startswith("call."):
            call = data.get("call")
            if not isinstance(call, dict):
                raise SkipEvent(f"{kind} without a call")
            if kind == EventType.CALL_RINGING:
                contact = data.get("contact") or {}
                await self.fill_in(customer_address(call), contact)
                if self.push.calls:
                    await self.on_call_ringing(call, contact)
            elif kind == EventType.CALL_ANSWERED and self.push.calls:
                await self.on_call_answered(call)
            elif kind == EventType.CALL_ENDED:
                await self.on_call_ended(call)
            elif kind == EventType.CALL_RECORDED and self.push.recordings:
                await self.on_call_recorded(call)
        elif kind in (EventType.MESSAGE_RECEIVED, EventType.MESSAGE_SENT):
            interaction = data.get("interaction")
            contact = data.get("contact")
            if not isinstance(interaction, dict) or not isinstance(contact, dict):
                raise SkipEvent(f"{kind} without an interaction and contact")
            if interaction.get("direction") == "inbound":
                await self.fill_in(str(interaction.get("address") or ""), contact)
            wanted = self.push.emails if interaction.get("kind") == "email" else self.push.messages
            if wanted:
                await self.on_message(interaction, contact)

    async def fill_in(self, address: str, contact: Mapping[str, Any]) -> None:
        """A contact the store created under its address (the CRM did not answer within
        ``resolve_timeout``, or the call came first) takes the CRM's name now: never over
        a name an agent gave (``name_contact``)."""
        kind, _, value = address.partition(":")
        if kind not in ("phone", "email") or contact.get("name") != value:
            return
        try:
            found = await self.find_person(address)
        except (CrmError, SkipEvent):
            return  # the push of this event meets the same error and says so
        if found is not None and found[0]:
            await self.core.name_contact(address, found[0])

    def crm_user(self, agent_id: int | None) -> str | None:
        """The CRM user of one of our agents (None: not mapped)."""
        return None if agent_id is None else self.user_of_agent.get(agent_id)

    def call_user(self, call: Mapping[str, Any]) -> str | None:
        """The CRM user a call belongs to: who took it, else the first agent it rang for
        who has a CRM user."""
        user = self.crm_user(call.get("agent_id"))
        if user is not None:
            return user
        for agent_id in call.get("agents_notified") or ():
            user = self.crm_user(agent_id)
            if user is not None:
                return user
        return None

    async def on_call_ringing(self, call: dict[str, Any], contact: dict[str, Any]) -> None:
        """``call.ringing``: the call and the contact card."""

    async def on_call_answered(self, call: dict[str, Any]) -> None:
        """``call.answered``."""

    async def on_call_ended(self, call: dict[str, Any]) -> None:
        """``call.ended`` (with ``push.calls`` or ``push.recordings``: a recording saved
        before the end is in ``call["recording"]``)."""

    async def on_call_recorded(self, call: dict[str, Any]) -> None:
        """``call.recorded``: before or after ``call.ended``."""

    async def on_message(self, interaction: dict[str, Any], contact: dict[str, Any]) -> None:
        """``message.received`` / ``message.sent`` (an email when ``interaction["kind"]``
        is ``email``)."""

    async def close(self) -> None:
        """Release what the connector holds (its HTTP client)."""


class CrmPlugin:
    """The hooks every connector plugin has: its settings, its tables, the connector made
    in ``configure`` (and its consumer added), ``resolve_contact`` answered from the CRM,
    the connector closed at ``shutdown``. A plugin subclasses it, sets the class
    attributes, and registers one instance from its entry point."""

    plugin_name = "crm"
    settings_class: type[Any]
    package: str  # the plugin's package: its Alembic revisions are in ``migrations/``
    metadata: sa.MetaData  # its tables

    def __init__(self) -> None:
        #: The connector, once the runner configured the plugin (None before).
        self.connector: CrmConnector | None = None

    def make_connector(self, core: Switchboard, settings: Any) -> CrmConnector:
        raise NotImplementedError

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(self.settings_class)

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(files(self.package) / "migrations", self.metadata)

    @hookimpl
    def configure(self, switchboard: Switchboard) -> None:
        settings = switchboard.config.plugin_settings(self.plugin_name)
        if isinstance(settings, self.settings_class):
            self.connector = self.make_connector(switchboard, settings)
            self.connector.attach()

    @hookimpl
    async def resolve_contact(self, address: Address) -> Contact | None:
        if self.connector is None or address.kind not in ("phone", "email"):
            return None
        return await self.connector.resolve(address)

    @hookimpl
    async def shutdown(self) -> None:
        if self.connector is not None:
            await self.connector.close()
