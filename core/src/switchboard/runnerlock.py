"""One runner per SQLite database: SQLite is for a single node. A runner takes an
exclusive lock (``flock``) on ``<database>.runner-lock`` beside the database file for as
long as it serves; a second ``switchboard serve`` on the same file is refused with a
message that says so. Commands that only open the core (imports, backfills) do not take
it. Several runners belong on PostgreSQL (docs/api.md, "Live events")."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy.engine import URL


class RunnerLocked(RuntimeError):
    """Another runner serves this SQLite database."""


class RunnerLock:
    def __init__(self, url: URL) -> None:
        database = url.database if url.get_backend_name() == "sqlite" else None
        self.path = Path(f"{database}.runner-lock") if database and database != ":memory:" else None
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Hold the lock (nothing on PostgreSQL); ``RunnerLocked`` when another has it."""
        if self.path is None or self._file is not None:
            return
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunnerLocked(
                f"another runner (pid {holder}) serves the SQLite database "
                f"{self.path.with_suffix('')}: SQLite is for one runner; for several, put "
                'them on one PostgreSQL database (database_url = "postgresql://...")'
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
