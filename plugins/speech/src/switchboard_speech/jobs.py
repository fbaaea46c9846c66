"""Durable analysis jobs: one per recording, kept in ``speech_job``, claimed by a worker
with a lease that it renews while it works. A runner killed mid-job leaves the lease to
run out; another claim (the same runner after a restart, or another) takes the job again.

Each worker slot owns a process of its own (a one-process pool), so a backend that
crashes takes down that slot's process only: that job fails with the error, the slot
gets a new process, and the other slots go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard import Backoff
from switchboard_speech.tables import job_t

log = logging.getLogger("switchboard.speech")

#: The states a job ends in (it is not claimed again): docs/speech.md lists them.
FINAL = ("done", "silent", "unreadable", "missing", "failed")


@attrs.frozen
class Job:
    call_id: str
    attempts: int


def now_utc() -> datetime:
    return datetime.now(UTC)


def queue_jobs(conn: Connection, call_ids: list[str], *, again: bool = False) -> int:
    """Queue a job per call (none twice: a call with a job keeps it, unless ``again``
    queues it anew). Returns how many were queued."""
    if not call_ids:
        return 0
    now, stamp = time.time(), now_utc()
    known = set()
    for i in range(0, len(call_ids), 500):
        part = call_ids[i : i + 500]
        known |= set(
            conn.execute(sa.select(job_t.c.call_id).where(job_t.c.call_id.in_(part))).scalars()
        )
    fresh = [c for c in dict.fromkeys(call_ids) if c not in known]
    if fresh:
        conn.execute(
            sa.insert(job_t),
            [
                {
                    "call_id": c,
                    "state": "queued",
                    "attempts": 0,
                    "due": now,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
                for c in fresh
            ],
        )
    redo = [c for c in dict.fromkeys(call_ids) if c in known] if again else []
    if redo:
        conn.execute(
            sa.update(job_t)
            .where(job_t.c.call_id.in_(redo), job_t.c.state != "working")
            .values(state="queued", attempts=0, due=now, error=None, updated_at=stamp)
        )
    return len(fresh) + len(redo)


def claim(conn: Connection, worker: str, lease: float, max_attempts: int) -> Job | None:
    """The next due job, now this worker's for ``lease`` seconds: a queued one, or one
    whose worker's lease ran out (it died). One that ran out ``max_attempts`` times is
    failed instead."""
    while True:
        now = time.time()
        due = sa.or_(
            sa.and_(job_t.c.state == "queued", job_t.c.due <= now),
            sa.and_(job_t.c.state == "working", job_t.c.lease_until < now),
        )
        query = sa.select(job_t.c.call_id, job_t.c.state, job_t.c.attempts).where(due)
        query = query.order_by(job_t.c.due).limit(1)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = conn.execute(query).first()
        if row is None:
            return None
        if row.state == "working" and row.attempts >= max_attempts:
            conn.execute(
                sa.update(job_t)
                .where(job_t.c.call_id == row.call_id)
                .values(
                    state="failed",
                    lease_until=None,
                    updated_at=now_utc(),
                    error=f"abandoned: {row.attempts} attempts did not finish (a worker died)",
                )
            )
            continue
        conn.execute(
            sa.update(job_t)
            .where(job_t.c.call_id == row.call_id)
            .values(
                state="working",
                attempts=row.attempts + 1,
                lease_until=now + lease,
                worker=worker,
                updated_at=now_utc(),
            )
        )
        return Job(row.call_id, row.attempts + 1)


def renew(conn: Connection, call_id: str, worker: str, lease: float) -> bool:
    done = conn.execute(
        sa.update(job_t)
        .where(job_t.c.call_id == call_id, job_t.c.worker == worker, job_t.c.state == "working")
        .values(lease_until=time.time() + lease)
    )
    return bool(done.rowcount)


def settle(
    conn: Connection, call_id: str, state: str, error: str | None = None, due: float | None = None
) -> None:
    """The job ends in ``state`` (or waits until ``due``, queued, to be tried again)."""
    values: dict[str, Any] = {
        "state": state,
        "error": error,
        "lease_until": None,
        "updated_at": now_utc(),
    }
    if due is not None:
        values["due"] = due
    conn.execute(sa.update(job_t).where(job_t.c.call_id == call_id).values(values))


def counts(conn: Connection, call_ids: list[str] | None = None) -> dict[str, int]:
    query = sa.select(job_t.c.state, sa.func.count()).group_by(job_t.c.state)
    if call_ids is not None:
        query = query.where(job_t.c.call_id.in_(call_ids))
    return {state: n for state, n in conn.execute(query).all()}


class WorkerCrashed(Exception):
    """The worker process died (a backend crashed it)."""


class Slot:
    """One worker process (a pool of one, made when first needed, made anew after a
    crash). ``spawn``: a fresh interpreter, not a fork of the runner with its threads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, fn, *args)
        except BrokenProcessPool as exc:
            self.close()
            raise WorkerCrashed(f"the worker process died ({exc})") from None

    def close(self) -> None:
        """Stop the process at once: a transcription still running is abandoned (its job's
        lease runs out and it is taken again)."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        # ProcessPoolExecutor keeps its processes in a private attribute; kill() is the
        # only way to stop one mid-task before Python 3.14 (terminate_workers)
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def worker_name(slot: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{slot}"


RETRY = Backoff(initial=5.0, cap=600.0)
