"""The runner's HTTP API (``/api/...``): the public contract a CRM or the console uses.

Every path needs ``Authorization: Bearer TOKEN`` (see :mod:`switchboard.auth`), except
``/api/health``. Errors are JSON ``{"detail": ...}``: 401 no or bad token, 403 not
allowed, 404 unknown id, 409 conflict, 413 body too large, 422 invalid input (FastAPI
names each field in ``detail[].loc``), 503 no channel able to do it. One module per
resource, each with its own router; ``router`` here mounts them under ``/api``.
"""

from __future__ import annotations

from fastapi import APIRouter

from switchboard.api import analytics, calls, contacts, events, health, mailings, messages, tasks
from switchboard.api.calls import CallIn, get_recording, place_call, voice_channel
from switchboard.api.common import (
    Accepted,
    Body,
    Caller,
    Core,
    call_json,
    csv_response,
    domain_error,
    require_zones,
    run,
    supervisor_only,
)
from switchboard.api.contacts import (
    ContactIn,
    ContactPatch,
    create_contact,
    get_contact,
    list_contacts,
    patch_contact,
    timeline,
)
from switchboard.api.events import stream_events
from switchboard.api.mailings import tracking
from switchboard.api.messages import MessageIn, queue_message
from switchboard.api.tasks import task_done

__all__ = [
    "Accepted",
    "Body",
    "CallIn",
    "Caller",
    "ContactIn",
    "ContactPatch",
    "Core",
    "MessageIn",
    "call_json",
    "create_contact",
    "csv_response",
    "domain_error",
    "get_contact",
    "get_recording",
    "list_contacts",
    "patch_contact",
    "place_call",
    "queue_message",
    "require_zones",
    "router",
    "run",
    "stream_events",
    "supervisor_only",
    "task_done",
    "timeline",
    "tracking",
    "voice_channel",
]

router = APIRouter()  # each part's paths are under /api (metrics label routes by them)
for part in (health, contacts, messages, calls, tasks, events, mailings, analytics):
    router.include_router(part.router)
