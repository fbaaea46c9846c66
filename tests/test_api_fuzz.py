"""Requests generated from the OpenAPI schema (schemathesis), sent over HTTP to a running
service (on SQLite and on PostgreSQL) with each role's token and with none: no answer is
a 500, every 4xx says why (a non-empty ``detail``), and what a 2xx answers matches the
schema it documents.

``make test`` sends ``SCHEMA_EXAMPLES`` requests per operation and role; set
``SWITCHBOARD_FUZZ=long`` (``make fuzz``) for many more."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sbservice import TOKENS, start_service
from schemathesis.specs.openapi.checks import response_schema_conformance

from switchboard.testing import RunningService, pg_database, serve_in_thread

SCHEMA_EXAMPLES = 500 if os.environ.get("SWITCHBOARD_FUZZ") == "long" else 12
ROLES = [None, "anna", "sue", "admin"]  # no token, agent, supervisor, admin


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """The service on SQLite, then on PostgreSQL (whose column types are stricter)."""
    folder = tmp_path_factory.mktemp("schema")
    with contextlib.ExitStack() as stack:
        extra = {}
        if request.param == "postgresql":
            extra["database_url"] = stack.enter_context(pg_database())
        app, _ = start_service(folder, **extra)
        yield stack.enter_context(serve_in_thread(app))


def _openapi() -> dict[str, Any]:
    """The schema the service serves at /openapi.json (the app is built, not started)."""
    with tempfile.TemporaryDirectory() as folder:
        app, _ = start_service(Path(folder))
        spec: dict[str, Any] = app.openapi()
    return spec


# the event stream never ends: it has its own tests (tests/test_events.py)
schema = schemathesis.openapi.from_dict(_openapi()).exclude(path="/api/events")


def _reason(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return detail if isinstance(detail, str) else str(detail or "")


@schema.parametrize()
@settings(
    max_examples=SCHEMA_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_generated_requests_get_a_reasoned_answer(case: Any, running: RunningService) -> None:
    for who in ROLES:  # each generated request with each role's token, and with none
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        response = case.call(base_url=running.url, headers=headers, timeout=30)
        status = response.status_code
        where = f"{case.method} {case.formatted_path} as {who or 'anonymous'}"
        assert status < 500, f"{where}: {status} {response.text[:300]}"
        if 400 <= status < 500:
            assert _reason(response), f"{where}: {status} without a reason: {response.text[:300]}"
        elif 200 <= status < 300:
            case.validate_response(response, checks=[response_schema_conformance])
