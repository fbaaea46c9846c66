"""The MAX channel end to end: updates by long polling and by webhook to a running runner,
sends answered by the loopback MAX Bot API stand-in (written from MAX's API reference)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from max_peers import api, max_service, post_webhook, until

from switchboard import Address, InteractionStatus
from switchboard.testing import RunningService
from switchboard_max.tables import state_t
from switchboard_max.testing import (
    SECRET,
    MaxApiStandIn,
    contact,
    max_api,
    message_callback,
    message_created,
)

IVAN = 7001


@pytest.fixture
def mx() -> Iterator[MaxApiStandIn]:
    with max_api() as api_:
        yield api_


def timeline_of(service: RunningService, address: str) -> list[Any]:
    sb = service.switchboard
    found = sb.store.find_contact(sb.addresses.parse(address))
    return sb.store.timeline(found.id) if found else []


def test_long_polling_stores_messages_files_and_edits_and_saves_its_marker(
    tmp_path: Path, mx: MaxApiStandIn, db_url: str
) -> None:
    with max_service(tmp_path, mx, db_url, max_file_bytes=1000) as service:
        files = [
            {
                "type": "image",
                "payload": {"photo_id": 1, "token": "t", "url": mx.add_file("p.jpg", b"JPG")},
            },
            {
                "type": "file",
                "filename": "../../договор.pdf",
                "size": 9,
                "payload": {"url": mx.add_file("d.pdf", b"%PDF-1.4 ")},
            },
            {
                "type": "file",
                "filename": "big.iso",
                "size": 10**9,
                "payload": {"url": mx.add_file("b", b"x")},
            },
            {"type": "audio", "payload": {"url": mx.add_file("v.ogg", b"OggS")}},
            {"type": "sticker", "payload": {"url": f"{mx.url}/files/none", "code": "s1"}},
            {"type": "location", "latitude": 55.75, "longitude": 37.61},
        ]
        mx.push(
            message_created(IVAN, "Здравствуйте", "mid.1"),
            message_created(IVAN, "the contract", "mid.2", attachments=files),
            {"update_type": "bot_started", "timestamp": 1, "user": {"user_id": IVAN}},
        )
        items = until(
            lambda: (
                len(timeline_of(service, f"max:{IVAN}")) == 2
                and timeline_of(service, f"max:{IVAN}")
            )
        )
        sb = service.switchboard
        card = sb.store.find_contact(Address("max", str(IVAN)))
        assert card is not None and card.name == "Ivan Petrov"
        meta = {i.text: i for i in items}["the contract"].meta
        photo, doc, big, voice, sticker = meta["attachments"]
        assert Path(photo["path"]).read_bytes() == b"JPG"
        assert (
            Path(doc["path"]).name == "договор.pdf"
            and Path(doc["path"]).read_bytes() == b"%PDF-1.4 "
        )
        assert big["skipped"] == "larger than max_file_bytes (1000)"
        assert Path(voice["path"]).read_bytes() == b"OggS"
        assert sticker["error"].startswith("download failed")
        assert meta["location"] == {"latitude": 55.75, "longitude": 37.61}

        def marker() -> str | None:
            with sb.store.read() as conn:
                query = sa.select(state_t.c.value).where(state_t.c.name == "marker")
                return conn.execute(query).scalar()

        assert until(lambda: marker() == "3")  # after the three updates, stored
        mx.push(
            message_created(IVAN, "the contract, signed", "mid.2", update_type="message_edited")
        )
        until(
            lambda: any(
                i.text == "the contract, signed" for i in timeline_of(service, f"max:{IVAN}")
            )
        )
        assert len(timeline_of(service, f"max:{IVAN}")) == 2


def test_a_restart_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, mx: MaxApiStandIn
) -> None:
    with max_service(tmp_path, mx) as service:
        mx.push(*(message_created(IVAN, f"m{i}", f"mid.{i}") for i in range(1, 6)))
        until(lambda: len(timeline_of(service, f"max:{IVAN}")) == 5)
    mx.push(*(message_created(IVAN, f"m{i}", f"mid.{i}") for i in range(6, 11)))
    with max_service(tmp_path, mx) as service:
        until(lambda: len(timeline_of(service, f"max:{IVAN}")) == 10)
        texts = sorted(i.text for i in timeline_of(service, f"max:{IVAN}"))
    assert texts == sorted(f"m{i}" for i in range(1, 11))


def test_a_user_sharing_their_own_contact_joins_the_card_of_that_number(
    tmp_path: Path, mx: MaxApiStandIn
) -> None:
    with max_service(tmp_path, mx) as service:
        sb = service.switchboard
        caller = service.call(
            sb.create_contact("Ivan (called)", [Address("phone", "+79161234567")])
        )
        mx.push(
            message_created(
                IVAN, None, "mid.c1", attachments=[contact("Ivan", "+7 916 123-45-67", IVAN)]
            )
        )
        mx.push(
            message_created(
                IVAN, None, "mid.c2", attachments=[contact("Olga", "+7 903 000-00-00", 8002)]
            )
        )
        until(lambda: len(timeline_of(service, "phone:+79161234567")) == 2)
        card = sb.store.find_contact(Address("max", str(IVAN)))
        assert card is not None and card.id == caller.id  # one card: the calls and MAX
        assert sb.store.find_contact(Address("phone", "+79030000000")) is None  # someone else's
        texts = sorted(i.text for i in timeline_of(service, "phone:+79161234567"))
        assert texts == ["Ivan +7 916 123-45-67", "Olga +7 903 000-00-00"]


def test_a_button_press_is_stored_and_answered_once(tmp_path: Path, mx: MaxApiStandIn) -> None:
    with max_service(tmp_path, mx) as service:
        mx.push(message_callback(IVAN, "cb-1", "slot:am", "mid.bot1"))
        mx.push(message_callback(IVAN, "cb-1", "slot:am", "mid.bot1"))  # sent again
        [item] = until(lambda: timeline_of(service, f"max:{IVAN}"))
        assert item.text == "slot:am" and item.meta["on_message"] == "mid.bot1"
        until(lambda: mx.answers)
        assert [a["callback_id"] for a in mx.answers] == ["cb-1"]


def test_webhook_mode_subscribes_checks_the_secret_and_keeps_before_200(
    tmp_path: Path, mx: MaxApiStandIn, db_url: str
) -> None:
    with max_service(tmp_path, mx, db_url, mode="webhook") as service:
        [subscription] = mx.subscriptions
        assert subscription["url"] == "https://crm.example.com/max/webhook"
        assert subscription["secret"] and "message_created" in subscription["update_types"]
        good = message_created(IVAN, "Hello from MAX", "mid.w1")
        for body, secret, status in [
            (good, "wrong-secret", 403),
            (good, None, 403),
            (b"{oops", SECRET, 400),
            (b'{"no": "type"}', SECRET, 422),
            (b"{" + b" " * 1_100_000 + b"}", SECRET, 413),
        ]:
            assert post_webhook(service, body, secret).status_code == status
        assert timeline_of(service, f"max:{IVAN}") == []
        for _ in range(2):
            assert post_webhook(service, good).status_code == 200
        hostile = message_created(IVAN, "x\x00" * 3000, "mid.w2")
        hostile["message"]["sender"]["user_id"] = "../../etc"
        assert post_webhook(service, hostile).status_code == 200
        long = message_created(IVAN, "я" * 9000, "mid.w3")
        assert post_webhook(service, long).status_code == 200
        texts = [i.text for i in timeline_of(service, f"max:{IVAN}")]
        assert sorted(texts) == sorted(["Hello from MAX", "я" * 4000])
        assert any("sender.user_id" in q.reason for q in service.switchboard.quarantine.list("max"))


def test_sends_go_as_typed_with_files_and_keyboards_and_errors_are_sorted(
    tmp_path: Path, mx: MaxApiStandIn
) -> None:
    with max_service(tmp_path, mx) as service:
        sb = service.switchboard
        mx.fail_next("POST /messages", 429, "too.many.requests", "Too many requests")
        with api(service.url) as c:
            first = c.post(
                "/api/messages",
                json={"channel": "max", "address": f"max:{IVAN}", "text": "*not bold* <b>x</b>"},
            ).json()["id"]
        until(lambda: sb.store.get_interaction(first).status is InteractionStatus.SENT)
        [sent] = mx.sent
        assert sent["text"] == "*not bold* <b>x</b>" and "format" not in sent
        assert sb.store.get_interaction(first).external_id == sent["mid"]

        mx.fail_next("POST /messages", 403, "chat.denied", "The user blocked the bot")
        with api(service.url) as c:
            refused = c.post(
                "/api/messages", json={"channel": "max", "address": f"max:{IVAN}", "text": "x"}
            ).json()["id"]
        until(lambda: sb.store.get_interaction(refused).status is InteractionStatus.FAILED)
        assert "chat.denied" in sb.store.get_interaction(refused).error

        folder = Path(sb.config.core.recordings_dir).parent / "max-files"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "offer.pdf").write_bytes(b"%PDF offer")
        (folder / "photo.png").write_bytes(b"PNG photo")
        keyboard = {"buttons": [[{"type": "callback", "text": "Yes", "payload": "yes"}]]}
        for name in ("offer.pdf", "photo.png"):
            service.call(
                sb.outbox.enqueue(
                    "max", address=f"max:{IVAN}", text=name, payload={"file": str(folder / name)}
                )
            )
        service.call(
            sb.outbox.enqueue(
                "max", address=f"max:{IVAN}", text="Pick", payload={"keyboard": keyboard}
            )
        )
        stray = service.call(
            sb.outbox.enqueue(
                "max", address=f"max:{IVAN}", text="x", payload={"file": "/etc/hostname"}
            )
        )
        bad = service.call(
            sb.outbox.enqueue(
                "max",
                address=f"max:{IVAN}",
                text="x",
                payload={"keyboard": {"buttons": [[{"type": "exe"}]]}},
            )
        )
        until(lambda: len(mx.sent) == 4)
        by_text = {s["text"]: s for s in mx.sent}
        offer_token = next(u["token"] for u in mx.uploads if u["name"] == "offer.pdf")
        assert by_text["offer.pdf"]["attachments"] == [
            {"type": "file", "payload": {"token": offer_token}}
        ]
        assert by_text["photo.png"]["attachments"][0]["type"] == "image"
        assert sorted(u["data"] for u in mx.uploads) == [b"%PDF offer", b"PNG photo"]
        assert by_text["Pick"]["attachments"] == [
            {"type": "inline_keyboard", "payload": {"buttons": keyboard["buttons"]}}
        ]
        until(lambda: sb.store.get_interaction(stray.id).status is InteractionStatus.FAILED)
        until(lambda: sb.store.get_interaction(bad.id).status is InteractionStatus.FAILED)
        assert "recordings folder" in sb.store.get_interaction(stray.id).error


def test_a_refused_token_shows_the_channel_failing(tmp_path: Path, mx: MaxApiStandIn) -> None:
    with (
        max_service(tmp_path, mx, token="max-expired-token-000000") as running,
        api(running.url) as c,
    ):
        health = c.get("/api/health").json()
    state = health["channels"]["max"]
    assert state["state"] == "failing" and "401 verify.token" in state["last_error"]
    assert "expired-token" not in json.dumps(health)
