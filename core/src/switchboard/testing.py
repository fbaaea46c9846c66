"""Helpers for testing Switchboard and its plugins; also a pytest plugin (``pytest11``).

Fixtures (available in any pytest run where ``switchboard`` is installed):

- ``switchboard_store``: a :class:`~switchboard.store.Store` on a fresh SQLite file.
- ``make_switchboard``: ``await make_switchboard(plugin_a, plugin_b, config={...})`` opens
  a :class:`~switchboard.Switchboard` on a fresh SQLite file with just those plugin
  objects registered (no entry points), and closes it after the test.

Outside pytest: :func:`registered` registers a plugin object for the length of a ``with``
block and always unregisters it; :class:`LoopbackChannel` is a small working channel that
keeps what it sends in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the async fixture needs pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

from switchboard.address import Address
from switchboard.channels import (
    ChannelContext,
    InboundMessage,
    InvalidInbound,
    OutboundMessage,
    Receipt,
    Received,
)
from switchboard.config import Config, config_from_dict
from switchboard.core import Switchboard, settings_classes
from switchboard.models import Agent, Direction, InteractionKind, SupervisionMode
from switchboard.plugins import Plugins, hookimpl
from switchboard.store import Store, interaction_t

T = TypeVar("T")

__all__ = [
    "LoopbackChannel",
    "LoopbackPlugin",
    "LoopbackVoiceChannel",
    "RunningService",
    "free_port",
    "make_config",
    "missing_tool",
    "open_switchboard",
    "pg_database",
    "registered",
    "serve_in_thread",
    "temp_store",
    "write_distribution",
]


@contextmanager
def registered(plugins: Plugins, plugin: object, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` for the ``with`` block; it is unregistered even on error."""
    name = name or f"test-plugin-{id(plugin):x}"
    if not plugins.register(plugin, name):
        raise ValueError("; ".join(str(e) for e in plugins.errors if e.plugin == name))
    try:
        yield name
    finally:
        plugins.unregister(name)


