"""Repository-wide pytest settings: under ``CI=true`` a skipped test is a failed test.

A CI machine runs ``make test``, which installs every tool the tests use
(``scripts/system-deps``), so a skip there means a part was never exercised: say so
loudly instead of passing. ``xfail`` is not a skip and is left alone."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


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
