"""The store: one SQLAlchemy engine over SQLite (default, WAL) or PostgreSQL.

The hot paths (ingest, lookup, outbox) use SQLAlchemy Core statements on the SQLModel
tables; the ORM is not needed to read or write a row. Every write transaction goes through
:meth:`Store.write`, which on SQLite takes the write lock up front (``BEGIN IMMEDIATE``) so
that two writers wait for each other instead of failing on a lock upgrade.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from switchboard.address import Address
from switchboard.errors import Conflict, NotFound, SwitchboardError
from switchboard.models import (
    Agent,
    CallRecord,
    Contact,
    Direction,
    Disposition,
    EventType,
    Interaction,
    InteractionKind,
    InteractionStatus,
    IvrStep,
    Recording,
    Ring,
    Role,
    Supervision,
    SupervisionMode,
    utcnow,
)
from switchboard.schema import (
    CORE_VERSION_TABLE,
    PluginSchema,
    SchemaError,
    alembic_config,
    check_clashes,
    revision_in,
)
from switchboard.tables import (
    AddressRow,
    AgentRow,
    CallRecordRow,
    ContactRow,
    InteractionRow,
    OutboxRow,
)

log = logging.getLogger(__name__)

agent_t: sa.Table = AgentRow.__table__  # type: ignore[attr-defined]
contact_t: sa.Table = ContactRow.__table__  # type: ignore[attr-defined]
address_t: sa.Table = AddressRow.__table__  # type: ignore[attr-defined]
interaction_t: sa.Table = InteractionRow.__table__  # type: ignore[attr-defined]
call_t: sa.Table = CallRecordRow.__table__  # type: ignore[attr-defined]
outbox_t: sa.Table = OutboxRow.__table__  # type: ignore[attr-defined]

# Hot lookups, built once (building a statement costs more than running it).
_FIND_CONTACT_ID = sa.select(address_t.c.contact_id).where(
    address_t.c.kind == sa.bindparam("kind"), address_t.c.value == sa.bindparam("value")
)
_probe = address_t.alias("probe")
_FIND_CONTACT_CARD = (
    sa.select(contact_t, address_t.c.kind, address_t.c.value)
    .join(_probe, _probe.c.contact_id == contact_t.c.id)
    .join(address_t, address_t.c.contact_id == contact_t.c.id)
    .where(_probe.c.kind == sa.bindparam("kind"), _probe.c.value == sa.bindparam("value"))
    .order_by(address_t.c.id)
)

# Any 64-bit number: PostgreSQL's advisory lock that keeps two runners from migrating at once.
_MIGRATION_LOCK_ID = 0x5B0A_2D00_0001


def values_in(
    conn: Connection, col: sa.ColumnElement[Any], values: Iterable[Any]
) -> sa.ColumnElement[bool]:
    """``col IN values``; on PostgreSQL ``col = ANY(%s)`` with one array (see :func:`pairs_in`)."""
    values = list(values)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return col == sa.any_(sa.literal(values, ARRAY(col.type)))
    return col.in_(values)


def pairs_in(
    conn: Connection,
    a: sa.ColumnElement[Any],
    b: sa.ColumnElement[Any],
    pairs: Iterable[tuple[Any, Any]],
) -> sa.ColumnElement[bool]:
    """A WHERE clause for rows whose (a, b) is among ``pairs``, served by an (a, b) index.

    On PostgreSQL it is ``a = ANY(%s) AND b = ANY(%s)`` with two array parameters: the
    query text stays the same whatever the number of pairs, so drivers and the server
    reuse it (a long ``IN`` list is re-parsed every time). That can match a few extra
    rows (other combinations of the same values); callers keep only the pairs they asked for.
    """
    pairs = list(pairs)
    if conn.dialect.name == "postgresql":
        return sa.and_(
            values_in(conn, a, {p[0] for p in pairs}), values_in(conn, b, {p[1] for p in pairs})
        )
    return sa.tuple_(a, b).in_(pairs)


def insert_many(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert ``rows``; return their new ids in order.

    On PostgreSQL the ids come first from the table's sequence (one short query), then the
    rows go in as one ``executemany`` of a constant statement, which psycopg pipelines;
    ``INSERT ... RETURNING`` of many rows is a long statement parsed anew for each batch.
    """
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        ids = list(
            conn.execute(
                sa.text(
                    "SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"
                ),
                {"t": table.name, "n": len(rows)},
            ).scalars()
        )
        conn.execute(sa.insert(table), [{**r, "id": i} for r, i in zip(rows, ids, strict=True)])
        return ids
    return list(
        conn.execute(
            sa.insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
        ).scalars()
    )


