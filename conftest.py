"""Repository-wide pytest settings: under ``CI=true`` a skipped test is a failed test.

A CI machine runs ``make test``, which installs every tool the tests use
(``scripts/system-deps``), so a skip there means a part was never exercised: say so
loudly instead of passing. ``xfail`` is not a skip and is left alone."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from hypothesis import HealthCheck, settings

# switchboard.testing's fixtures (db_url, pg_url, open_sb, switchboard_store...) are
# opt-in: this repository's tests take them here, as a plugin's own conftest.py would.
pytest_plugins = ["switchboard.testing"]

# The fuzz tests (``test_*_fuzz.py``): a bounded run in every `make test`, a long one with
# `make fuzz` (SWITCHBOARD_FUZZ=long). Every run derandomized: a failure repeats.
settings.register_profile(
    "bounded",
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", max_examples=50_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("long" if os.environ.get("SWITCHBOARD_FUZZ") == "long" else "bounded")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"
    return report
