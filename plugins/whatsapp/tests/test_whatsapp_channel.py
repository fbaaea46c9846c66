"""The WhatsApp channel end to end: signed webhooks posted to a running runner, sends
answered by the loopback Graph API stand-in (written from Meta's Cloud API reference)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from wa_peers import api, post_webhook, whatsapp_service

from switchboard import Address, InteractionStatus
from switchboard.testing import RunningService
from switchboard_whatsapp import WEBHOOK_PATH
from switchboard_whatsapp.testing import (
    VERIFY_TOKEN,
    GraphApi,
    graph_api,
    profile,
    text_message,
    webhook_body,
)

OLGA = "12025550143"


@pytest.fixture
def graph() -> Iterator[GraphApi]:
    with graph_api() as g:
        yield g


@pytest.fixture
def service(tmp_path: Path, graph: GraphApi, db_url: str) -> Iterator[RunningService]:
    with whatsapp_service(tmp_path, graph, db_url, max_file_bytes=1024) as running:
        yield running


def until(check: Any, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def timeline(service: RunningService, contact_id: int) -> list[Any]:
    return service.switchboard.store.timeline(contact_id)


def test_the_subscription_handshake_echoes_the_challenge(service: RunningService) -> None:
    url = service.url + WEBHOOK_PATH
    ok = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    answer = __import__("httpx").get(url, params=ok)
    assert answer.status_code == 200 and answer.text == "1158201444"
    wrong = {**ok, "hub.verify_token": "guess"}
    assert __import__("httpx").get(url, params=wrong).status_code == 403


def test_a_signed_message_is_stored_once_and_unsigned_ones_not_at_all(
    service: RunningService,
) -> None:
    body = webhook_body(
        messages=[text_message(OLGA, "Hello / привет", ident="wamid.A1")],
        contacts=[profile(OLGA, "Olga")],
    )
    assert post_webhook(service, body, sig=None).status_code == 403
    assert post_webhook(service, body, sig="sha256=" + "0" * 64).status_code == 403
    tampered = body.replace(b"Hello", b"Jello")
    assert post_webhook(service, tampered, sig=post_sig(body)).status_code == 403
    sb = service.switchboard
    assert sb.store.find_contact(Address("phone", f"+{OLGA}")) is None  # nothing stored
    assert post_webhook(service, body).status_code == 200
    assert post_webhook(service, body).status_code == 200  # Meta's retry: stored once
    contact = sb.store.find_contact(Address("phone", f"+{OLGA}"))
    assert contact is not None and contact.name == "Olga"
    [item] = timeline(service, contact.id or 0)
    assert (item.channel, item.text, item.external_id) == ("whatsapp", "Hello / привет", "wamid.A1")
    not_wa = b'{"object": "page", "entry": []}'
    assert post_webhook(service, not_wa).status_code == 422


def post_sig(body: bytes) -> str:
    from switchboard_whatsapp.testing import signature

    return signature(body)


def test_a_message_from_a_number_that_called_lands_on_that_card(service: RunningService) -> None:
    sb = service.switchboard
    caller = service.call(sb.create_contact("Ivan Petrov", [Address("phone", f"+{OLGA}")]))
    body = webhook_body(
        messages=[text_message(OLGA, "About yesterday's call")], contacts=[profile(OLGA, "Vanya")]
    )
    assert post_webhook(service, body).status_code == 200
    found = sb.store.find_contact(Address("phone", f"+{OLGA}"))
    assert found is not None and found.id == caller.id and found.name == "Ivan Petrov"
    assert [i.text for i in timeline(service, caller.id or 0)] == ["About yesterday's call"]


def test_every_kind_of_message_is_kept_and_hostile_parts_trimmed(
    service: RunningService, graph: GraphApi, tmp_path: Path
) -> None:
    small = graph.add_media(b"\xff\xd8 a small jpeg", "image/jpeg")
    big = graph.add_media(b"x" * 2048, "application/pdf")
    named = graph.add_media(b"%PDF small", "application/pdf")
    sender = "14155550100"
    base = {"from": sender, "timestamp": str(int(time.time()))}
    messages = [
        {**base, "id": "m-img", "type": "image", "image": {"id": small, "caption": "the receipt"}},
        {
            **base,
            "id": "m-doc",
            "type": "document",
            "document": {"id": big, "filename": "big.pdf", "mime_type": "application/pdf"},
        },
        {
            **base,
            "id": "m-named",
            "type": "document",
            "document": {"id": named, "filename": "../../etc/passwd"},
        },
        {
            **base,
            "id": "m-loc",
            "type": "location",
            "location": {"latitude": 55.75, "longitude": 37.62, "name": "Office"},
        },
        {
            **base,
            "id": "m-card",
            "type": "contacts",
            "contacts": [{"name": {"formatted_name": "Anna"}, "phones": [{"phone": "+7 495 1"}]}],
        },
        {
            **base,
            "id": "m-btn",
            "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
        },
        {
            **base,
            "id": "m-react",
            "type": "reaction",
            "reaction": {"message_id": "x", "emoji": "👍"},
        },
        {**base, "id": "m-new", "type": "poll_v9", "poll_v9": {"q": "?"}},
        {**base, "id": "m-nul", "type": "text", "text": {"body": "a\x00b" + "z" * 5000}},
    ]
    name = "N\x00" + "x" * 500
    body = webhook_body(messages=messages, contacts=[profile(sender, name)])
    assert post_webhook(service, body).status_code == 200
    sb = service.switchboard
    contact = sb.store.find_contact(Address("phone", f"+{sender}"))
    assert contact is not None and "\x00" not in contact.name and len(contact.name) <= 300
    items = {i.external_id: i for i in timeline(service, contact.id or 0)}
    assert len(items) == 9
    image = items["m-img"].meta["attachment"]
    assert items["m-img"].text == "the receipt"
    assert Path(image["path"]).read_bytes() == b"\xff\xd8 a small jpeg"
    assert Path(image["path"]).is_relative_to(tmp_path)
    doc = items["m-doc"].meta["attachment"]
    assert doc["skipped"].startswith("larger than max_file_bytes") and "path" not in doc
    kept = Path(items["m-named"].meta["attachment"]["path"])  # our folder, a cleaned name
    assert kept.is_relative_to(tmp_path) and kept.read_bytes() == b"%PDF small"
    assert ".." not in kept.name
    assert items["m-loc"].meta["location"]["latitude"] == 55.75 and items["m-loc"].text == "Office"
    assert items["m-card"].meta["contacts"] == [{"name": "Anna", "phones": ["+7 495 1"]}]
    assert items["m-btn"].text == "Yes" and items["m-btn"].meta["reply"]["id"] == "yes"
    assert items["m-react"].text == "👍" and items["m-react"].meta["reaction_to"] == "x"
    assert items["m-new"].text == "[poll_v9 message]" and items["m-new"].meta["unsupported"]
    assert items["m-nul"].text is not None
    assert "\x00" not in items["m-nul"].text and len(items["m-nul"].text) == 4096


def test_the_window_rule_both_ways_and_templates_outside_it(
    service: RunningService, graph: GraphApi
) -> None:
    sb = service.switchboard
    with api(service.url) as c:
        refused = c.post(
            "/api/messages", json={"channel": "whatsapp", "address": f"+{OLGA}", "text": "Hi"}
        )
        assert refused.status_code == 422 and "template" in refused.json()["detail"]
        assert sb.outbox.depth() == 0  # refused, not queued
        # a template goes outside the window
        template = {
            "name": "order_update",
            "language": "en_US",
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Olga"}]}],
        }
        service.call(
            sb.outbox.enqueue(
                "whatsapp", address=f"+{OLGA}", payload={"whatsapp_template": template}
            )
        )
        until(lambda: graph.sent)
        assert graph.sent[0]["type"] == "template"
        assert graph.sent[0]["template"]["name"] == "order_update"
        assert graph.sent[0]["template"]["language"] == {"code": "en_US"}
        assert graph.sent[0]["template"]["components"] == template["components"]
        # the customer writes: now free text goes
        post_webhook(service, webhook_body(messages=[text_message(OLGA, "ok")]))
        sent = c.post(
            "/api/messages", json={"channel": "whatsapp", "address": f"+{OLGA}", "text": "Hi!"}
        )
        assert sent.status_code == 202
    until(lambda: len(graph.sent) == 2)
    assert graph.sent[1]["type"] == "text" and graph.sent[1]["text"]["body"] == "Hi!"
    assert graph.sent[1]["to"] == OLGA


def test_statuses_move_a_message_forward_or_fail_it_with_metas_reason(
    service: RunningService, graph: GraphApi
) -> None:
    sb = service.switchboard
    post_webhook(service, webhook_body(messages=[text_message(OLGA, "hi")]))
    with api(service.url) as c:
        ids = [
            c.post(
                "/api/messages", json={"channel": "whatsapp", "address": f"+{OLGA}", "text": t}
            ).json()["id"]
            for t in ("one", "two")
        ]
    until(lambda: len(graph.sent) == 2)

    def status_of(i: int) -> InteractionStatus:
        found = sb.store.get_interaction(i)
        assert found is not None
        return found.status

    until(lambda: all(status_of(i) is InteractionStatus.SENT for i in ids))
    first, second = (s["id"] for s in graph.sent)
    now = str(int(time.time()))
    statuses = [
        {"status": "read"},  # no id: quarantined, the others still count
        {"id": first, "status": "delivered", "timestamp": now, "recipient_id": OLGA},
        {"id": first, "status": "read", "timestamp": now, "recipient_id": OLGA},
        {"id": first, "status": "delivered", "timestamp": now, "recipient_id": OLGA},  # late
        {  # a failed status: no "contacts" block, as Meta may send it
            "id": second,
            "status": "failed",
            "timestamp": now,
            "recipient_id": OLGA,
            "errors": [
                {
                    "code": 131026,
                    "title": "Message undeliverable",
                    "error_data": {"details": "the number is not on WhatsApp"},
                }
            ],
        },
    ]
    assert post_webhook(service, webhook_body(statuses=statuses)).status_code == 200
    assert status_of(ids[0]) is InteractionStatus.READ
    failed = sb.store.get_interaction(ids[1])
    assert failed is not None and failed.status is InteractionStatus.FAILED
    assert failed.error == "131026 Message undeliverable: the number is not on WhatsApp"
    with api(service.url) as c:
        [bad] = c.get("/api/quarantine").json()["items"]
    assert bad["reason"] == "a status without an id"


def test_rate_limits_are_retried_and_re_engagement_fails_with_metas_text(
    service: RunningService, graph: GraphApi
) -> None:
    sb = service.switchboard
    post_webhook(service, webhook_body(messages=[text_message(OLGA, "hi")]))
    graph.fail_next("messages", 130429, "Rate limit hit", status=429, times=2)
    with api(service.url) as c:
        slow = c.post(
            "/api/messages", json={"channel": "whatsapp", "address": f"+{OLGA}", "text": "a"}
        ).json()["id"]
    until(lambda: graph.sent)
    found = sb.store.get_interaction(slow)
    until(lambda: (found := sb.store.get_interaction(slow)) and found.status.value == "sent")
    graph.fail_next(
        "messages",
        131047,
        "Re-engagement message",
        details="Message failed to send because more than 24 hours have passed",
    )
    with api(service.url) as c:
        late = c.post(
            "/api/messages", json={"channel": "whatsapp", "address": f"+{OLGA}", "text": "b"}
        ).json()["id"]
    until(lambda: (found := sb.store.get_interaction(late)) and found.status.value == "failed")
    found = sb.store.get_interaction(late)
    assert found is not None and found.error is not None
    assert found.error.startswith("131047 Re-engagement message: Message failed to send")
    assert len(graph.sent) == 1


def test_a_refused_token_shows_the_channel_failing(tmp_path: Path, graph: GraphApi) -> None:
    with whatsapp_service(tmp_path, graph, access_token="expired-token") as running:
        with api(running.url) as c:
            health = c.get("/api/health").json()
        state = health["channels"]["whatsapp"]
        assert state["state"] == "failing"
        assert "190" in state["last_error"] and "expired-token" not in str(health)


def test_a_status_that_comes_before_the_send_is_recorded_applies_then(
    service: RunningService, graph: GraphApi
) -> None:
    sb = service.switchboard
    post_webhook(service, webhook_body(messages=[text_message(OLGA, "hi")]))
    coming = graph.reserve_id()
    now = str(int(time.time()))
    early = [{"id": coming, "status": "read", "timestamp": now, "recipient_id": OLGA}]
    assert post_webhook(service, webhook_body(statuses=early)).status_code == 200
    with api(service.url) as c:
        sent = c.post(
            "/api/messages", json={"channel": "whatsapp", "address": f"+{OLGA}", "text": "x"}
        ).json()["id"]
    until(lambda: (i := sb.store.get_interaction(sent)) and i.status is InteractionStatus.READ)


def test_a_template_of_ours_fills_metas_approved_one_outside_the_window(
    tmp_path: Path, graph: GraphApi
) -> None:
    templates = {
        "order_update": {
            "text": "Hello {{ contact.name }}, order {{ order }} has shipped.",
            "channels": {
                "whatsapp": {
                    "whatsapp_template": {
                        "name": "order_update",
                        "language": "en_US",
                        "components": [
                            {
                                "type": "body",
                                "parameters": [
                                    {"type": "text", "text": "{{ contact.name }}"},
                                    {"type": "text", "text": "{{ order }}"},
                                ],
                            }
                        ],
                    }
                }
            },
        }
    }
    with whatsapp_service(tmp_path, graph, templates=templates) as service:
        sb = service.switchboard
        olga = service.call(sb.create_contact("Olga", [Address("phone", f"+{OLGA}")]))
        with api(service.url) as c:
            body = {"channel": "whatsapp", "contact_id": olga.id, "template": "order_update"}
            missing = c.post("/api/messages", json=body)
            assert missing.status_code == 422 and "order" in missing.text
            sent = c.post("/api/messages", json={**body, "variables": {"order": "A-1042"}})
            assert sent.status_code == 202  # outside the window: a template goes
        until(lambda: graph.sent)
        [out] = graph.sent
        assert out["type"] == "template" and out["template"]["name"] == "order_update"
        params = out["template"]["components"][0]["parameters"]
        assert [p["text"] for p in params] == ["Olga", "A-1042"]
        stored = sb.store.get_interaction(sent.json()["id"])
        assert stored is not None and stored.text == "Hello Olga, order A-1042 has shipped."


def test_the_contact_shows_when_its_window_ends(service: RunningService) -> None:
    sb = service.switchboard
    olga = service.call(sb.create_contact("Olga", [Address("phone", f"+{OLGA}")]))
    with api(service.url) as c:
        assert c.get(f"/api/contacts/{olga.id}").json()["windows"] == {"whatsapp": None}
        post_webhook(service, webhook_body(messages=[text_message(OLGA, "hello")]))
        end = c.get(f"/api/contacts/{olga.id}").json()["windows"]["whatsapp"]
    hours = (datetime.fromisoformat(end) - datetime.now(UTC)).total_seconds() / 3600
    assert 23.9 < hours <= 24.0


def test_a_status_of_a_message_not_ours_is_forgotten_after_an_hour(
    service: RunningService,
) -> None:
    from switchboard_whatsapp.tables import early_status_t

    sb = service.switchboard
    now = str(int(time.time()))
    others = [{"id": "wamid.NOT-OURS", "status": "delivered", "timestamp": now}]
    post_webhook(service, webhook_body(statuses=others))

    def kept() -> list[str]:
        with sb.store.read() as conn:
            return list(conn.execute(sa.select(early_status_t.c.message_id)).scalars())

    assert kept() == ["wamid.NOT-OURS"]  # it may still be one of ours being recorded
    with sb.store.write() as conn:  # an hour passes
        conn.execute(sa.update(early_status_t).values(at=time.time() - 3601))
    post_webhook(service, webhook_body(messages=[text_message(OLGA, "anything")]))
    until(lambda: kept() == [])  # expired after the reader's next batch


def test_sends_through_the_outbox_keep_the_configured_pace(tmp_path: Path, graph: GraphApi) -> None:
    templates = {
        "note": {
            "text": "Your order shipped",
            "channels": {"whatsapp": {"whatsapp_template": {"name": "note", "language": "en_US"}}},
        }
    }
    graph.throttle_every = 7  # Meta's 130429 now and then: retried, nothing lost
    with whatsapp_service(tmp_path, graph, templates=templates, messages_per_second=20) as running:
        with api(running.url) as c:
            for i in range(30):
                body = {"channel": "whatsapp", "address": f"+1202555{i:04d}", "template": "note"}
                assert c.post("/api/messages", json=body).status_code == 202
        until(lambda: len(graph.sent) == 30, within=20)
    times = sorted(t for t, _ in graph.attempts)
    assert len(times) >= 34  # every 7th attempt was answered 429 and retried
    assert sorted(s["to"] for s in graph.sent) == [f"1202555{i:04d}" for i in range(30)]
    # at 20 a second the attempts cannot take less than (n - 1) / 20 seconds
    assert times[-1] - times[0] >= (len(times) - 1) / 20 * 0.95


def test_media_upload_links_and_interactive_menus_go_out_and_bad_ones_are_refused(
    service: RunningService, graph: GraphApi
) -> None:
    from switchboard import Invalid

    sb = service.switchboard
    post_webhook(service, webhook_body(messages=[text_message(OLGA, "send me the invoice")]))
    files = Path(sb.config.core.recordings_dir).parent / "whatsapp-files"
    files.mkdir(parents=True, exist_ok=True)
    (files / "invoice.pdf").write_bytes(b"%PDF-1.4 invoice")

    def queue(text: str | None, payload: dict[str, Any]) -> int:
        return service.call(
            sb.outbox.enqueue("whatsapp", address=f"+{OLGA}", text=text, payload=payload)
        ).id

    queue("Your invoice", {"media": {"kind": "document", "path": str(files / "invoice.pdf")}})
    queue("Our shop", {"media": {"kind": "image", "link": "https://example.com/shop.jpg"}})
    queue(
        "Did it arrive?",
        {"interactive": {"buttons": [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]}},
    )
    queue(
        "Pick a time",
        {
            "interactive": {
                "header": "Delivery",
                "list": {
                    "button": "Times",
                    "sections": [
                        {"rows": [{"id": "am", "title": "Morning", "description": "9-12"}]}
                    ],
                },
            }
        },
    )
    until(lambda: len(graph.sent) == 4)
    sent = {b["type"] + b.get("interactive", {}).get("type", ""): b for b in graph.sent}
    document, image, buttons, menu = (
        sent[k] for k in ("document", "image", "interactivebutton", "interactivelist")
    )
    [upload] = graph.uploads
    assert upload["filename"] == "invoice.pdf" and upload["size"] == 16
    assert graph.media[upload["id"]][0] == b"%PDF-1.4 invoice"
    assert document["type"] == "document" and document["document"]["id"] == upload["id"]
    assert document["document"]["filename"] == "invoice.pdf"
    assert document["document"]["caption"] == "Your invoice"
    assert image["image"] == {"link": "https://example.com/shop.jpg", "caption": "Our shop"}
    assert buttons["type"] == "interactive" and buttons["interactive"]["type"] == "button"
    assert [b["reply"] for b in buttons["interactive"]["action"]["buttons"]] == [
        {"id": "yes", "title": "Yes"},
        {"id": "no", "title": "No"},
    ]
    assert menu["interactive"]["type"] == "list"
    assert menu["interactive"]["header"] == {"type": "text", "text": "Delivery"}
    assert menu["interactive"]["action"]["button"] == "Times"
    assert menu["interactive"]["action"]["sections"][0]["rows"][0]["id"] == "am"

    outside = files / "escape"
    outside.symlink_to("/etc/hostname")
    refused = [
        {"media": {"kind": "document", "path": "/etc/hostname"}},  # outside our folders
        {"media": {"kind": "document", "path": str(outside)}},  # a link out of them
        {"media": {"kind": "document", "path": str(files / "../whatsapp-files/none.pdf")}},
        {"media": {"kind": "image", "link": "/etc/hostname"}},  # pywa would upload a path
        {"media": {"kind": "image", "link": "file:///etc/hostname"}},
        {"media": {"kind": "exe", "link": "https://example.com/x"}},
        {"interactive": {"buttons": [{"id": str(i), "title": "b"} for i in range(4)]}},
        {"interactive": {"buttons": [{"id": "x", "title": "a title far over twenty"}]}},
        {"interactive": {"list": {"button": "Go", "sections": [{"rows": []}]}}},
        {"interactive": "menu"},
    ]
    for payload in refused:
        with pytest.raises(Invalid):
            queue("no", payload)
    time.sleep(0.3)
    assert len(graph.sent) == 4 and len(graph.uploads) == 1