def write_distribution(
    folder: str | Path,
    dist: str,
    modules: Mapping[str, str],
    *,
    version: str = "1.0.0",
    entry_points: Mapping[str, str] | None = None,
    docs: str | None = None,
) -> Path:
    """Write an installed-looking distribution into ``folder`` (put it on ``sys.path``).

    ``modules`` maps module names to their source; ``entry_points`` maps plugin names to
    modules (default: one entry point per module, named like it); ``docs`` is its
    ``Project-URL: Documentation``. ``importlib.metadata``
    finds it like any installed package, so plugin loading can be tested for real.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    eps = entry_points if entry_points is not None else {m: m for m in modules}
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    if docs:
        metadata += f"Project-URL: Documentation, {docs}\n"
    (info / "METADATA").write_text(metadata, encoding="utf-8")
    lines = ["[switchboard]", *(f"{name} = {module}" for name, module in eps.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def temp_store(folder: str | Path) -> Store:
    """A migrated store on a new SQLite file in ``folder``."""
    store = Store(f"sqlite:///{Path(folder) / 'switchboard-test.db'}")
    store.upgrade()
    return store


def make_config(
    folder: str | Path,
    data: Mapping[str, Any] | None = None,
    plugin_settings: Mapping[str, Any] | None = None,
) -> Config:
    """A checked config from a dict shaped like the TOML file, with the store in ``folder``."""
    raw = {k: dict(v) for k, v in (data or {}).items()}
    core = raw.setdefault("switchboard", {})
    core.setdefault("database_url", f"sqlite:///{Path(folder) / 'switchboard-test.db'}")
    core.setdefault("recordings_dir", str(Path(folder) / "recordings"))
    return config_from_dict(
        raw, plugin_settings or {}, source="<test config>", base_dir=Path(folder)
    )


async def open_switchboard(
    folder: str | Path,
    *plugin_objects: object,
    config: Mapping[str, Any] | None = None,
    start: bool = True,
) -> Switchboard:
    """A Switchboard on a fresh SQLite file in ``folder`` with only these plugins."""
    plugins = Plugins()
    for i, obj in enumerate(plugin_objects):
        name = getattr(obj, "plugin_name", None) or f"test{i}"
        if not plugins.register(obj, name):
            raise ValueError("; ".join(str(e) for e in plugins.errors))
    cfg = make_config(folder, config, await settings_classes(plugins))
    sb = await Switchboard.open(cfg, plugins=plugins)
    if start:
        await sb.start_channels()
    return sb


class RunningService:
    """A runner serving on a loopback port in a thread (see :func:`serve_in_thread`)."""

    def __init__(self, app: Any, port: int, host: str = "127.0.0.1") -> None:
        self.app = app
        self.port = port
        self.url = f"http://{host}:{port}"
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def switchboard(self) -> Switchboard:
        sb: Switchboard = self.app.state.switchboard
        return sb

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the service's event loop (e.g. a channel's ``inject``)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_process(
    config: Path,
    channel: str,
    *,
    timeout: float = 60,
    host: str = "127.0.0.1",
    port: int | None = None,
    prefix: Sequence[str] = (),
    log: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """``switchboard serve`` in a process of its own with one channel (``--channels``), as
    an operator runs it: the process and its base URL, once ``/api/health`` says the
    channel runs. Stop it with SIGTERM. ``host``/``port``: where it listens (a free
    loopback port unless told); ``prefix``: a command it runs under (``ip netns exec
    NAME``); ``log``: a file for its output (whose end a failure to start shows)."""
    import httpx

    port = port or free_port()
    command = [*prefix, shutil.which("switchboard") or "switchboard", "--log-level", "WARNING"]
    command += ["serve", "--config", str(config), "--host", host, "--port", str(port)]
    command += ["--channels", channel]
    if log is None:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        with log.open("ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=out)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            health = httpx.get(f"{url}/api/health", timeout=1).json()
            if health["channels"][channel]["state"] == "running":
                return proc, url
        except (httpx.TransportError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait(5)
            said = log.read_text(errors="replace")[-3000:] if log is not None else ""
            raise RuntimeError(f"the runner did not start the {channel} channel {said}")
        time.sleep(0.2)


def until(check: Callable[[], T], within: float = 10.0, what: str = "timed out") -> T:
    """Poll ``check()`` until it returns something truthy, and return it;
    ``AssertionError`` (saying ``what``) after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return value


def kept_read(service: RunningService, *tables: sa.Table, within: float = 10.0) -> None:
    """Wait until a channel has read every body it kept in ``tables`` (its
    :class:`~switchboard.KeptBodies` tables, emptied as they are read)."""
    count = [sa.select(sa.func.count()).select_from(t) for t in tables]

    def left() -> int:
        with service.switchboard.store.read() as conn:
            return sum(conn.execute(c).scalar_one() for c in count)

    until(lambda: left() == 0, within, "kept bodies not read")


