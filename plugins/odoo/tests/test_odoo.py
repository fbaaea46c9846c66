"""The Odoo connector on a running runner, against a loopback Odoo JSON-RPC API written
from Odoo's external API docs: calls with recordings in the chatter, unknown callers as
partners and leads, messages and emails, Odoo down and back, a revoked key, a bad user,
an answer of the wrong shape, Odoo 16 (before ``body_is_html``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from switchboard.consumers import failure_t
from switchboard.testing import CrmRig, RunningService, crm_rig, until
from switchboard_odoo import OdooPlugin
from switchboard_odoo.testing import Odoo, odoo, settings

OLGA = "+74951234567"
#: The CRM answers the pop's lookup in time (the slow-CRM test has the default 80 ms).
PATIENT = {"resolve_timeout": 5.0}


@pytest.fixture
def server() -> Iterator[Odoo]:
    with odoo() as stand_in:
        yield stand_in


def rig(
    start: Callable[..., RunningService], server: Odoo, core: Any = None, **more: Any
) -> CrmRig:
    return crm_rig(start, OdooPlugin(), settings(server.url, **more), core=core)


def last_line(message: dict[str, Any]) -> str:
    return str(message["body"]).rsplit("<p>", 1)[-1].removesuffix("</p>")


def test_a_call_goes_to_the_partners_chatter_with_its_recording_attached(
    switchboard_service: Callable[..., RunningService], server: Odoo
) -> None:
    # the partner's number is stored as people type it; Odoo finds it by phone_sanitized
    olga = server.add_partner("Olga Petrova", phone="8 (495) 123-45-67", user=7)
    r = rig(switchboard_service, server, core=PATIENT)
    call_id = r.inbound_call(OLGA, agent="anna")
    note = until(lambda: server.messages, what="the call's note")[0]
    assert (note["model"], note["res_id"]) == ("res.partner", olga)
    assert note["subtype_xmlid"] == "mail.mt_note"
    assert note["body"].startswith(f"<p>Inbound call from {OLGA}: answered by Anna Sales")
    # the WAV itself, attached: the bytes Switchboard recorded
    (attachment_id,) = note["attachment_ids"]
    attachment = server.attachments[attachment_id]
    recording = r.service.call(r.sb.call(call_id)).recording
    assert recording is not None
    with open(recording.path, "rb") as f:
        assert attachment["raw"] == f.read()
    assert attachment["mimetype"] == "audio/wav"
    assert (attachment["res_model"], attachment["res_id"]) == ("res.partner", olga)
    # resolve_contact: the partner's name and salesperson (boris) on our contact
    contact = r.service.call(r.sb.contact(r.service.call(r.sb.call(call_id)).contact_id))
    assert (contact.name, contact.owner_agent_id) == ("Olga Petrova", r.agent("boris").id)
    assert server.executed("res.partner", "search_read")[0][2] == [[["phone_sanitized", "=", OLGA]]]


def test_an_unknown_caller_becomes_a_partner_and_a_lead(
    switchboard_service: Callable[..., RunningService], server: Odoo
) -> None:
    r = rig(switchboard_service, server, leads_for_unknown=True)
    r.inbound_call("+74957654321", agent=None, ring_for=("boris",))
    lead = until(lambda: server.leads, what="a lead")[0]
    (partner,) = [p for p in server.partners.values() if p["phone"] == "+74957654321"]
    assert lead["partner_id"] == partner["id"]
    assert lead["user_id"] == 7  # boris, whom it rang for
    assert lead["name"] == "Call from +74957654321"
    note = until(lambda: server.messages)[0]
    assert note["res_id"] == partner["id"] and ": missed" in note["body"]
    assert note["attachment_ids"] == []


def test_an_email_and_a_telegram_message_are_escaped_notes(
    switchboard_service: Callable[..., RunningService], server: Odoo
) -> None:
    ivan = server.add_partner("Ivan", email="Ivan@Example.com")
    r = rig(switchboard_service, server)
    r.receive(r.email, "ivan@example.com", "Price <b>list</b> & terms?", subject="Prices")
    r.receive(r.telegram, "telegram:5550001", "Hi\nfrom Telegram")
    notes = until(lambda: len(server.messages) == 2 and server.messages)
    assert notes[0]["res_id"] == ivan and notes[0]["subject"] == "Prices"
    # our text escaped once by us, not again by Odoo 17 (body_is_html): shown as typed
    assert last_line(notes[0]) == "Price &lt;b&gt;list&lt;/b&gt; &amp; terms?"
    assert notes[1]["body"].endswith("<p>Hi</p><p>from Telegram</p>")
    assert server.partners[notes[1]["res_id"]]["name"] == "5550001"


def test_odoo_down_then_back_gets_everything_once_in_order(
    switchboard_service: Callable[..., RunningService], server: Odoo
) -> None:
    server.add_partner("Ivan", email="ivan@example.com")
    r = rig(switchboard_service, server)
    r.receive(r.email, "ivan@example.com", "first")
    until(lambda: len(server.messages) == 1)
    server.down = True
    for n in range(5):
        r.receive(r.email, "ivan@example.com", f"while down {n}")
    consumer = r.consumer("odoo")
    until(lambda: consumer.attempts >= 2, what="retries while down")
    assert "503" in (consumer.health()["last_error"] or "")
    server.down = False
    until(lambda: len(server.messages) == 6, within=20)
    assert [last_line(m) for m in server.messages] == ["first"] + [
        f"while down {n}" for n in range(5)
    ]


def test_a_revoked_key_logs_in_again_once_then_fails_visibly(
    switchboard_service: Callable[..., RunningService], server: Odoo
) -> None:
    server.add_partner("Ivan", email="ivan@example.com")
    r = rig(switchboard_service, server)
    r.receive(r.email, "ivan@example.com", "one")
    until(lambda: len(server.messages) == 1)
    server.revoked = True
    r.receive(r.email, "ivan@example.com", "two")
    consumer = r.consumer("odoo")
    error = until(lambda: consumer.health()["last_error"], what="the login failing")
    assert "refused the login" in error and "api_key" in error
    server.revoked = False  # a new key in place: the held event goes
    until(lambda: len(server.messages) == 2, within=20)


def test_an_unknown_odoo_user_is_named(
    switchboard_service: Callable[..., RunningService], server: Odoo
) -> None:
    del server.users[7]
    r = rig(switchboard_service, server)
    r.receive(r.email, "ivan@example.com", "held")
    consumer = r.consumer("odoo")
    error = until(lambda: consumer.health()["last_error"])
    assert "Odoo has no such user for agent(s): boris (user 7)" in error
    assert server.messages == []


def test_an_answer_of_an_unexpected_shape_skips_that_item_only(
    switchboard_service: Callable[..., RunningService], server: Odoo
) -> None:
    server.add_partner("Ivan", email="ivan@example.com")
    r = rig(switchboard_service, server)
    r.receive(r.email, "ivan@example.com", "one")
    until(lambda: len(server.messages) == 1)
    server.garbage = 1
    r.receive(r.email, "ivan@example.com", "two")
    r.receive(r.email, "ivan@example.com", "three")
    until(lambda: len(server.messages) == 2)
    failures = r.service.call(
        r.sb.transaction(lambda c: c.execute(sa.select(failure_t)).all(), write=False)
    )
    assert len(failures) == 1 and "res.partner.message_post" in failures[0].error
    assert [last_line(m) for m in server.messages] == ["one", "three"]


def test_odoo_16_takes_the_body_as_html_without_body_is_html(
    switchboard_service: Callable[..., RunningService],
) -> None:
    with odoo(version=(16, 0)) as old:
        old.add_partner("Ivan", email="ivan@example.com")
        r = rig(switchboard_service, old)
        r.receive(r.email, "ivan@example.com", "a < b")
        note = until(lambda: old.messages)[0]
        assert "body_is_html" not in old.executed("res.partner", "message_post")[0][3]
        assert last_line(note) == "a &lt; b"
