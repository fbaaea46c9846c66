"""The Bitrix24 connector on a running runner, against a loopback Bitrix24 portal and
OAuth server written from Bitrix24's REST docs: the installation, a whole inbound call on
Bitrix24's own call card, click-to-call from Bitrix24, messages and emails on the
timeline, the portal down and back, token renewal, a bad user, an inbound webhook."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from switchboard import ConfigError
from switchboard.testing import CrmRig, RunningService, crm_rig, make_config, until
from switchboard_bitrix24 import Bitrix24Plugin, Bitrix24Settings
from switchboard_bitrix24.tables import install_t
from switchboard_bitrix24.testing import Bitrix24, bitrix24, settings

OLGA = "+74951234567"
#: The CRM answers the pop's lookup in time (the slow-CRM test has the default 80 ms).
PATIENT = {"resolve_timeout": 5.0}


@pytest.fixture
def portal() -> Iterator[Bitrix24]:
    with bitrix24() as stand_in:
        yield stand_in


def rig(
    start: Callable[..., RunningService], portal: Bitrix24, *, install: bool = True, **more: Any
) -> CrmRig:
    core = more.pop("core", None)
    r = crm_rig(start, Bitrix24Plugin(), settings(portal, **more), core=core)
    if install and "webhook" not in more:
        answer = httpx.post(
            r.service.url + "/bitrix24/install",
            content=portal.install_form(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200, answer.text
    return r


def form_post(r: CrmRig, path: str, body: bytes) -> httpx.Response:
    return httpx.post(
        r.service.url + path,
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )


def test_an_inbound_call_pops_bitrix24s_card_finishes_and_gets_its_recording(
    switchboard_service: Callable[..., RunningService], portal: Bitrix24
) -> None:
    olga = portal.add_contact("Olga", "Petrova", phones=("8 495 123-45-67",), assigned=2)
    r = rig(switchboard_service, portal, core=PATIENT)
    call_id = r.inbound_call(OLGA, agent="anna", ring_for=("anna", "boris"))
    (registered,) = until(lambda: portal.called("telephony.externalcall.register"))
    assert registered["USER_ID"] == 1 and registered["PHONE_NUMBER"] == OLGA
    assert registered["TYPE"] == 2 and registered["SHOW"] == 0
    call = until(lambda: [c for c in portal.calls.values() if c["records"]], within=15)[0]
    assert call["shown"] == [1, 2]  # the card popped for both agents it rang for
    assert call["hidden"] == [2]  # and went away for boris once anna answered
    assert call["finished"]["STATUS_CODE"] == "200" and call["finished"]["USER_ID"] == 1
    recording = r.service.call(r.sb.call(call_id)).recording
    assert recording is not None
    with open(recording.path, "rb") as f:
        assert call["records"][0]["content"] == f.read()
    # Bitrix24 linked it to Olga's contact; our contact took her name and owner
    assert r.service.call(
        r.sb.transaction(
            lambda c: c.execute(
                sa.text("SELECT data FROM bitrix24_link WHERE kind = 'call'")
            ).scalar(),
            write=False,
        )
    )
    contact = r.service.call(r.sb.contact(r.service.call(r.sb.call(call_id)).contact_id))
    assert (contact.name, contact.owner_agent_id) == ("Olga Petrova", r.agent("boris").id)
    assert olga in portal.contacts
    # redelivered: nothing registered, shown or finished twice
    consumer = r.consumer("bitrix24")
    until(lambda: consumer.lag() == 0)
    for event in r.sb.events.read_since(0, 100):
        if event.type.startswith("call."):
            r.service.call(consumer.handle(event))
    assert len(portal.called("telephony.externalcall.register")) == 1
    assert len(portal.called("telephony.externalcall.finish")) == 1
    assert len(portal.called("telephony.externalCall.attachRecord")) == 1


def test_an_unknown_callers_missed_call_makes_a_lead(
    switchboard_service: Callable[..., RunningService], portal: Bitrix24
) -> None:
    r = rig(switchboard_service, portal)
    r.inbound_call("+74957654321", agent=None, ring_for=("boris",))
    finished = until(lambda: portal.called("telephony.externalcall.finish"))[0]
    assert finished["STATUS_CODE"] == "304" and finished["USER_ID"] == 2
    assert [lead["PHONE"] for lead in portal.leads.values()] == ["+74957654321"]
    assert portal.called("telephony.externalCall.attachRecord") == []


def test_click_to_call_from_bitrix24_rings_the_agent_and_finishes_bitrix24s_call(
    switchboard_service: Callable[..., RunningService], portal: Bitrix24
) -> None:
    r = rig(switchboard_service, portal)
    # the connector bound OnExternalCallStart to our handler once it checked the users
    r.receive(r.email, "ivan@example.com", "hello")
    binding = until(lambda: portal.bindings)[0]
    assert binding == {
        "event": "ONEXTERNALCALLSTART",
        "handler": "http://switchboard.test/bitrix24/events",
    }
    crm_call, form = portal.call_start_form(1, "+7 (495) 765-43-21")
    answer = form_post(r, "/bitrix24/events", form)
    assert answer.status_code == 200, answer.text
    ours = answer.json()["call_id"]
    ((agent, address, dialed),) = r.voice.dialed
    assert (agent.name, str(address), dialed) == ("anna", "phone:+74957654321", ours)
    ctx = r.voice.ctx
    assert ctx is not None
    r.service.call(ctx.calls.answered("voice", ours, r.agent("anna")))
    r.service.call(ctx.calls.ended("voice", ours))
    until(lambda: portal.calls[crm_call]["finished"])
    assert portal.calls[crm_call]["finished"]["STATUS_CODE"] == "200"
    assert portal.called("telephony.externalcall.register") == []  # Bitrix24's own call
    # a post without the application's token places nothing
    _, forged = portal.call_start_form(1, "+74950000001", application_token="guess")
    assert form_post(r, "/bitrix24/events", forged).status_code == 403
    _, unknown = portal.call_start_form(3, "+74950000001")  # user 3 is no agent
    assert form_post(r, "/bitrix24/events", unknown).status_code == 422
    assert len(r.voice.dialed) == 1


def test_an_installation_for_another_portal_or_with_a_bad_token_is_refused(
    switchboard_service: Callable[..., RunningService], portal: Bitrix24
) -> None:
    r = rig(switchboard_service, portal, install=False)
    elsewhere = portal.install_form(endpoint="http://169.254.169.254/rest/")
    assert form_post(r, "/bitrix24/install", elsewhere).status_code == 403
    made_up = portal.install_form(token="made-up")
    assert form_post(r, "/bitrix24/install", made_up).status_code == 403
    assert form_post(r, "/bitrix24/install", b"event=ONAPPINSTALL").status_code == 422
    assert form_post(r, "/bitrix24/install", b"x" * 70_000).status_code == 413
    # until installed, events wait and health says why
    r.receive(r.email, "ivan@example.com", "held")
    consumer = r.consumer("bitrix24")
    assert "not installed yet" in until(lambda: consumer.health()["last_error"])
    assert form_post(r, "/bitrix24/install", portal.install_form()).status_code == 200
    until(lambda: portal.comments, within=20)


def test_an_email_and_a_telegram_message_are_timeline_comments(
    switchboard_service: Callable[..., RunningService], portal: Bitrix24
) -> None:
    ivan = portal.add_contact("Ivan", emails=("ivan@example.com",))
    r = rig(switchboard_service, portal)
    r.receive(r.email, "ivan@example.com", "Send the invoice", subject="Invoice")
    r.receive(r.telegram, "telegram:5550001", "Hi from Telegram")
    comments = until(lambda: len(portal.comments) == 2 and portal.comments)
    assert comments[0]["ENTITY_ID"] == ivan
    assert comments[0]["COMMENT"].splitlines() == [
        "email ← email:ivan@example.com",
        "Subject: Invoice",
        "Send the invoice",
    ]
    assert portal.contacts[comments[1]["ENTITY_ID"]]["NAME"] == "5550001"


def test_the_portal_down_then_back_and_a_renewed_token_lose_nothing(
    switchboard_service: Callable[..., RunningService], portal: Bitrix24
) -> None:
    portal.add_contact("Ivan", emails=("ivan@example.com",))
    r = rig(switchboard_service, portal)
    r.receive(r.email, "ivan@example.com", "first")
    until(lambda: len(portal.comments) == 1)
    portal.down = True
    for n in range(3):
        r.receive(r.email, "ivan@example.com", f"while down {n}")
    consumer = r.consumer("bitrix24")
    until(lambda: consumer.attempts >= 2)
    portal.fail_next(503, "QUERY_LIMIT_EXCEEDED")
    portal.down = False
    until(lambda: len(portal.comments) == 4, within=20)
    before = r.service.call(
        r.sb.transaction(
            lambda c: c.execute(sa.select(install_t.c.refresh_token)).scalar_one(), write=False
        )
    )
    portal.expire_tokens()  # the hour is up: 401 expired_token, renewed, rotated
    r.receive(r.email, "ivan@example.com", "after renewal")
    until(lambda: len(portal.comments) == 5)
    after = r.service.call(
        r.sb.transaction(
            lambda c: c.execute(sa.select(install_t.c.refresh_token)).scalar_one(), write=False
        )
    )
    assert portal.renewed == 1 and after != before and before not in portal.refresh_tokens
    assert [c["COMMENT"].splitlines()[-1] for c in portal.comments] == [
        "first",
        "while down 0",
        "while down 1",
        "while down 2",
        "after renewal",
    ]


def test_an_unknown_user_is_named_and_a_webhook_cannot_push_calls(
    switchboard_service: Callable[..., RunningService], portal: Bitrix24, tmp_path: Any
) -> None:
    del portal.users[2]
    r = rig(switchboard_service, portal)
    r.receive(r.email, "ivan@example.com", "held")
    consumer = r.consumer("bitrix24")
    assert "boris (user 2)" in until(lambda: consumer.health()["last_error"])
    with pytest.raises(ConfigError, match=r"telephony\.externalcall"):
        make_config(
            tmp_path,
            {
                "switchboard": {"agents": [{"name": "anna"}]},
                "plugins": {
                    "bitrix24": {"portal_url": portal.url, "webhook_url": portal.webhook_url}
                },
            },
            {"bitrix24": Bitrix24Settings},
        )


def test_an_inbound_webhook_logs_messages(
    switchboard_service: Callable[..., RunningService], portal: Bitrix24
) -> None:
    portal.add_contact("Ivan", emails=("ivan@example.com",))
    r = rig(switchboard_service, portal, webhook=True)
    r.receive(r.email, "ivan@example.com", "through the webhook")
    assert until(lambda: portal.comments)[0]["COMMENT"].endswith("through the webhook")