def kill_during_burst(
    start: Callable[[], tuple[subprocess.Popen[bytes], str]],
    deliver: Callable[[str, int], str | None],
    database_url: str,
    *,
    items: int = 400,
    within: float = 30.0,
) -> list[str]:
    """The durability check of a channel the far side pushes to (webhooks): a runner from
    ``start()`` gets ``items`` deliveries from 16 threads, ``deliver(base_url, i)``
    answering the external id of item ``i`` when the runner acknowledged it (None when
    not: it raises ``httpx.TransportError`` once the runner is gone). The runner is
    SIGKILLed after a quarter were acknowledged, started again on the same database, and
    every acknowledged item must end up stored, once (``AssertionError`` otherwise).
    Returns the acknowledged ids."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    acknowledged: list[str] = []
    lock = threading.Lock()
    proc, url = start()

    def post(i: int) -> None:
        try:
            ident = deliver(url, i)
        except httpx.TransportError:
            return  # the runner died first: the far side would send it again
        if ident is not None:
            with lock:
                acknowledged.append(ident)

    def kill_midway() -> None:
        deadline = time.monotonic() + within
        while len(acknowledged) < items // 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_midway)
    killer.start()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(post, range(items)))
    killer.join()
    proc.wait(10)
    assert items // 4 <= len(acknowledged) < items  # killed in the middle of the burst

    def stored() -> list[str]:
        store = Store(database_url)
        try:
            with store.read() as conn:
                return list(conn.execute(sa.select(interaction_t.c.external_id)).scalars())
        finally:
            store.close()

    again, _ = start()
    try:
        deadline = time.monotonic() + within
        while not set(acknowledged) <= set(stored()):
            assert time.monotonic() < deadline, "acknowledged items were lost"
            time.sleep(0.1)
        ids = stored()
        assert len(ids) == len(set(ids))  # each stored once
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(20)
    return acknowledged


@contextmanager
def serve_in_thread(
    app: Any, *, timeout: float = 30, host: str = "127.0.0.1"
) -> Iterator[RunningService]:
    """Serve ``app`` (from :func:`switchboard.app.create_app`) with uvicorn on a free
    port of ``host`` (loopback unless told) until the ``with`` block ends; then shut it
    down as SIGTERM would."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
    )
    service = RunningService(app, port, host)
    errors: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        service.loop = loop
        try:
            loop.run_until_complete(server.serve())
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            try:
                leftovers = asyncio.all_tasks(loop)  # e.g. sse-starlette's shutdown watcher
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    loop.run_until_complete(asyncio.wait(leftovers, timeout=5))
            finally:
                loop.close()

    thread = threading.Thread(target=run, name=f"switchboard-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            raise RuntimeError(f"the service did not start: {errors or 'timeout'}")
        time.sleep(0.01)
    try:
        yield service
    finally:
        server.should_exit = True
        thread.join(timeout)
        if errors:
            raise errors[0]


class LoopbackChannel:
    """A working channel that delivers to memory: ``sent`` holds what it sent.

    ``fail_next`` is a list of exceptions that the next ``send`` calls raise, in order,
    before sending normally again; ``inject`` hands an inbound message to the core.
    """

    def __init__(self, name: str = "loopback", address_kind: str = "phone") -> None:
        self.name = name
        self.address_kind = address_kind
        self.sent: list[OutboundMessage] = []
        self.fail_next: list[BaseException] = []
        self.ctx: ChannelContext | None = None
        self.started = 0
        self.stopped = 0
        self.on_send: Callable[[OutboundMessage], Awaitable[None]] | None = None
        self._ids = itertools.count(1)

    async def start(self, ctx: ChannelContext) -> None:
        self.ctx = ctx
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.on_send is not None:
            await self.on_send(message)
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.sent.append(message)
        return Receipt(external_id=f"{self.name}-out-{next(self._ids)}")

    async def inject(self, message: InboundMessage) -> Received:
        if self.ctx is None:
            raise RuntimeError(f"channel {self.name} is not started")
        return await self.ctx.receive(message)

    async def accept(self, message: InboundMessage) -> Received | None:
        """What a well-behaved channel does with an item from its far side: store it, or
        quarantine it when it can never be stored (None then)."""
        try:
            return await self.inject(message)
        except InvalidInbound as exc:
            assert self.ctx is not None
            await self.ctx.quarantine(message.external_id, str(exc), repr(message))
            return None


class LoopbackVoiceChannel(LoopbackChannel):
    """A loopback channel that also "dials": each ``dial`` reports a ringing outbound call
    for the agent to the core and keeps ``(agent, address, call_id)`` in ``dialed``. It
    is a ``CallControl`` and a ``CallSupervision`` too: the calls in ``talking`` may be
    held, resumed, transferred and supervised (each action kept in ``actions``; a transfer
    reports the new agent, a supervision the supervisor and mode)."""

    def __init__(self, name: str = "voice") -> None:
        super().__init__(name, "phone")
        self.dialed: list[tuple[Agent, Address, str]] = []
        self.talking: set[str] = set()
        self.actions: list[tuple[str, str, Agent | Address | None]] = []

    def _talking(self, call_id: str) -> None:
        if call_id not in self.talking:
            raise LookupError(f"call {call_id} is not talking on {self.name}")

    async def hold(self, call_id: str) -> None:
        self._talking(call_id)
        self.actions.append(("hold", call_id, None))

    async def resume(self, call_id: str) -> None:
        self._talking(call_id)
        self.actions.append(("resume", call_id, None))

    async def consult(self, call_id: str, to: Agent | Address) -> None:
        self._talking(call_id)
        self.actions.append(("consult", call_id, to))

    async def transfer(self, call_id: str, to: Agent | Address) -> None:
        self._talking(call_id)
        if isinstance(to, Address) and to.kind != "phone":
            raise ValueError(f"{self.name} transfers to agents and phone numbers")
        assert self.ctx is not None
        self.actions.append(("transfer", call_id, to))
        await self.ctx.calls.transferred(self.name, call_id, to if isinstance(to, Agent) else None)

    async def supervise(self, call_id: str, supervisor: Agent, mode: SupervisionMode) -> None:
        self._talking(call_id)
        assert self.ctx is not None
        self.actions.append((f"supervise:{mode}", call_id, supervisor))
        await self.ctx.calls.supervised(self.name, call_id, supervisor, mode)

    async def dial(self, agent: Agent, address: Address) -> str:
        if self.ctx is None:
            raise RuntimeError(f"channel {self.name} is not started")
        call_id = f"{self.name}-call-{next(self._ids)}"
        self.dialed.append((agent, address, call_id))
        await self.ctx.calls.ringing(
            self.name,
            call_id,
            direction=Direction.OUTBOUND,
            from_address=agent.extension or agent.name,
            to_address=address,
            agents=[agent.id] if agent.id is not None else [],
        )
        return call_id


class LoopbackPlugin:
    """A plugin object that registers the given channels (any Channel objects, not only
    loopback ones) and, if given, a settings class for ``[plugins.<plugin_name>]``."""

    def __init__(
        self, *channels: Any, plugin_name: str = "loopback", settings: type[Any] | None = None
    ) -> None:
        self.channels = channels
        self.plugin_name = plugin_name
        self.settings = settings

    @property
    def channel(self) -> Any:
        return self.channels[0]

    @hookimpl
    def register_settings(self, register: Callable[[Any], None]) -> None:
        if self.settings is not None:
            register(self.settings)

    @hookimpl
    def register_channels(self, register: Callable[[Any], None]) -> None:
        for channel in self.channels:
            register(channel)


# -- pytest fixtures --------------------------------------------------------------------


@pytest.fixture
def switchboard_store(tmp_path: Path) -> Iterator[Store]:
    store = temp_store(tmp_path)
    try:
        yield store
    finally:
        store.close()


async def _opener(
    tmp_path: Path, database_url: str | None = None
) -> AsyncIterator[Callable[..., Awaitable[Switchboard]]]:
    """``await factory(*plugins, config=..., start=True)`` opens a Switchboard in a new
    folder (on ``database_url`` when given, else a SQLite file there); all are closed at
    the end."""
    opened: list[Switchboard] = []

    async def factory(
        *plugin_objects: object, config: Mapping[str, Any] | None = None, start: bool = True
    ) -> Switchboard:
        cfg = {k: dict(v) for k, v in (config or {}).items()}
        if database_url is not None:
            cfg.setdefault("switchboard", {}).setdefault("database_url", database_url)
        folder = tmp_path / f"sb{len(opened)}"
        folder.mkdir()
        sb = await open_switchboard(folder, *plugin_objects, config=cfg, start=start)
        opened.append(sb)
        return sb

    yield factory
    for sb in opened:
        await sb.close()


async def _make_switchboard(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Switchboard]]]:
    async for factory in _opener(tmp_path):
        yield factory


