"""The speech service: queues a job for each recording, runs the workers, stores what
they find, scores it, and answers the console and ``GET /api/calls?q=``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard import (
    CallHit,
    CallMatch,
    CallRecord,
    Event,
    Invalid,
    NotFound,
    Switchboard,
    UTCDateTime,
)
from switchboard.views import call_record
from switchboard_speech import jobs
from switchboard_speech.scoring import score
from switchboard_speech.settings import CONFIG_NAME as _CONFIG
from switchboard_speech.settings import SpeechSettings
from switchboard_speech.tables import job_t, result_t, segment_t
from switchboard_speech.work import analyse

log = logging.getLogger("switchboard.speech")

#: How often idle workers look for due jobs (a new recording wakes them at once).
POLL_S = 2.0
#: How often transcripts past retention, or whose recording is gone, are deleted.
PRUNE_S = 3600.0
#: Matches shown per call found.
MATCHES = 3


class Speech:
    """``sb.plugin("speech").speech``: the plugin's service (docs/speech.md)."""

    def __init__(self, sb: Switchboard, settings: SpeechSettings) -> None:
        self.sb = sb
        self.settings = settings
        self._wake = asyncio.Event()
        self.slots: list[jobs.Slot] = []

    # -- queueing ---------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        """A consumer of ``call.recorded``: a job for the recording."""
        call_id = str((event.data.get("call") or {}).get("call_id") or "")
        if call_id and self.settings.enabled:
            await self.queue([call_id])

    async def queue(self, call_ids: list[str], *, again: bool = False) -> int:
        n: int = await self.sb.transaction(lambda c: jobs.queue_jobs(c, call_ids, again=again))
        self._wake.set()
        return n

    async def recorded_calls(self, since: datetime, until: datetime | None = None) -> list[str]:
        """The calls with a recording that rang in ``[since, until)``, oldest first."""

        def read(conn: Connection) -> list[str]:
            q = sa.select(call_record.c.call_id).where(
                call_record.c.recording_path.is_not(None), call_record.c.ringing_at >= since
            )
            if until is not None:
                q = q.where(call_record.c.ringing_at < until)
            return list(conn.execute(q.order_by(call_record.c.ringing_at)).scalars())

        out: list[str] = await self.sb.transaction(read, write=False)
        return out

    async def job_counts(self, call_ids: list[str] | None = None) -> dict[str, int]:
        out: dict[str, int] = await self.sb.transaction(
            lambda c: jobs.counts(c, call_ids), write=False
        )
        return out

    # -- the workers ------------------------------------------------------------------

    async def run(self, until_idle: bool = False) -> None:
        """The worker slots, each taking due jobs one at a time (``until_idle``: return
        once every job has ended, for the backfill command: one another worker holds, or
        a killed one held until its lease runs out, is waited for)."""
        self.slots = [jobs.Slot(f"speech-{i}") for i in range(self.settings.workers)]
        try:
            await asyncio.gather(*(self._work(i, until_idle) for i in range(len(self.slots))))
        finally:
            for slot in self.slots:
                slot.close()

    async def _work(self, i: int, until_idle: bool) -> None:
        slot, worker = self.slots[i], jobs.worker_name(i)
        s = self.settings
        while True:
            job = await self.sb.transaction(
                lambda c: jobs.claim(c, worker, s.lease_seconds, s.max_attempts)
            )
            if job is None:
                if until_idle and not await self._unfinished():
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
                continue
            await self.do(job, slot, worker)

    async def _unfinished(self) -> int:
        counts = await self.job_counts()
        return counts.get("queued", 0) + counts.get("working", 0)

    async def do(self, job: jobs.Job, slot: jobs.Slot, worker: str) -> None:
        """One job, start to end: its outcome is stored whatever happens."""
        try:
            call = await self.sb.call(job.call_id)
        except NotFound:
            await self._settle(job.call_id, "missing", "no such call")
            return
        if call.recording is None or not await asyncio.to_thread(_is_file, call.recording.path):
            await self._settle(job.call_id, "missing", "the call has no recording on disk")
            return
        language, transcribe = await self.plan(call)
        options = self.settings.options(language, transcribe)
        renewing = asyncio.create_task(self._renew(job.call_id, worker))
        try:
            found = await slot.run(analyse, call.recording.path, options)
        except jobs.WorkerCrashed as exc:
            await self._settle(job.call_id, "failed", str(exc))
            return
        except Exception as exc:  # the backend raised: the same file would again
            log.warning("speech: call %s failed: %s: %s", job.call_id, type(exc).__name__, exc)
            await self._settle(job.call_id, "failed", f"{type(exc).__name__}: {exc}")
            return
        finally:
            renewing.cancel()
        try:
            await self.store(call, found, language, transcribe)
        except Exception as exc:  # the database: try again later, a few times
            error = f"storing the analysis failed: {type(exc).__name__}: {exc}"
            if job.attempts >= self.settings.max_attempts:
                log.warning("speech: call %s: %s; giving up", call.call_id, error)
                await self._settle(job.call_id, "failed", error)
                return
            delay = jobs.RETRY.delay(job.attempts)
            log.warning("speech: call %s: %s; again in %.0fs", call.call_id, error, delay)
            await self._settle(job.call_id, "queued", error, due=time.time() + delay)

    async def _renew(self, call_id: str, worker: str) -> None:
        lease = self.settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            await self.sb.transaction(lambda c: jobs.renew(c, call_id, worker, lease))

    async def _settle(
        self, call_id: str, state: str, error: str | None, due: float | None = None
    ) -> None:
        await self.sb.transaction(lambda c: jobs.settle(c, call_id, state, error, due))

    async def plan(self, call: CallRecord) -> tuple[str, bool]:
        """The call's language, and whether to transcribe it (the privacy settings)."""
        s = self.settings
        name = None
        if call.agent_id is not None:
            with contextlib.suppress(NotFound):
                name = (await self.sb.agent(call.agent_id)).name
        language = s.agent_languages.get(name or "", s.language)
        transcribe = (
            s.transcribe
            and (not s.channels or call.channel in s.channels)
            and (name is None or name not in s.agents_off)
        )
        return language, transcribe

    async def store(
        self, call: CallRecord, found: dict[str, Any], language: str, transcribe: bool
    ) -> None:
        """Keep what a worker found (replacing an earlier analysis) and end the job."""
        status = found["status"]
        segments = found.get("segments", [])
        scored = score(self.settings.rules, segments) if transcribe and status == "done" else None
        metrics = dict(found.get("metrics") or {})
        if found.get("truncated"):
            metrics["truncated_at_s"] = self.settings.max_seconds
        config = self.settings.search_config(language)

        def write(conn: Connection) -> None:
            conn.execute(sa.delete(segment_t).where(segment_t.c.call_id == call.call_id))
            conn.execute(sa.delete(result_t).where(result_t.c.call_id == call.call_id))
            if status != "unreadable":
                conn.execute(
                    sa.insert(result_t).values(
                        call_id=call.call_id,
                        status=status,
                        channel=call.channel,
                        agent_id=call.agent_id,
                        contact_id=call.contact_id,
                        call_at=call.ringing_at,
                        language=language,
                        backend=self.settings.backend,
                        transcribed=transcribe and status == "done",
                        metrics=metrics,
                        score=scored["score"] if scored else None,
                        rules=scored["rules"] if scored else [],
                        analysed_at=datetime.now(UTC),
                    )
                )
            if segments:
                conn.execute(
                    sa.insert(segment_t),
                    [
                        {
                            "call_id": call.call_id,
                            "speaker": s["speaker"],
                            "start": s["start"],
                            "end": s["end"],
                            "text": s["text"][:20_000],
                            "words": s["words"][:5000],
                            "language": language,
                        }
                        for s in segments
                    ],
                )
                if conn.dialect.name == "postgresql" and _CONFIG.fullmatch(config):
                    conn.execute(
                        sa.text(
                            f"UPDATE speech_segment SET tsv = to_tsvector('{config}', text) "
                            "WHERE call_id = :c"
                        ),
                        {"c": call.call_id},
                    )
            jobs.settle(conn, call.call_id, status, found.get("error"))
            self.sb.publish_in(
                conn,
                "speech",
                "analysed",
                {
                    "call_id": call.call_id,
                    "status": status,
                    "score": scored["score"] if scored else None,
                    "transcribed": bool(segments),
                },
                agents=[call.agent_id] if call.agent_id is not None else None,
            )

        await self.sb.transaction(write)

    # -- reading ----------------------------------------------------------------------

    async def analyses(self, call_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each analysed call's ``status``, ``metrics``, ``score``, ``rules`` and
        ``segments`` (speaker, start, end, text), by call id; calls with a job not yet
        done have ``status`` = the job's state and ``error``."""

        def read(conn: Connection) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            if not call_ids:
                return out
            for job in conn.execute(
                sa.select(job_t.c.call_id, job_t.c.state, job_t.c.error).where(
                    job_t.c.call_id.in_(call_ids)
                )
            ):
                out[job.call_id] = {"status": job.state, "error": job.error, "segments": []}
            for res in conn.execute(sa.select(result_t).where(result_t.c.call_id.in_(call_ids))):
                out.setdefault(res.call_id, {"segments": []}).update(
                    status=res.status,
                    metrics=res.metrics,
                    score=res.score,
                    rules=res.rules,
                    language=res.language,
                    transcribed=res.transcribed,
                )
            for row in conn.execute(
                sa.select(
                    segment_t.c.call_id,
                    segment_t.c.speaker,
                    segment_t.c.start,
                    segment_t.c.end,
                    segment_t.c.text,
                )
                .where(segment_t.c.call_id.in_(call_ids))
                .order_by(segment_t.c.call_id, segment_t.c.start)
            ):
                out[row.call_id]["segments"].append(
                    {"speaker": row.speaker, "start": row.start, "end": row.end, "text": row.text}
                )
            return out

        found: dict[str, dict[str, Any]] = await self.sb.transaction(read, write=False)
        return found

    async def agent_summary(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Per agent, the calls analysed in ``[since, until)``: how many, the average score
        and talk ratio, and the average score of the period before, as long (the trend)."""

        def read(conn: Connection, a: datetime, b: datetime) -> dict[int, dict[str, Any]]:
            rows = conn.execute(
                sa.select(result_t.c.agent_id, result_t.c.score, result_t.c.metrics).where(
                    result_t.c.agent_id.is_not(None),
                    result_t.c.call_at >= a,
                    result_t.c.call_at < b,
                )
            ).all()
            out: dict[int, dict[str, Any]] = {}
            for agent_id, value, metrics in rows:
                slot = out.setdefault(agent_id, {"calls": 0, "scores": [], "ratios": []})
                slot["calls"] += 1
                if value is not None:
                    slot["scores"].append(value)
                ratio = (metrics or {}).get("talk_ratio")
                if ratio is not None:
                    slot["ratios"].append(ratio)
            return out

        span = until - since
        now = await self.sb.transaction(lambda c: read(c, since, until), write=False)
        before = await self.sb.transaction(lambda c: read(c, since - span, since), write=False)
        names = {a.id: a.name for a in await self.sb.agents()}

        def mean(xs: list[float]) -> float | None:
            return round(sum(xs) / len(xs), 1) if xs else None

        rows = []
        for agent_id, slot in sorted(now.items(), key=lambda kv: names.get(kv[0], "")):
            earlier = mean(before.get(agent_id, {}).get("scores", []))
            avg = mean(slot["scores"])
            rows.append(
                {
                    "agent": names.get(agent_id, f"#{agent_id}"),
                    "calls": slot["calls"],
                    "score": avg,
                    "talk_ratio": round(sum(slot["ratios"]) / len(slot["ratios"]), 3)
                    if slot["ratios"]
                    else None,
                    "trend": round(avg - earlier, 1)
                    if avg is not None and earlier is not None
                    else None,
                }
            )
        return rows

    # -- search (sb.call_search) ------------------------------------------------------

    async def search(
        self,
        q: str,
        *,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
        agent_id: int | None = None,
        contact_id: int | None = None,
    ) -> list[CallHit]:
        """The calls whose transcript matches ``q``, best first (``CallSearch``)."""
        filters = Filters(since=since, until=until, agent_id=agent_id, contact_id=contact_id)

        def find(conn: Connection) -> list[CallHit]:
            pg = conn.dialect.name == "postgresql"
            index: Index = PgIndex(self.settings, q) if pg else FtsIndex(fts_query(q))
            # the best turns first, at most ``cap`` of them: enough for ``limit`` calls
            # unless the filters leave out most of them, then all
            cap: int | None = limit * SCAN_PER_CALL
            newest = index.matches_over(conn, RANK_AT_MOST)
            while True:
                ranked = index.ranked(conn, filters, cap, newest)
                calls: dict[str, list[int]] = {}
                for turn_id, call_id in ranked:
                    if call_id in calls or len(calls) < limit:
                        calls.setdefault(call_id, []).append(turn_id)
                if cap is None or len(ranked) < cap or len(calls) >= limit:
                    break
                cap = None
            shown = [t for turns in calls.values() for t in turns[:MATCHES]]
            marked = index.marked(conn, shown)
            return [
                CallHit(call_id, [marked[t] for t in turns[:MATCHES] if t in marked])
                for call_id, turns in calls.items()
            ]

        hits: list[CallHit] = await self.sb.transaction(find, write=False)
        return hits


#: Turns ranked per call wanted before the filters are applied to all of them.
SCAN_PER_CALL = 40
#: Words in more turns than this (said in most calls) list the newest calls first:
#: ranking every one of them would take longer than the search's budget.
RANK_AT_MOST = 2000


@attrs.frozen
class Filters:
    """Which calls a search looks in, as conditions on ``speech_result r``."""

    since: datetime | None
    until: datetime | None
    agent_id: int | None
    contact_id: int | None

    def sql(self) -> str:
        out = ""
        for name, test in (
            ("since", "r.call_at >= :since"),
            ("until", "r.call_at < :until"),
            ("agent_id", "r.agent_id = :agent_id"),
            ("contact_id", "r.contact_id = :contact_id"),
        ):
            if getattr(self, name) is not None:
                out += f" AND {test}"
        return out

    def bind(self, query: sa.TextClause, **values: Any) -> sa.TextClause:
        """The query with the filters' values (times as the core stores them)."""
        stamp = UTCDateTime(timezone=True)
        used = {k: v for k, v in attrs.asdict(self).items() if v is not None}
        params = [sa.bindparam(k, type_=stamp) for k in ("since", "until") if k in used]
        return query.bindparams(*params, **used, **values)


class Index:
    """A database's full-text index of the turns."""

    def matches_over(self, conn: Connection, n: int) -> bool:
        """Whether more than ``n`` turns match."""
        raise NotImplementedError

    def ranked(
        self, conn: Connection, filters: Filters, cap: int | None, newest: bool
    ) -> list[Any]:
        """(turn id, call id) of the matching turns of calls that pass ``filters``, best
        (or ``newest``) first; of the ``cap`` first turns only (None: all)."""
        raise NotImplementedError

    def marked(self, conn: Connection, turns: list[int]) -> dict[int, CallMatch]:
        """These turns, the words found marked."""
        raise NotImplementedError


def _match(row: Any) -> CallMatch:
    return CallMatch(
        text=row.text,
        highlighted=highlighted(row.marked),
        speaker=row.speaker,
        start=row.start,
        end=row.end,
    )


_TURN = 's.id, s.speaker, s.start, s."end", s.text'


class FtsIndex(Index):
    """SQLite: the FTS5 table ``speech_fts`` (``rank`` is its BM25, lower is better)."""

    def __init__(self, match: str) -> None:
        self.match = match

    def matches_over(self, conn: Connection, n: int) -> bool:
        sql = (
            "SELECT count(*) FROM (SELECT rowid FROM speech_fts "
            "WHERE speech_fts MATCH :match LIMIT :n)"
        )
        return int(conn.execute(sa.text(sql), {"match": self.match, "n": n + 1}).scalar_one()) > n

    def ranked(
        self, conn: Connection, filters: Filters, cap: int | None, newest: bool
    ) -> list[Any]:
        order = "-rowid" if newest else "rank"
        sql = f"""
            WITH found AS (
                SELECT rowid AS id, {order} AS ord FROM speech_fts
                WHERE speech_fts MATCH :match ORDER BY {order} LIMIT :cap
            )
            SELECT f.id, s.call_id FROM found f
            JOIN speech_segment s ON s.id = f.id
            JOIN speech_result r ON r.call_id = s.call_id
            WHERE 1 = 1 {filters.sql()}
            ORDER BY f.ord, s.call_id, s.start
        """
        query = filters.bind(sa.text(sql), match=self.match, cap=-1 if cap is None else cap)
        return [tuple(row) for row in conn.execute(query)]

    def marked(self, conn: Connection, turns: list[int]) -> dict[int, CallMatch]:
        if not turns:
            return {}
        sql = sa.text(
            f"SELECT {_TURN}, highlight(speech_fts, 0, char(2), char(3)) AS marked "
            "FROM speech_fts JOIN speech_segment s ON s.id = speech_fts.rowid "
            "WHERE speech_fts MATCH :match AND speech_fts.rowid IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True))
        rows = conn.execute(sql, {"match": self.match, "ids": turns})
        return {row.id: _match(row) for row in rows}


class PgIndex(Index):
    """PostgreSQL: ``speech_segment.tsv`` (GIN), the query read by ``websearch_to_tsquery``
    in each configured language's configuration; ``ts_rank``, higher is better."""

    def __init__(self, settings: SpeechSettings, q: str) -> None:
        self.q = q
        configs = {settings.search_config(x) for x in settings.languages()} | {"simple"}
        self.query = " || ".join(
            f"websearch_to_tsquery('{c}', :q)" for c in sorted(configs) if _CONFIG.fullmatch(c)
        )
        langs = {x: settings.search_config(x) for x in settings.languages()}
        case = " ".join(
            f"WHEN '{x}' THEN ts_headline('{c}', s.text, query, :opts)"
            for x, c in langs.items()
            if _CONFIG.fullmatch(c) and re.fullmatch(r"[A-Za-z_-]{1,16}", x)
        )
        self.headline = (
            f"CASE s.language {case} ELSE ts_headline('simple', s.text, query, :opts) END"
        )

    def matches_over(self, conn: Connection, n: int) -> bool:
        sql = (
            f"WITH query AS (SELECT ({self.query}) AS query) SELECT count(*) FROM "
            "(SELECT 1 FROM speech_segment s CROSS JOIN query WHERE s.tsv @@ query LIMIT :n) x"
        )
        return int(conn.execute(sa.text(sql), {"q": self.q, "n": n + 1}).scalar_one()) > n

    def ranked(
        self, conn: Connection, filters: Filters, cap: int | None, newest: bool
    ) -> list[Any]:
        order = "s.id DESC" if newest else "ts_rank(s.tsv, query) DESC"
        sql = f"""
            WITH query AS (SELECT ({self.query}) AS query)
            SELECT s.id, s.call_id FROM speech_segment s CROSS JOIN query
            JOIN speech_result r ON r.call_id = s.call_id
            WHERE s.tsv @@ query {filters.sql()}
            ORDER BY {order}, s.call_id, s.start LIMIT :cap
        """
        return [tuple(row) for row in conn.execute(filters.bind(sa.text(sql), q=self.q, cap=cap))]

    def marked(self, conn: Connection, turns: list[int]) -> dict[int, CallMatch]:
        if not turns:
            return {}
        sql = sa.text(
            f"WITH query AS (SELECT ({self.query}) AS query) "
            f"SELECT {_TURN}, {self.headline} AS marked FROM speech_segment s CROSS JOIN query "
            "WHERE s.id IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True))
        opts = "StartSel=\x02, StopSel=\x03, HighlightAll=true"
        rows = conn.execute(sql, {"q": self.q, "ids": turns, "opts": opts})
        return {row.id: _match(row) for row in rows}


def _is_file(path: str) -> bool:
    return Path(path).is_file()


def highlighted(marked: str) -> str:
    """Text with the words found between \\x02 and \\x03 as HTML: escaped, in ``<mark>``."""
    out = html.escape(marked.replace("\x02", "\x00s").replace("\x03", "\x00e"))
    return out.replace("\x00s", "<mark>").replace("\x00e", "</mark>")


_TERM = re.compile(r'(-?)"([^"]*)"|(-?)(\S+)')
_WORDS = re.compile(r"\w+", re.UNICODE)


def fts_query(q: str) -> str:
    """What people type (words, "a phrase", -word, OR) as an FTS5 query whose every
    term is quoted: no FTS5 syntax of theirs reaches SQLite. ``Invalid`` when nothing is
    left to look for."""
    positive: list[str] = []
    negative: list[str] = []
    pending_or = False
    for m in _TERM.finditer(q):
        neg = (m.group(1) or m.group(3)) == "-"
        raw = m.group(2) if m.group(2) is not None else m.group(4)
        if m.group(4) is not None and raw.lower() == "or" and positive:
            pending_or = True
            continue
        words = _WORDS.findall(raw)
        if not words:
            continue
        term = '"' + " ".join(words) + '"'
        if neg:
            negative.append(term)
        elif pending_or:
            positive[-1] = f"({positive[-1]} OR {term})"
            pending_or = False
        else:
            positive.append(term)
    if not positive:
        raise Invalid("q: give at least one word to find (not only -excluded ones)")
    query = " AND ".join(positive)
    for term in negative:
        query += f" NOT {term}"
    return query


def prune_rows(conn: Connection, older_than: datetime | None) -> int:
    """Delete the analyses (transcripts, metrics, scores, jobs) of calls that rang before
    ``older_than``, and of calls whose recording is gone (no longer on the record, or
    its file deleted). Returns how many calls' analyses went."""
    gone: list[str] = []
    rows = conn.execute(
        sa.select(result_t.c.call_id, result_t.c.call_at, call_record.c.recording_path).join(
            call_record,
            sa.and_(
                call_record.c.channel == result_t.c.channel,
                call_record.c.call_id == result_t.c.call_id,
            ),
            isouter=True,
        )
    ).all()
    for call_id, call_at, path in rows:
        old = older_than is not None and call_at is not None and call_at < older_than
        if old or path is None or not Path(path).is_file():
            gone.append(call_id)
    for i in range(0, len(gone), 500):
        part = gone[i : i + 500]
        for table in (segment_t, result_t, job_t):
            conn.execute(sa.delete(table).where(table.c.call_id.in_(part)))
    return len(gone)


async def prune_forever(speech: Speech) -> None:
    """The retention loop (``speech:prune``)."""
    while True:
        days = speech.settings.retention_days
        older = datetime.now(UTC) - timedelta(days=days) if days > 0 else None
        n = await speech.sb.transaction(functools.partial(prune_rows, older_than=older))
        if n:
            log.info("speech: deleted the analyses of %d calls (retention, or recording gone)", n)
        await asyncio.sleep(PRUNE_S)
