"""The amoCRM connector on a running runner, against a loopback amoCRM (API v4 and OAuth)
written from amoCRM's public reference: calls, unknown callers, messages and emails,
the CRM down and back, token rotation, a bad user, an answer of the wrong shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from switchboard.consumers import failure_t
from switchboard.testing import CrmRig, RunningService, crm_rig, until
from switchboard_amocrm import AmoCrmPlugin
from switchboard_amocrm.tables import links_t, token_t
from switchboard_amocrm.testing import AmoCrm, amocrm, settings

OLGA = "+74951234567"
#: The CRM answers the pop's lookup in time (the slow-CRM test has the default 80 ms).
PATIENT = {"resolve_timeout": 5.0}


@pytest.fixture
def crm() -> Iterator[AmoCrm]:
    with amocrm() as stand_in:
        yield stand_in


def rig(switchboard_service: Callable[..., RunningService], crm: AmoCrm, **more: Any) -> CrmRig:
    oauth = more.pop("oauth", True)
    core = more.pop("core", None)
    return crm_rig(
        switchboard_service, AmoCrmPlugin(), settings(crm.url, oauth=oauth, **more), core=core
    )


def test_a_known_callers_call_is_logged_with_its_recording_and_user(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    olga = crm.add_contact("Olga Petrova", ["+7 (495) 123-45-67"], responsible=7002)
    r = rig(switchboard_service, crm, core=PATIENT)
    call_id = r.inbound_call(OLGA, agent="anna")
    logged = until(lambda: crm.calls, what="the call in amoCRM")[0]
    assert logged["entity_id"] == olga
    assert logged["uniq"] == call_id
    assert logged["direction"] == "inbound"
    assert logged["call_status"] == 4  # the talk took place
    assert logged["responsible_user_id"] == 7001  # anna took it
    assert logged["phone"] == OLGA
    # the recording link is signed and opens the WAV without a token
    link = urlsplit(logged["link"])
    assert link.netloc == "switchboard.test"
    got = httpx.get(r.service.url + link.path)
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    assert httpx.get(r.service.url + link.path[:-3] + "abc").status_code == 404  # forged
    # resolve_contact: the call's contact got amoCRM's name and responsible user
    contact = r.service.call(r.sb.contact(r.service.call(r.sb.call(call_id)).contact_id))
    assert contact.name == "Olga Petrova"
    assert contact.owner_agent_id == r.agent("boris").id
    # a second delivery of the same events logs nothing twice
    consumer = r.consumer("amocrm")
    until(lambda: consumer.lag() == 0)
    before = len(crm.received("/api/v4/calls"))
    consumer.position = 0
    r.service.call(consumer.handle(_event_of(r, "call.ended")))
    assert len(crm.received("/api/v4/calls")) == before and len(crm.calls) == 1


def _event_of(r: CrmRig, kind: str) -> Any:
    events = r.sb.events.read_since(0, 1000)
    return next(e for e in events if e.type == kind)


def test_an_unknown_caller_becomes_an_unsorted_lead(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    r = rig(switchboard_service, crm)
    call_id = r.inbound_call("+74957654321", agent=None, ring_for=("boris",))
    lead = until(lambda: crm.unsorted, what="an unsorted lead")[0]
    assert lead["source_uid"] == call_id
    assert lead["metadata"]["phone"] == "+74957654321"
    assert lead["metadata"]["is_call_event_needed"] is True
    assert "link" not in lead["metadata"]  # a missed call has no recording
    assert crm.calls == []

    def links() -> list[tuple[str, str, str]]:
        rows = r.service.call(
            r.sb.transaction(lambda c: c.execute(sa.select(links_t)).all(), write=False)
        )
        return [(x.kind, x.our_id, x.state) for x in rows]

    # written once amoCRM answered: a moment after the stand-in kept the lead
    assert until(links, what="the call's link") == [("call", call_id, "unsorted")]


def test_an_email_and_a_telegram_message_become_notes_on_one_contact(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    known = crm.add_contact("Ivan", emails=["ivan@example.com"])
    r = rig(switchboard_service, crm)
    r.receive(r.email, "ivan@example.com", "Please send the invoice", subject="Invoice")
    r.receive(r.telegram, "telegram:5550001", "Hi from Telegram")
    notes = until(lambda: len(crm.notes) == 2 and crm.notes, what="two notes")
    assert notes[0]["entity_id"] == known
    assert notes[0]["params"]["text"].splitlines() == [
        "email ← email:ivan@example.com",
        "Subject: Invoice",
        "Please send the invoice",
    ]
    # the Telegram writer is new to amoCRM: created, then noted
    created = notes[1]["entity_id"]
    assert created != known and crm.contacts[created]["name"] == "5550001"
    assert notes[1]["params"]["text"].endswith("Hi from Telegram")


def test_the_crm_down_for_a_while_then_back_gets_everything_once_in_order(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    crm.add_contact("Ivan", emails=["ivan@example.com"])
    r = rig(switchboard_service, crm)
    r.receive(r.email, "ivan@example.com", "first")
    until(lambda: len(crm.notes) == 1)
    crm.down = True
    for n in range(5):
        r.receive(r.email, "ivan@example.com", f"while down {n}")
    consumer = r.consumer("amocrm")
    until(lambda: consumer.attempts >= 2, what="retries while down")
    assert "503" in (consumer.health()["last_error"] or "")
    assert consumer.lag() >= 5
    crm.down = False
    until(lambda: len(crm.notes) == 6, within=20, what="every note after the CRM came back")
    texts = [n["params"]["text"].splitlines()[-1] for n in crm.notes]
    assert texts == ["first"] + [f"while down {n}" for n in range(5)]
    until(lambda: consumer.health()["last_error"] is None)


def test_tokens_rotate_and_an_expired_access_token_is_renewed_mid_stream(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    crm.add_contact("Ivan", emails=["ivan@example.com"])
    r = rig(switchboard_service, crm)
    r.receive(r.email, "ivan@example.com", "one")
    until(lambda: len(crm.notes) == 1)
    assert crm.issued == 1  # the first refresh token traded for a pair

    def stored() -> Any:
        return r.service.call(
            r.sb.transaction(lambda c: c.execute(sa.select(token_t)).one(), write=False)
        )

    assert stored().refresh_token == "refresh-1"  # the rotated token is kept
    crm.expire_tokens()  # amoCRM revokes the access token mid-stream: 401, then refresh
    for text in ("two", "three"):
        r.receive(r.email, "ivan@example.com", text)
    until(lambda: len(crm.notes) == 3)
    assert crm.issued == 2 and stored().refresh_token == "refresh-2"
    assert "refresh-1" not in crm.refresh_tokens  # the old one is dead, and not needed
    assert [n["params"]["text"].splitlines()[-1] for n in crm.notes] == ["one", "two", "three"]


def test_a_429_waits_for_retry_after_and_a_long_lived_token_needs_no_oauth(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    crm.add_contact("Ivan", emails=["ivan@example.com"])
    r = rig(switchboard_service, crm, oauth=False)
    r.receive(r.email, "ivan@example.com", "one")
    until(lambda: len(crm.notes) == 1)
    crm.fail_next(429, retry_after="1")
    r.receive(r.email, "ivan@example.com", "two")
    until(lambda: len(crm.notes) == 2)
    assert crm.issued == 0 and r.consumer("amocrm").failed == 0


def test_an_unknown_amocrm_user_holds_the_events_and_says_which(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    del crm.users[7002]
    r = rig(switchboard_service, crm)
    r.receive(r.email, "ivan@example.com", "held")
    consumer = r.consumer("amocrm")
    error = until(lambda: consumer.health()["last_error"], what="the user check failing")
    assert "boris (user 7002)" in error
    assert crm.notes == []
    assert httpx.get(r.service.url + "/api/health").json()["status"] == "ok"  # a blip, so far
    until(lambda: consumer.attempts >= 3, within=15, what="three attempts")
    assert httpx.get(r.service.url + "/api/health").json()["status"] == "degraded"


def test_an_answer_of_an_unexpected_shape_skips_that_item_only(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    crm.add_contact("Ivan", emails=["ivan@example.com"])
    r = rig(switchboard_service, crm)
    r.receive(r.email, "ivan@example.com", "one")
    until(lambda: len(crm.notes) == 1)
    crm.garbage = 1
    r.receive(r.email, "ivan@example.com", "two")
    r.receive(r.email, "ivan@example.com", "three")
    until(lambda: len(crm.notes) == 2)
    consumer = r.consumer("amocrm")
    assert consumer.failed == 1
    failures = r.service.call(
        r.sb.transaction(lambda c: c.execute(sa.select(failure_t)).all(), write=False)
    )
    assert [(f.name, f.event_id) for f in failures] == [("consumer:amocrm", 3)]
    assert "POST /api/v4/contacts/{id}/notes: unexpected answer" in failures[0].error
    assert [n["params"]["text"].splitlines()[-1] for n in crm.notes] == ["one", "three"]


def test_a_crm_lookup_of_two_seconds_does_not_hold_the_screen_pop(
    switchboard_service: Callable[..., RunningService], crm: AmoCrm
) -> None:
    """The pop goes within the core's resolve_timeout; the lookup goes on, and the contact
    takes amoCRM's name when it answers."""
    import time

    from switchboard import Direction

    crm.add_contact("Olga Petrova", [OLGA], responsible=7002)
    r = rig(switchboard_service, crm)
    crm.delay = 2.0  # every amoCRM answer takes two seconds from now on
    ctx = r.voice.ctx
    assert ctx is not None
    started = time.monotonic()
    record, contact = r.service.call(
        ctx.calls.ringing(
            "voice",
            "slow-1",
            direction=Direction.INBOUND,
            from_address=OLGA,
            to_address="+74950000000",
            agents=[r.agent("anna").id or 0],
        )
    )
    popped = time.monotonic() - started
    assert popped < 0.5, popped  # resolve_timeout (80 ms) and the pop, not the 2 s lookup
    assert contact.name == OLGA  # the store decided: a new contact under the number
    named = until(
        lambda: r.service.call(r.sb.contact(record.contact_id)).name == "Olga Petrova",
        within=15,
        what="amoCRM's name filled in",
    )
    assert named
    assert len(crm.received("/api/v4/contacts")) == 1  # one lookup: the pop's, finished