if pytest_asyncio is not None:
    make_switchboard = pytest_asyncio.fixture(_make_switchboard, name="make_switchboard")


@pytest.fixture
def switchboard_service(tmp_path: Path) -> Iterator[Callable[..., RunningService]]:
    """``service = switchboard_service(plugin_a, config={...})``: the runner (HTTP API, event
    stream, channels) on a free loopback port with just these plugin objects; stopped after
    the test. ``service.url`` is its address, ``service.call(coro)`` runs on its loop."""
    from contextlib import ExitStack

    from switchboard.app import create_app

    stack = ExitStack()
    started = itertools.count()

    def start(*plugin_objects: object, config: Mapping[str, Any] | None = None) -> RunningService:
        plugins = Plugins()
        for i, obj in enumerate(plugin_objects):
            name = getattr(obj, "plugin_name", None) or f"test{i}"
            if not plugins.register(obj, name):
                raise ValueError("; ".join(str(e) for e in plugins.errors))
        folder = tmp_path / f"service{next(started)}"
        folder.mkdir()
        classes = asyncio.run(settings_classes(plugins))
        app = create_app(make_config(folder, config, classes), plugins=plugins)
        return stack.enter_context(serve_in_thread(app))

    with stack:
        yield start


# -- store backends: SQLite and a throwaway PostgreSQL database ---------------------------

