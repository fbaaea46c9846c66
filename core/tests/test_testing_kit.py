"""switchboard.testing for plugin authors: its fixtures are opt-in, not forced on every
test run that has Switchboard installed."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USES_A_FIXTURE = """
def test_store(switchboard_store):
    assert switchboard_store.current_revision() is not None
"""


def test_fixtures_come_only_with_pytest_plugins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_store=USES_A_FIXTURE)
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    without.assert_outcomes(errors=1)
    without.stdout.fnmatch_lines(["*fixture 'switchboard_store' not found*"])
    pytester.makeconftest('pytest_plugins = ["switchboard.testing"]\n')
    with_them = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    with_them.assert_outcomes(passed=1)
