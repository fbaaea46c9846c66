"""The VK channel end to end: updates by Bots Long Poll and by the Callback API to a running
runner, sends answered by the loopback VK API stand-in (written from VK's API reference)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from vk_peers import api, post_callback, until, vk_service

from switchboard import Address, InteractionStatus
from switchboard.events import event_t
from switchboard.testing import RunningService
from switchboard_vk import CALLBACK_PATH
from switchboard_vk.tables import state_t
from switchboard_vk.testing import (
    CONFIRMATION,
    GROUP_ID,
    SECRET,
    VkApiStandIn,
    message_new,
    reply,
    vk_api,
)

IVAN = 1001


@pytest.fixture
def vk() -> Iterator[VkApiStandIn]:
    with vk_api() as api_:
        api_.users[IVAN] = ("Ivan", "Petrov")
        yield api_


def timeline_of(service: RunningService, address: str) -> list[Any]:
    sb = service.switchboard
    contact = sb.store.find_contact(sb.addresses.parse(address))
    return sb.store.timeline(contact.id) if contact else []


def test_long_poll_stores_messages_with_files_and_saves_its_position(
    tmp_path: Path, vk: VkApiStandIn, db_url: str
) -> None:
    with vk_service(tmp_path, vk, db_url, max_file_bytes=1000) as service:
        photo = [
            {"type": "s", "url": vk.add_file("small.jpg", b"s"), "width": 75, "height": 75},
            {"type": "x", "url": vk.add_file("big.jpg", b"JPEG" * 10), "width": 604, "height": 604},
        ]
        files = [
            {"type": "photo", "photo": {"id": 1, "owner_id": IVAN, "sizes": photo}},
            {
                "type": "doc",
                "doc": {
                    "id": 2,
                    "title": "../../contract.pdf",
                    "size": 9,
                    "ext": "pdf",
                    "url": vk.add_file("c.pdf", b"%PDF-1.4 "),
                },
            },
            {
                "type": "doc",
                "doc": {
                    "id": 3,
                    "title": "huge.iso",
                    "size": 10**9,
                    "url": vk.add_file("h.iso", b"x"),
                },
            },
            {
                "type": "audio_message",
                "audio_message": {"duration": 3, "link_ogg": vk.add_file("v.ogg", b"OggS")},
            },
            {
                "type": "sticker",
                "sticker": {
                    "images": [{"url": f"{vk.url}/files/none.png", "width": 128, "height": 128}]
                },
            },
            {"type": "wall", "wall": {"id": 5}},
        ]
        vk.push(
            message_new(IVAN, "Здравствуйте! Hello", 1),
            message_new(IVAN, "the contract", 2, attachments=files),
            {"type": "group_join", "object": {"user_id": IVAN}, "group_id": GROUP_ID},
        )
        items = until(
            lambda: (
                len(timeline_of(service, f"vk:{IVAN}")) == 2 and timeline_of(service, f"vk:{IVAN}")
            )
        )
        sb = service.switchboard
        contact = sb.store.find_contact(Address("vk", str(IVAN)))
        assert contact is not None and contact.name == "Ivan Petrov"
        by_text = {i.text: i for i in items}
        assert by_text["Здравствуйте! Hello"].external_id == f"{IVAN}:1"
        got = by_text["the contract"].meta
        big, contract, huge, voice, sticker = got["attachments"]
        assert Path(big["path"]).read_bytes() == b"JPEG" * 10  # the largest size
        assert Path(contract["path"]).name == "contract.pdf"
        assert Path(contract["path"]).read_bytes() == b"%PDF-1.4 "
        assert huge["skipped"] == "larger than max_file_bytes (1000)" and "path" not in huge
        assert voice["mime_type"] == "audio/ogg" and Path(voice["path"]).read_bytes() == b"OggS"
        assert sticker["error"].startswith("download failed")
        assert got["unsupported"] == ["wall"]

        def saved() -> str | None:
            with sb.store.read() as conn:
                query = sa.select(state_t.c.value).where(state_t.c.name == "ts")
                return conn.execute(query).scalar()

        assert until(
            lambda: saved() == "3"
        )  # after the three updates, stored  # after the three updates, stored

        vk.push(message_new(IVAN, "the contract, signed", 2, event="message_edit"))
        until(
            lambda: any(
                i.text == "the contract, signed" for i in timeline_of(service, f"vk:{IVAN}")
            )
        )
        assert len(timeline_of(service, f"vk:{IVAN}")) == 2  # edited in place


def test_long_poll_follows_vks_failed_answers(tmp_path: Path, vk: VkApiStandIn) -> None:
    with vk_service(tmp_path, vk) as service:
        vk.fail_poll(1, 2, 3)
        # 1: a new ts; 2: a new key; 3: a new key and ts: the server asked for twice more
        until(lambda: [m for _, m in vk.calls].count("groups.getLongPollServer") >= 3)
        vk.push(message_new(IVAN, "after the failures", 1))
        until(lambda: timeline_of(service, f"vk:{IVAN}"))


def test_a_restart_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, vk: VkApiStandIn
) -> None:
    with vk_service(tmp_path, vk) as service:
        vk.push(*(message_new(IVAN, f"m{i}", i) for i in range(1, 6)))
        until(lambda: len(timeline_of(service, f"vk:{IVAN}")) == 5)
    vk.push(*(message_new(IVAN, f"m{i}", i) for i in range(6, 11)))  # while it is down
    with vk_service(tmp_path, vk) as service:
        until(lambda: len(timeline_of(service, f"vk:{IVAN}")) == 10)
        vk.push(message_new(IVAN, "m11", 11))
        until(lambda: len(timeline_of(service, f"vk:{IVAN}")) == 11)
        texts = sorted(i.text for i in timeline_of(service, f"vk:{IVAN}"))
    assert texts == sorted(f"m{i}" for i in range(1, 12))


def test_callback_confirms_checks_the_secret_and_keeps_before_ok(
    tmp_path: Path, vk: VkApiStandIn, db_url: str
) -> None:
    with vk_service(tmp_path, vk, db_url, mode="callback") as service:
        url = service.url + CALLBACK_PATH
        confirm = {"type": "confirmation", "group_id": GROUP_ID, "secret": SECRET}
        answer = httpx.post(url, json=confirm)
        assert answer.status_code == 200 and answer.text == CONFIRMATION
        bad = [
            (message_new(IVAN, "forged", 1, secret="wrong-secret"), 403),
            (message_new(IVAN, "no secret", 1), 403),
            (message_new(IVAN, "other community", 1, group_id=7, secret=SECRET), 403),
            ({"type": "confirmation", "group_id": GROUP_ID}, 403),
            (b"{not json", 400),
            (b"[1, 2]", 422),
            (b"{" + b" " * 1_100_000 + b"}", 413),
        ]
        for body, status in bad:
            response = post_callback(service, body)
            assert response.status_code == status, str(body)[:60]
            assert response.text != "ok"
        assert timeline_of(service, f"vk:{IVAN}") == []
        good = message_new(IVAN, "Hello from VK", 1, secret=SECRET)
        for _ in range(2):  # VK sends it again when an ok got lost: stored once
            response = post_callback(service, good)
            assert response.status_code == 200 and response.text == "ok"
        [item] = timeline_of(service, f"vk:{IVAN}")
        assert item.text == "Hello from VK"
        hostile = message_new(IVAN, "x\x00" * 5000, 2, secret=SECRET)
        hostile["object"]["message"]["from_id"] = "../../etc"
        post_callback(service, hostile)
        long = message_new(IVAN, "я" * 9000 + "\x00", 3, secret=SECRET)
        post_callback(service, long)
        texts = [i.text for i in timeline_of(service, f"vk:{IVAN}")]
        assert "я" * 4096 in texts and len(texts) == 2  # the hostile one quarantined
        quarantined = service.switchboard.quarantine.list("vk", limit=10)
        assert any("from_id" in q.reason for q in quarantined)


def test_a_retried_send_is_one_message_at_vk_and_errors_are_sorted(
    tmp_path: Path, vk: VkApiStandIn
) -> None:
    with vk_service(tmp_path, vk) as service:
        sb = service.switchboard
        vk.lose_answers = 1  # VK sends it, the answer is lost: the outbox tries again
        vk.fail_next("messages.send", 6, "Too many requests per second")
        with api(service.url) as c:
            first = c.post(
                "/api/messages", json={"channel": "vk", "address": f"vk:{IVAN}", "text": "Hi"}
            ).json()["id"]
        until(lambda: sb.store.get_interaction(first).status is InteractionStatus.SENT)
        assert len(vk.sent) == 1 and vk.sent[0]["message"] == "Hi"
        attempts = [m for _, m in vk.calls if m == "messages.send"]
        assert len(attempts) == 3  # throttled, sent with the answer lost, the repeat
        assert sb.store.get_interaction(first).external_id == f"{IVAN}:id{vk.sent[0]['id']}"

        vk.fail_next("messages.send", 901, "Can't send messages for users without permission")
        with api(service.url) as c:
            refused = c.post(
                "/api/messages", json={"channel": "vk", "address": f"vk:{IVAN}", "text": "x"}
            ).json()["id"]
        until(lambda: sb.store.get_interaction(refused).status is InteractionStatus.FAILED)
        assert sb.store.get_interaction(refused).error.startswith("901 Can't send messages")

        folder = Path(sb.config.core.recordings_dir).parent / "vk-files"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "offer.pdf").write_bytes(b"%PDF offer")
        (folder / "photo.jpg").write_bytes(b"JPEG photo")
        for name in ("offer.pdf", "photo.jpg"):
            service.call(
                sb.outbox.enqueue(
                    "vk", address=f"vk:{IVAN}", text=name, payload={"file": str(folder / name)}
                )
            )
        stray = service.call(
            sb.outbox.enqueue(
                "vk", address=f"vk:{IVAN}", text="x", payload={"file": "/etc/hostname"}
            )
        )
        until(lambda: len(vk.sent) == 3)
        attachments = sorted(s["attachment"] for s in vk.sent[1:])
        assert attachments[0].startswith(f"doc-{GROUP_ID}_")
        assert attachments[1].startswith(f"photo-{GROUP_ID}_") and attachments[1].endswith("_ak1")
        assert sorted(u["data"] for u in vk.uploads) == [b"%PDF offer", b"JPEG photo"]
        until(lambda: sb.store.get_interaction(stray.id).status is InteractionStatus.FAILED)
        assert "recordings folder" in sb.store.get_interaction(stray.id).error


def test_a_refused_token_shows_the_channel_failing(tmp_path: Path, vk: VkApiStandIn) -> None:
    with (
        vk_service(tmp_path, vk, access_token="vk1.a.expired-token-000000") as running,
        api(running.url) as c,
    ):
        health = c.get("/api/health").json()
    state = health["channels"]["vk"]
    assert state["state"] == "failing"
    assert "5 User authorization failed" in state["last_error"]
    assert "expired-token" not in json.dumps(health)


def test_replies_written_in_vks_interface_are_recorded_as_sent_and_ours_once(
    tmp_path: Path, vk: VkApiStandIn
) -> None:
    with vk_service(tmp_path, vk) as service:
        sb = service.switchboard
        vk.push(message_new(IVAN, "Where is my order?", 1))
        until(lambda: timeline_of(service, f"vk:{IVAN}"))
        with api(service.url) as c:
            ours = c.post(
                "/api/messages", json={"channel": "vk", "address": f"vk:{IVAN}", "text": "Today"}
            ).json()["id"]
        until(lambda: sb.store.get_interaction(ours).status is InteractionStatus.SENT)
        # an agent answers in VK's own interface: VK tells the community (message_reply)
        vk.push(reply(GROUP_ID, IVAN, "Courier at 5 pm", 990, random_id=123456))
        until(lambda: len(timeline_of(service, f"vk:{IVAN}")) == 3)
        vk.push(reply(GROUP_ID, 2_000_000_001, "in a group chat", 991))  # not one customer
        vk.push(reply(GROUP_ID, IVAN, "Courier at 5 pm", 990, random_id=123456))  # again
        vk.push(message_new(IVAN, "Thanks", 2))
        items = until(
            lambda: (
                len(timeline_of(service, f"vk:{IVAN}")) == 4 and timeline_of(service, f"vk:{IVAN}")
            )
        )
        by_text = {i.text: i for i in items}
        assert set(by_text) == {"Where is my order?", "Today", "Courier at 5 pm", "Thanks"}
        elsewhere = by_text["Courier at 5 pm"]
        assert elsewhere.direction.value == "outbound" and elsewhere.status.value == "sent"
        assert by_text["Today"].id == ours  # the echo of our own send was not added again
        with sb.store.read() as conn:
            sent = conn.execute(
                sa.select(sa.func.count())
                .select_from(event_t)
                .where(event_t.c.type == "message.sent")
            ).scalar_one()
        assert sent == 2  # ours, by the outbox; the one from VK's interface, by the channel


def test_the_console_shows_vk_messages_with_the_channels_badge(tmp_path: Path) -> None:
    import re

    from console_peers import TOKENS, console_service
    from vk_peers import vk_settings

    from switchboard_vk import VkPlugin, VkSettings

    with vk_api() as vk:
        vk.users[IVAN] = ("Ivan", "Petrov")
        with console_service(
            tmp_path / "svc",
            (VkPlugin(), "vk", VkSettings),
            plugins_config={"vk": vk_settings(vk, mode="callback")},
        ) as service:
            post_callback(service, message_new(IVAN, "Привет из VK", 1, secret=SECRET))
            contact = service.switchboard.store.find_contact(Address("vk", str(IVAN)))
            assert contact is not None and contact.name == "Ivan Petrov"
            with httpx.Client(base_url=service.url, timeout=10) as c:
                form = c.get("/console/login")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
                assert csrf is not None
                c.post("/console/login", data={"token": TOKENS["alice"], "csrf": csrf.group(1)})
                page = c.get(f"/console/contacts/{contact.id}").text
                # Ivan wrote his phone number: the agent joins the card of his calls to this one
                sb = service.switchboard
                called = service.call(
                    sb.create_contact("Ivan (called)", [Address("phone", "+79161234567")])
                )
                token = re.search(r'name="csrf" value="([^"]+)"', page)
                assert token is not None
                joined = c.post(
                    f"/console/contacts/{contact.id}/merge",
                    data={"csrf": token.group(1), "address": "+7 916 123-45-67"},
                )
                assert joined.status_code == 303 and "error" not in joined.headers["location"]
            merged = sb.store.find_contact(Address("phone", "+79161234567"))
            assert merged is not None and merged.id == contact.id
            assert sb.store.get_contact(called.id) is None
    assert "Привет из VK" in page
    assert '<span class="channel ch-vk" title="vk" data-testid="channel">VK</span>' in page
    assert 'value="vk|vk:1001"' in page  # an agent can answer on VK from the card