PG_ADMIN_DSN = os.environ.get(
    "SWITCHBOARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def missing_tool(message: str) -> None:
    """Skip the test because a tool it needs is missing; under ``CI=true`` fail instead
    (a CI machine must have every tool its tests use). ``message`` says how to get it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing tool is a failure, not a skip)")
    pytest.skip(message)


def _pg_unavailable(reason: str) -> None:
    missing_tool(
        f"PostgreSQL not reachable at {PG_ADMIN_DSN} ({reason}); "
        "install it with: apt-get install postgresql"
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    with pg_database() as url:
        yield url


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL) for the ``with`` block, dropped after;
    skips the test (fails it under ``CI=true``) when PostgreSQL is not reachable."""
    import psycopg

    name = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _pg_unavailable(str(exc).strip())
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL: a SQLite file, then (the second run of the test) a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


async def _open_sb(
    db_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Switchboard]]]:
    """``await open_sb(*plugins, config=...)``: a Switchboard on this test's backend
    (``db_url``: SQLite, then PostgreSQL)."""
    async for factory in _opener(tmp_path, db_url):
        yield factory


if pytest_asyncio is not None:
    open_sb = pytest_asyncio.fixture(_open_sb, name="open_sb")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server (db_url, pg_url)")


def mutated(seed: bytes, alphabet: bytes, *, edits: int = 8, longest: int = 40) -> Any:
    """A Hypothesis strategy for fuzzing a parser with input near a valid one: ``seed``
    with 1 to ``edits`` edits, each a byte of ``alphabet`` replacing one, a run of up to
    ``longest`` of them inserted, or a piece cut out. (Needs Hypothesis, a test
    dependency: imported when called.)"""
    from hypothesis import strategies as st

    @st.composite
    def build(draw: Any) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, edits))):
            at = draw(st.integers(0, len(data)))
            action = draw(st.sampled_from(["replace", "insert", "cut"]))
            byte = draw(st.sampled_from(list(alphabet)))
            if action == "insert":
                data[at:at] = bytes([byte]) * draw(st.integers(1, longest))
            elif action == "cut":
                del data[at : at + draw(st.integers(1, longest))]
            elif at < len(data):
                data[at] = byte
        return bytes(data)

    return build()


# -- CRM connectors: a runner with calls and messages to push -----------------------------

#: The agents a :class:`CrmRig` has; connectors' test settings map them to CRM users.
CRM_AGENTS = ({"name": "anna", "extension": "101"}, {"name": "boris", "extension": "102"})
#: ``[switchboard.http] link_secret`` of a :class:`CrmRig` (recording links are signed).
LINK_SECRET = "crm-rig-recording-link-secret"


