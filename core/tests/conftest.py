"""Store backends for the core's tests: every test that takes ``db_url`` (or ``open_sb``)
runs against a SQLite file and against a throwaway database on the PostgreSQL server at
127.0.0.1:5432. The fixtures come from :mod:`switchboard.testing` (a pytest plugin)."""
