"""The runner's HTTP API (``/api/...``): the public contract a CRM or the console uses.

Every path needs ``Authorization: Bearer TOKEN`` (see :mod:`switchboard.auth`), except
``/api/health``. Errors are JSON ``{"detail": ...}``: 401 no or bad token, 403 not
allowed, 404 unknown id, 409 conflict, 413 body too large, 422 invalid input (FastAPI
names each field in ``detail[].loc``), 503 no channel able to do it. One module per
resource, each with its own router; ``router`` here mounts them under ``/api``.
"""

from __future__ import annotations

from fastapi import APIRouter

from switchboard.api import analytics, calls, contacts, events, health, messages, tasks
from switchboard.api.common import domain_error

__all__ = ["domain_error", "router"]

router = APIRouter()  # each part's paths are under /api (metrics label routes by them)
for part in (health, contacts, messages, calls, tasks, events, analytics):
    router.include_router(part.router)
router.include_router(calls.links)