class CrmRig:
    """A runner serving a CRM connector, with loopback channels that make its events:
    ``voice`` (calls), ``email`` and ``telegram`` (messages). Made by :func:`crm_rig`."""

    def __init__(self, service: RunningService, folder: Path) -> None:
        self.service = service
        self.folder = folder
        plugin = service.switchboard.plugin("loopback")
        self.voice: LoopbackVoiceChannel = plugin.channels[0]
        self.email: LoopbackChannel = plugin.channels[1]
        self.telegram: LoopbackChannel = plugin.channels[2]
        self._ids = itertools.count(1)

    @property
    def sb(self) -> Switchboard:
        return self.service.switchboard

    def agent(self, name: str) -> Agent:
        return self.service.call(self.sb.agent(name))

    def inbound_call(
        self,
        number: str,
        *,
        agent: str | None = "anna",
        ring_for: Sequence[str] = ("anna",),
        record: bool = True,
        call_id: str | None = None,
    ) -> str:
        """A whole inbound call from ``number``: ringing (for ``ring_for``), answered by
        ``agent`` (None: missed), recorded (a second of silence), ended. Its call id."""
        call_id = call_id or f"crm-call-{next(self._ids)}"
        ctx = self.voice.ctx
        assert ctx is not None
        ids = [self.agent(n).id for n in ring_for]
        self.service.call(
            ctx.calls.ringing(
                "voice",
                call_id,
                direction=Direction.INBOUND,
                from_address=number,
                to_address="+74950000000",
                agents=[i for i in ids if i is not None],
            )
        )
        if agent is not None:
            self.service.call(ctx.calls.answered("voice", call_id, self.agent(agent)))
            if record:
                self.service.call(ctx.calls.recording_saved("voice", call_id, self.wav(call_id)))
        self.service.call(ctx.calls.ended("voice", call_id))
        return call_id

    def wav(self, name: str, seconds: float = 1.0) -> Path:
        import wave

        path = self.folder / f"{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0\0\0" * int(8000 * seconds))
        return path

    def receive(
        self, channel: LoopbackChannel, sender: str, text: str, *, subject: str | None = None
    ) -> Received:
        """An inbound message (an email when ``channel`` is :attr:`email`)."""
        kind = InteractionKind.EMAIL if channel is self.email else InteractionKind.MESSAGE
        message = InboundMessage(
            external_id=f"in-{next(self._ids)}",
            sender=sender,
            text=text,
            subject=subject,
            kind=kind,
        )
        return self.service.call(channel.inject(message))

    def consumer(self, name: str) -> Any:
        """The connector's event consumer (``health()``: lag, attempts, last error)."""
        return self.sb.consumers.all[f"consumer:{name}"][1]


def crm_rig(
    start: Callable[..., RunningService],
    connector: object,
    settings: Mapping[str, Any],
    *,
    core: Mapping[str, Any] | None = None,
) -> CrmRig:
    """``start`` is the ``switchboard_service`` fixture; ``connector`` the plugin object
    (a new one per test) and ``settings`` its ``[plugins.NAME]``. Recording links are on
    (the runner's address is not known before it starts, so ``public_url`` is
    ``http://switchboard.test``: a test fetches a link's path from ``service.url``)."""
    channels = LoopbackPlugin(
        LoopbackVoiceChannel("voice"),
        LoopbackChannel("email", "email"),
        LoopbackChannel("telegram", "telegram"),
    )
    name = getattr(connector, "plugin_name", "crm")
    config = {
        "switchboard": {
            "agents": [dict(a) for a in CRM_AGENTS],
            "http": {"public_url": "http://switchboard.test", "link_secret": LINK_SECRET},
            **dict(core or {}),
        },
        "plugins": {name: dict(settings)},
    }
    service = start(channels, connector, config=config)
    folder = Path(service.switchboard.config.core.recordings_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return CrmRig(service, folder)