#: Kept for plugins written against it: every domain error (see :mod:`switchboard.errors`).
StoreError = SwitchboardError


class AddressTaken(Conflict):
    """The address already belongs to another contact."""

    def __init__(self, address: Address, owner: int) -> None:
        self.address = address
        self.owner = owner
        super().__init__(f"address {address} already belongs to contact {owner}")


def normalize_url(url: str) -> str:
    """Pick the drivers Switchboard ships with: sqlite3 and psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_store_engine(url: str, *, pool_size: int = 5) -> Engine:
    url = normalize_url(url)
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip on every checkout. A connection that died (server
    # restart) fails its statement, the pool drops it and the caller's retry gets a new one.
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size)


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL: a killed process loses nothing committed; only a power cut
        # may lose the last transactions (docs/config.md says so).
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("switchboard_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Store:
    """Contacts, addresses, agents, interactions, call records and the outbox."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = normalize_url(url)
        self.engine = create_store_engine(self.url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        # Single-statement reads need no transaction: on PostgreSQL, skip BEGIN/ROLLBACK.
        self._reader = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql"
            else self.engine
        )

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- schema ---------------------------------------------------------------------------

    def upgrade(self, revision: str = "head", plugins: Sequence[PluginSchema] = ()) -> None:
        """Bring the core's schema up to ``revision``, then each plugin's to its head (see
        :mod:`switchboard.schema`). Raises :class:`SchemaError` naming the first plugin
        whose tables clash or whose migration fails; that plugin's transaction is rolled
        back, what came before it stays applied. Plugins build on the core's newest tables,
        so ``plugins`` go with ``revision="head"`` only."""
        if plugins and revision != "head":
            raise ValueError("plugins' migrations need the core at its head revision")
        check_clashes(plugins)
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
                conn.commit()
            try:
                command.upgrade(alembic_config(conn), revision)
                conn.commit()
                for schema in plugins:
                    try:
                        command.upgrade(alembic_config(conn, schema), "head")
                        conn.commit()
                    except Exception as exc:
                        conn.rollback()
                        raise SchemaError(
                            schema.plugin, f"migration failed: {type(exc).__name__}: {exc}"
                        ) from exc
            finally:
                if self.dialect == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                    )
                    conn.commit()

    @staticmethod
    def head_revision() -> str:
        """The newest migration this version of Switchboard ships."""
        head = ScriptDirectory.from_config(alembic_config(None)).get_current_head()
        assert head is not None
        return head

    def current_revision(self) -> str | None:
        """The core's revision in the database."""
        with self.engine.connect() as conn:
            return revision_in(conn, CORE_VERSION_TABLE)

    def plugin_revisions(self, plugins: Sequence[PluginSchema]) -> dict[str, str | None]:
        """Each plugin's revision in the database (None: its tables are not there yet)."""
        with self.engine.connect() as conn:
            return {p.plugin: revision_in(conn, p.version_table) for p in plugins}

    async def listen_connection(self) -> Any:
        """A new autocommit psycopg connection of its own to this PostgreSQL database
        (outside the pool): for LISTEN and for session-held advisory locks."""
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        return await psycopg.AsyncConnection.connect(
            url.render_as_string(hide_password=False), autocommit=True
        )

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed on exit, rolled back on error.

        On SQLite, writers of this process queue on a lock first: SQLite lets one writer
        in at a time anyway, and a writer refused by SQLite's own lock sleeps in growing
        steps (up to 100 ms) before it asks again, which under load costs more than the
        writes themselves. Other processes still meet at SQLite's lock (busy_timeout)."""
        with self._write_lock, self.engine.connect() as conn:
            conn = conn.execution_options(switchboard_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def glance(self) -> Iterator[Connection]:
        """A connection for reads that need no snapshot of their own (one statement, or
        statements that need not agree): on PostgreSQL it skips BEGIN and COMMIT."""
        with self._reader.connect() as conn:
            yield conn

    # -- contacts -------------------------------------------------------------------------

    def find_contact_id(self, address: Address, conn: Connection | None = None) -> int | None:
        """The id of the contact owning ``address``: one probe of the unique index."""
        params = {"kind": address.kind, "value": address.value}
        if conn is not None:
            return conn.execute(_FIND_CONTACT_ID, params).scalar()
        with self._reader.connect() as c:
            return c.execute(_FIND_CONTACT_ID, params).scalar()

    def find_contact(self, address: Address) -> Contact | None:
        """The contact card behind ``address``, with all its addresses: one query."""
        with self._reader.connect() as conn:
            rows = conn.execute(
                _FIND_CONTACT_CARD, {"kind": address.kind, "value": address.value}
            ).all()
        if not rows:
            return None
        r = rows[0]
        return Contact(
            id=r.id,
            name=r.name,
            company=r.company,
            addresses=tuple(Address(x.kind, x.value) for x in rows),
            owner_agent_id=r.owner_agent_id,
            created_at=r.created_at,
        )

    def get_contact(self, contact_id: int) -> Contact | None:
        with self.read() as conn:
            return self._contact(conn, contact_id)

    def _contact(self, conn: Connection, contact_id: int) -> Contact | None:
        return load_contacts(conn, [contact_id]).get(contact_id)

    def create_contact(
        self,
        name: str,
        addresses: Iterable[Address] = (),
        *,
        company: str | None = None,
        owner_agent_id: int | None = None,
        conn: Connection | None = None,
    ) -> Contact:
        """Insert a contact with its addresses; an address owned by another contact fails."""
        if conn is None:
            with self.write() as c:
                return self.create_contact(
                    name, addresses, company=company, owner_agent_id=owner_agent_id, conn=c
                )
        contact_id = conn.execute(
            sa.insert(contact_t)
            .values(name=name, company=company, owner_agent_id=owner_agent_id, created_at=utcnow())
            .returning(contact_t.c.id)
        ).scalar_one()
        addrs = tuple(dict.fromkeys(addresses))
        if addrs:
            conn.execute(
                sa.insert(address_t),
                [{"contact_id": contact_id, "kind": a.kind, "value": a.value} for a in addrs],
            )
        contact = self._contact(conn, contact_id)
        assert contact is not None
        return contact

    def search_contacts(
        self, q: str | None, address: Address | None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Contact], int]:
        """Contacts by address (exact) or by name/company (case-insensitive substring)."""
        where: list[sa.ColumnElement[bool]] = []
        if address is not None:
            where.append(
                contact_t.c.id.in_(
                    sa.select(address_t.c.contact_id).where(
                        address_t.c.kind == address.kind, address_t.c.value == address.value
                    )
                )
            )
        elif q:
            pattern = f"%{q.lower()}%"
            where.append(
                sa.or_(
                    sa.func.lower(contact_t.c.name).like(pattern),
                    sa.func.lower(contact_t.c.company).like(pattern),
                )
            )
        with self.read() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(contact_t).where(*where)
            ).scalar_one()
            ids = (
                conn.execute(
                    sa.select(contact_t.c.id)
                    .where(*where)
                    .order_by(contact_t.c.name, contact_t.c.id)
                    .limit(limit)
                    .offset(offset)
                )
                .scalars()
                .all()
            )
            found = load_contacts(conn, ids)
        return [found[i] for i in ids], int(total)

    def update_contact(
        self,
        contact_id: int,
        *,
        values: Mapping[str, Any],
        add: Iterable[Address] = (),
        remove: Iterable[Address] = (),
    ) -> Contact:
        """Change name/company/owner (``values``), add and remove addresses, in one go."""
        with self.write() as conn:
            if (
                conn.execute(sa.select(contact_t.c.id).where(contact_t.c.id == contact_id)).scalar()
                is None
            ):
                raise NotFound(f"no contact with id {contact_id}")
            if values:
                conn.execute(
                    sa.update(contact_t).where(contact_t.c.id == contact_id).values(dict(values))
                )
            for a in remove:
                conn.execute(
                    sa.delete(address_t).where(
                        address_t.c.contact_id == contact_id,
                        address_t.c.kind == a.kind,
                        address_t.c.value == a.value,
                    )
                )
            for a in dict.fromkeys(add):
                owner = self.find_contact_id(a, conn)
                if owner is not None and owner != contact_id:
                    raise AddressTaken(a, owner)
                if owner is None:
                    conn.execute(
                        sa.insert(address_t).values(
                            contact_id=contact_id, kind=a.kind, value=a.value
                        )
                    )
            return load_contacts(conn, [contact_id])[contact_id]

    def list_calls(
        self,
        *,
        contact_id: int | None = None,
        agent_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[CallRecord]:
        stmt = (
            sa.select(call_t, interaction_t.c.contact_id, interaction_t.c.status)
            .join(interaction_t, interaction_t.c.id == call_t.c.interaction_id)
            .order_by(call_t.c.ringing_at.desc(), call_t.c.id.desc())
            .limit(limit)
        )
        if contact_id is not None:
            stmt = stmt.where(interaction_t.c.contact_id == contact_id)
        if agent_id is not None:
            stmt = stmt.where(call_t.c.agent_id == agent_id)
        if since is not None:
            stmt = stmt.where(call_t.c.ringing_at >= since)
        if until is not None:
            stmt = stmt.where(call_t.c.ringing_at < until)
        with self.read() as conn:
            return [call_from_row(r) for r in conn.execute(stmt)]

    def list_tasks(
        self, *, status: str = "open", agent_id: int | None = None, limit: int = 100
    ) -> list[Interaction]:
        """Callback tasks (interactions of kind ``task``), the oldest first."""
        stmt = (
            sa.select(interaction_t)
            .where(interaction_t.c.kind == InteractionKind.TASK.value)
            .order_by(interaction_t.c.created_at, interaction_t.c.id)
        )
        if status != "all":
            stmt = stmt.where(interaction_t.c.status == status)
        if agent_id is None:
            stmt = stmt.limit(limit)
        with self.read() as conn:
            rows = conn.execute(stmt)
            if agent_id is None:
                return [interaction_from_row(r) for r in rows]
            # the assignee is in meta (portable across backends): filter, then limit
            tasks = []
            for row in rows:
                task = interaction_from_row(row)
                if (task.meta or {}).get("agent_id") == agent_id:
                    tasks.append(task)
                    if len(tasks) == limit:
                        break
            return tasks

    def finish_task(self, task_id: int) -> Interaction | None:
        """Mark a task done (with a ``task.done`` event); None if there is no such task."""
        from switchboard.events import record as record_events
        from switchboard.events import to_json

        with self.write() as conn:
            row = conn.execute(
                sa.select(interaction_t).where(
                    interaction_t.c.id == task_id,
                    interaction_t.c.kind == InteractionKind.TASK.value,
                )
            ).first()
            if row is None:
                return None
            if row.status != InteractionStatus.DONE.value:
                conn.execute(
                    sa.update(interaction_t)
                    .where(interaction_t.c.id == task_id)
                    .values(status=InteractionStatus.DONE.value, updated_at=utcnow())
                )
                row = conn.execute(
                    sa.select(interaction_t).where(interaction_t.c.id == task_id)
                ).one()
                task = interaction_from_row(row)
                agent = (task.meta or {}).get("agent_id")
                record_events(
                    conn,
                    [
                        (
                            EventType.TASK_DONE,
                            {"task": to_json(task)},
                            None if agent is None else {agent},
                        )
                    ],
                )
            return interaction_from_row(row)

    def calls_of(self, interaction_ids: Iterable[int]) -> dict[int, CallRecord]:
        """Call records by interaction id (for a timeline page)."""
        ids = list(interaction_ids)
        if not ids:
            return {}
        with self.read() as conn:
            rows = conn.execute(
                sa.select(call_t, interaction_t.c.contact_id, interaction_t.c.status)
                .join(interaction_t, interaction_t.c.id == call_t.c.interaction_id)
                .where(values_in(conn, call_t.c.interaction_id, ids))
            )
            return {r.interaction_id: call_from_row(r) for r in rows}

    @staticmethod
    def merge_contacts(conn: Connection, into: int, source: int) -> None:
        """Move ``source``'s timeline and addresses to ``into`` and delete ``source``."""
        conn.execute(
            sa.update(interaction_t)
            .where(interaction_t.c.contact_id == source)
            .values(contact_id=into)
        )
        conn.execute(
            sa.update(address_t).where(address_t.c.contact_id == source).values(contact_id=into)
        )
        conn.execute(sa.delete(contact_t).where(contact_t.c.id == source))

    @staticmethod
    def add_address_in(conn: Connection, contact_id: int, address: Address) -> None:
        conn.execute(
            sa.insert(address_t).values(
                contact_id=contact_id, kind=address.kind, value=address.value
            )
        )

    # -- agents ---------------------------------------------------------------------------

    def sync_agents(self, agents: Sequence[Agent]) -> list[Agent]:
        """Make the agent table hold the configured agents (matched by name); keep others."""
        with self.write() as conn:
            existing = {r.name: r.id for r in conn.execute(sa.select(agent_t.c.name, agent_t.c.id))}
            for a in agents:
                values = {
                    "extension": a.extension,
                    "email": a.email,
                    "role": str(a.role),
                    "ring": str(a.ring),
                }
                if a.name in existing:
                    conn.execute(
                        sa.update(agent_t).where(agent_t.c.id == existing[a.name]).values(values)
                    )
                else:
                    conn.execute(sa.insert(agent_t).values(name=a.name, **values))
        return self.list_agents()

    def list_agents(self) -> list[Agent]:
        with self.read() as conn:
            rows = conn.execute(sa.select(agent_t).order_by(agent_t.c.id)).all()
        return [_agent(r) for r in rows]

    def get_agent(self, key: int | str) -> Agent | None:
        """An agent by id, name or SIP extension."""
        col = agent_t.c.id if isinstance(key, int) else agent_t.c.name
        with self.read() as conn:
            row = conn.execute(sa.select(agent_t).where(col == key)).first()
            if row is None and isinstance(key, str):
                row = conn.execute(sa.select(agent_t).where(agent_t.c.extension == key)).first()
        return None if row is None else _agent(row)

    # -- interactions and calls -----------------------------------------------------------

    def get_interaction(self, interaction_id: int) -> Interaction | None:
        with self.read() as conn:
            row = conn.execute(
                sa.select(interaction_t).where(interaction_t.c.id == interaction_id)
            ).first()
        return None if row is None else interaction_from_row(row)

    def find_interaction(self, channel: str, external_id: str) -> Interaction | None:
        with self.read() as conn:
            row = conn.execute(
                sa.select(interaction_t).where(
                    interaction_t.c.channel == channel, interaction_t.c.external_id == external_id
                )
            ).first()
        return None if row is None else interaction_from_row(row)

    def timeline(
        self, contact_id: int, *, limit: int = 50, before_id: int | None = None
    ) -> list[Interaction]:
        """A contact's interactions, newest first; page with ``before_id``."""
        stmt = (
            sa.select(interaction_t)
            .where(interaction_t.c.contact_id == contact_id)
            .order_by(interaction_t.c.created_at.desc(), interaction_t.c.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            stmt = stmt.where(interaction_t.c.id < before_id)
        with self.read() as conn:
            return [interaction_from_row(r) for r in conn.execute(stmt)]

    def get_call(self, call_id: str, channel: str | None = None) -> CallRecord | None:
        """A call by its id (and channel, since call ids are unique per channel)."""
        with self.read() as conn:
            return load_call(conn, call_id, channel)

    def count(self, table: sa.Table) -> int:
        with self.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _agent(row: Any) -> Agent:
    return Agent(
        id=row.id,
        name=row.name,
        extension=row.extension,
        email=row.email,
        role=Role(row.role),
        ring=Ring(row.ring),
    )


def interaction_from_row(row: Any) -> Interaction:
    """An :class:`Interaction` from a result row or a mapping of the same columns."""
    m = row if isinstance(row, Mapping) else row._mapping
    address = None
    if m["address"]:
        kind, _, value = m["address"].partition(":")
        address = Address(kind, value)
    return Interaction(
        id=m["id"],
        contact_id=m["contact_id"],
        channel=m["channel"],
        direction=Direction(m["direction"]),
        kind=InteractionKind(m["kind"]),
        status=InteractionStatus(m["status"]),
        external_id=m["external_id"],
        address=address,
        text=m["text"],
        subject=m["subject"],
        error=m.get("error"),
        meta=dict(m["meta"] or {}),
        created_at=m["created_at"],
    )


def call_from_row(row: Any) -> CallRecord:
    recording = None
    if row.recording_path:
        recording = Recording(
            path=row.recording_path,
            duration=float(row.recording_duration or 0.0),
            sha256=row.recording_sha256 or "",
        )
    return CallRecord(
        id=row.id,
        interaction_id=row.interaction_id,
        contact_id=row.contact_id,
        call_id=row.call_id,
        channel=row.channel,
        direction=Direction(row.direction),
        from_address=row.from_address,
        to_address=row.to_address,
        status=InteractionStatus(row.status),
        agent_id=row.agent_id,
        ringing_at=row.ringing_at,
        answered_at=row.answered_at,
        ended_at=row.ended_at,
        disposition=Disposition(row.disposition) if row.disposition else None,
        ivr_path=tuple(
            IvrStep(node=s["node"], digits=s.get("digits", ""), at=datetime.fromisoformat(s["at"]))
            for s in (row.ivr_path or [])
        ),
        recording=recording,
        hangup_cause=row.hangup_cause,
        agents_notified=tuple(row.agents_notified or ()),
        supervision=tuple(
            Supervision(
                agent_id=s["agent_id"],
                mode=SupervisionMode(s["mode"]),
                at=datetime.fromisoformat(s["at"]),
            )
            for s in (row.supervision or [])
        ),
    )


def load_contacts(conn: Connection, ids: Iterable[int]) -> dict[int, Contact]:
    """Contacts with their addresses, two queries whatever the number of ids."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    addresses: dict[int, list[Address]] = {i: [] for i in wanted}
    for r in conn.execute(
        sa.select(address_t.c.contact_id, address_t.c.kind, address_t.c.value)
        .where(values_in(conn, address_t.c.contact_id, wanted))
        .order_by(address_t.c.id)
    ):
        addresses[r.contact_id].append(Address(r.kind, r.value))
    return {
        r.id: Contact(
            id=r.id,
            name=r.name,
            company=r.company,
            addresses=tuple(addresses[r.id]),
            owner_agent_id=r.owner_agent_id,
            created_at=r.created_at,
        )
        for r in conn.execute(sa.select(contact_t).where(values_in(conn, contact_t.c.id, wanted)))
    }


def load_call(conn: Connection, call_id: str, channel: str | None) -> CallRecord | None:
    stmt = (
        sa.select(call_t, interaction_t.c.contact_id, interaction_t.c.status)
        .join(interaction_t, interaction_t.c.id == call_t.c.interaction_id)
        .where(call_t.c.call_id == call_id)
    )
    if channel is not None:
        stmt = stmt.where(call_t.c.channel == channel)
    row = conn.execute(stmt).first()
    return None if row is None else call_from_row(row)
