"""The Messenger and Instagram channels end to end: signed webhooks posted to a running
runner, sends answered by the loopback Graph API stand-in (written from Meta's Messenger
Platform reference)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from meta_peers import api, meta_service, post_webhook

from switchboard import Address, InteractionStatus, Invalid
from switchboard.events import event_t
from switchboard.testing import RunningService, until
from switchboard_meta import WEBHOOK_PATH
from switchboard_meta.tables import peer_t
from switchboard_meta.testing import (
    INSTAGRAM_ID,
    PAGE_ID,
    PAGE_TOKEN,
    VERIFY_TOKEN,
    MetaGraph,
    event,
    meta_graph,
    settings,
    signature,
    text_event,
    webhook_body,
)

OLGA = "6912345678901234"  # a PSID
IVAN = "1789012345678901"  # an IGSID
HOUR = 3600.0


@pytest.fixture
def graph() -> Iterator[MetaGraph]:
    with meta_graph() as g:
        g.profile(OLGA, first_name="Olga", last_name="Petrova")
        g.profile(IVAN, name="Ivan Sidorov", username="ivan.s")
        yield g


@pytest.fixture
def service(tmp_path: Path, graph: MetaGraph) -> Iterator[RunningService]:
    meta = settings(graph, max_file_bytes=1024)
    with meta_service(tmp_path, graph, meta=meta) as running:
        yield running


def card(service: RunningService, kind: str, user: str) -> Any:
    return service.switchboard.store.find_contact(Address(kind, user))


def timeline(service: RunningService, kind: str, user: str) -> list[Any]:
    contact = card(service, kind, user)
    assert contact is not None, f"no contact for {kind}:{user}"
    return service.switchboard.store.timeline(contact.id)


def health(service: RunningService) -> httpx.Response:
    with api(service.url) as client:
        return client.get("/api/health")


def one(items: list[Any], external_id: str) -> Any:
    found = [i for i in items if i.external_id == external_id]
    assert len(found) == 1, [i.external_id for i in items]
    return found[0]


def queue(service: RunningService, channel: str, user: str, text: str) -> Any:
    with api(service.url) as client:
        return client.post(
            "/api/messages", json={"channel": channel, "address": f"{channel}:{user}", "text": text}
        )


def sent_status(service: RunningService, interaction_id: int) -> Any:
    def done() -> Any:
        found = service.switchboard.store.get_interaction(interaction_id)
        return found if found.status is not InteractionStatus.QUEUED else None

    return until(done)


# -- the webhook ----------------------------------------------------------------------------


def test_the_subscription_handshake_echoes_the_challenge(service: RunningService) -> None:
    url = service.url + WEBHOOK_PATH
    ok = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "884422"}
    answer = httpx.get(url, params=ok)
    assert answer.status_code == 200 and answer.text == "884422"
    assert httpx.get(url, params={**ok, "hub.verify_token": "guess"}).status_code == 403


def test_unsigned_malformed_and_foreign_bodies_are_refused(service: RunningService) -> None:
    body = webhook_body([text_event(OLGA, "hello", mid="m_A1")])
    assert post_webhook(service, body, sig=None).status_code == 403
    assert post_webhook(service, body, sig="sha256=" + "0" * 64).status_code == 403
    tampered = body.replace(b"hello", b"jello")
    assert post_webhook(service, tampered, sig=signature(body)).status_code == 403
    assert post_webhook(service, b"{not json").status_code == 400
    assert post_webhook(service, b'{"object": "whatsapp_business_account"}').status_code == 422
    assert post_webhook(service, b"[" + b" " * 1_000_001 + b"]").status_code == 413
    assert card(service, "messenger", OLGA) is None  # nothing stored


# -- inbound --------------------------------------------------------------------------------


def test_a_messenger_message_is_stored_once_on_a_named_card(
    service: RunningService, graph: MetaGraph
) -> None:
    body = webhook_body([text_event(OLGA, "Hello / привет", mid="m_A1")])
    assert post_webhook(service, body).status_code == 200
    assert post_webhook(service, body).status_code == 200  # Meta's retry: stored once
    # named from the profile API, looked up in the background (the message never waits)
    until(lambda: card(service, "messenger", OLGA).name == "Olga Petrova")
    [item] = timeline(service, "messenger", OLGA)
    assert (item.channel, item.text, item.external_id) == ("messenger", "Hello / привет", "m_A1")
    assert graph.profile_requests == 1  # asked once, remembered with the Page
    post_webhook(service, webhook_body([text_event(OLGA, "again", mid="m_A2")]))
    assert graph.profile_requests == 1
    with service.switchboard.store.read() as conn:
        row = conn.execute(sa.select(peer_t)).one()
    assert (row.channel, row.user_id, row.page_id) == ("messenger", OLGA, PAGE_ID)


def test_an_instagram_message_lands_on_the_instagram_card(service: RunningService) -> None:
    body = webhook_body([text_event(IVAN, "Есть в наличии?", mid="ig_1", account=INSTAGRAM_ID)])
    assert b'"object": "instagram"' in body
    assert post_webhook(service, body).status_code == 200
    until(lambda: card(service, "instagram", IVAN).name == "Ivan Sidorov")
    [item] = timeline(service, "instagram", IVAN)
    assert (item.channel, item.text) == ("instagram", "Есть в наличии?")


def test_a_person_without_a_profile_is_stored_unnamed(
    service: RunningService, graph: MetaGraph
) -> None:
    stranger = "5550001112223334"
    post_webhook(service, webhook_body([text_event(stranger, "hi", mid="m_S1")]))
    [item] = timeline(service, "messenger", stranger)
    assert item.text == "hi"
    until(lambda: graph.profile_requests == 1)
    assert card(service, "messenger", stranger).name == stranger  # named by the id
    # a name an agent gave is never replaced by the profile's
    sb = service.switchboard
    known = service.call(sb.create_contact("VIP client", [Address("messenger", OLGA)]))
    post_webhook(service, webhook_body([text_event(OLGA, "hello", mid="m_S2")]))
    until(lambda: graph.profile_requests == 2)
    assert service.call(sb.name_contact(f"messenger:{OLGA}", "Olga Petrova")) is False
    assert card(service, "messenger", OLGA).name == "VIP client"
    assert card(service, "messenger", OLGA).id == known.id


def test_attachments_are_kept_within_the_limit_and_links_noted(
    service: RunningService, graph: MetaGraph
) -> None:
    picture = graph.add_file(b"\xff\xd8\xff" + b"p" * 200, "image/jpeg")
    big = graph.add_file(b"v" * 5000, "video/mp4")
    message = {
        "mid": "m_F1",
        "attachments": [
            {"type": "image", "payload": {"url": picture}},
            {"type": "video", "payload": {"url": big}},
            {"type": "share", "payload": {"url": "https://www.instagram.com/p/Cx1/"}},
            {"type": "file", "payload": {"url": "file:///etc/passwd"}},
        ],
    }
    post_webhook(service, webhook_body([event(OLGA, "message", message)]))
    [item] = timeline(service, "messenger", OLGA)
    image, video, share, local = item.meta["attachments"]
    assert item.meta["type"] == "image"
    assert image["mime_type"] == "image/jpeg" and image["size"] == 203
    assert Path(image["path"]).read_bytes().startswith(b"\xff\xd8\xff")
    assert "max_file_bytes" in video["skipped"] and "path" not in video
    assert share["url"] == "https://www.instagram.com/p/Cx1/" and "path" not in share
    assert local["error"] == "no http(s) URL"  # never read from the runner's disk
    with api(service.url) as client:
        served = client.get(f"/api/interactions/{item.id}/attachments/0")
    assert served.status_code == 200 and served.content == Path(image["path"]).read_bytes()


def test_story_mentions_replies_quick_replies_postbacks_and_reactions(
    service: RunningService, graph: MetaGraph
) -> None:
    story = graph.add_file(b"story-bytes", "image/jpeg")
    ig = INSTAGRAM_ID
    events = [
        event(
            IVAN,
            "message",
            {"mid": "ig_M", "attachments": [{"type": "story_mention", "payload": {"url": story}}]},
            account=ig,
        ),
        text_event(
            IVAN,
            "Nice!",
            mid="ig_R",
            account=ig,
            reply_to={"story": {"url": "https://cdn.example/s.jpg", "id": "1790000"}},
        ),
        text_event(IVAN, "Red", mid="ig_Q", account=ig, quick_reply={"payload": "COLOR_RED"}),
        event(
            IVAN,
            "postback",
            {"mid": "ig_P", "title": "Talk to a person", "payload": "AGENT"},
            account=ig,
        ),
        event(
            IVAN,
            "reaction",
            {"mid": "ig_R", "action": "react", "reaction": "love", "emoji": "❤️"},
            account=ig,
        ),
    ]
    post_webhook(service, webhook_body(events, account=ig))
    items = timeline(service, "instagram", IVAN)
    mention = one(items, "ig_M")
    assert mention.meta["type"] == "story_mention"
    assert Path(mention.meta["attachments"][0]["path"]).read_bytes() == b"story-bytes"
    assert one(items, "ig_R").meta["story_reply"]["id"] == "1790000"
    assert one(items, "ig_Q").meta["reply"] == {"payload": "COLOR_RED"}
    postback = one(items, "ig_P")
    assert postback.text == "Talk to a person" and postback.meta["postback"]["payload"] == "AGENT"
    [reaction] = [i for i in items if i.meta.get("type") == "reaction"]
    assert reaction.text == "❤️" and reaction.meta["reaction_to"] == "ig_R"


def test_an_edit_replaces_the_text_and_an_unsend_clears_it(
    service: RunningService, graph: MetaGraph
) -> None:
    picture = graph.add_file(b"secret-picture", "image/png")
    post_webhook(
        service,
        webhook_body(
            [
                text_event(OLGA, "my card is 4111", mid="m_E1"),
                event(
                    OLGA,
                    "message",
                    {
                        "mid": "m_E2",
                        "attachments": [{"type": "image", "payload": {"url": picture}}],
                    },
                ),
            ]
        ),
    )
    kept = Path(one(timeline(service, "messenger", OLGA), "m_E2").meta["attachments"][0]["path"])
    assert kept.exists()
    post_webhook(
        service,
        webhook_body(
            [event(OLGA, "message_edit", {"mid": "m_E1", "text": "my card is ****", "num_edit": 1})]
        ),
    )
    edited = one(timeline(service, "messenger", OLGA), "m_E1")
    assert edited.text == "my card is ****" and edited.meta["edits"] == 1
    post_webhook(
        service,
        webhook_body(
            [
                event(OLGA, "message", {"mid": "m_E1", "is_deleted": True}),
                event(OLGA, "message", {"mid": "m_E2", "is_deleted": True}),
            ]
        ),
    )
    items = timeline(service, "messenger", OLGA)
    text, photo = one(items, "m_E1"), one(items, "m_E2")
    assert text.text is None and text.meta["deleted"]["content_kept"] is False
    assert photo.meta["attachments"][0]["skipped"] == "deleted by the sender"
    assert "path" not in photo.meta["attachments"][0] and not kept.exists()
    with service.switchboard.store.read() as conn:
        deleted = conn.execute(
            sa.select(sa.func.count()).where(event_t.c.type == "message.deleted")
        ).scalar_one()
    assert deleted == 2


def test_unsent_content_is_kept_when_the_settings_say_so(tmp_path: Path, graph: MetaGraph) -> None:
    with meta_service(tmp_path, graph, meta=settings(graph, keep_unsent=True)) as service:
        post_webhook(service, webhook_body([text_event(OLGA, "oops", mid="m_K1")]))
        post_webhook(
            service, webhook_body([event(OLGA, "message", {"mid": "m_K1", "is_deleted": True})])
        )
        item = one(timeline(service, "messenger", OLGA), "m_K1")
        assert item.text == "oops" and item.meta["deleted"]["content_kept"] is True


def test_hostile_items_are_quarantined_and_the_rest_of_the_body_stored(
    service: RunningService, graph: MetaGraph
) -> None:
    troll = "6660000000000001"
    graph.profile(troll, first_name="<script>alert(1)</script>\x00", last_name="x\ny" * 400)
    events = [
        text_event(troll, "hello", mid="m_H0", reply_to={"story": "not an object"}),
        text_event("../../etc/passwd", "x", mid="m_H1"),  # not a PSID
        event(OLGA, "message", {"text": "no mid"}),
        text_event(OLGA, "ok\x00 " + "я" * 30_000, mid="m_H3"),
        text_event(OLGA, "fine", mid="m_H4"),
    ]
    post_webhook(service, webhook_body(events))
    post_webhook(service, webhook_body([text_event(OLGA, "other page", mid="m_H5")], account="999"))
    items = timeline(service, "messenger", OLGA)
    long = one(items, "m_H3")
    assert "\x00" not in long.text and len(long.text) <= 20_000
    assert one(items, "m_H4").text == "fine"
    assert not [i for i in items if i.external_id == "m_H5"]
    with api(service.url) as client:
        reasons = [q["reason"] for q in client.get("/api/quarantine").json()["items"]]
    assert any("mid" in r for r in reasons)
    assert any("999" in r for r in reasons)
    until(lambda: card(service, "messenger", troll).name.startswith("<script>"))
    name = card(service, "messenger", troll).name  # stored as text, on one line, bounded
    assert "\x00" not in name and "\n" not in name and len(name) <= 300
    assert one(timeline(service, "messenger", troll), "m_H0").text == "hello"


# -- outbound -------------------------------------------------------------------------------


def test_a_reply_goes_out_within_the_window_with_quick_replies(
    tmp_path: Path, graph: MetaGraph
) -> None:
    templates = {
        "pick": {
            "text": "Which colour?",
            "channels": {
                "messenger": {
                    "quick_replies": [
                        {"title": "Red", "payload": "RED"},
                        {"title": "Blue", "payload": "BLUE"},
                    ]
                }
            },
        }
    }
    with meta_service(tmp_path, graph, templates=templates) as service:
        post_webhook(service, webhook_body([text_event(OLGA, "hi", mid="m_W1")]))
        with api(service.url) as client:
            answer = client.post(
                "/api/messages",
                json={"channel": "messenger", "address": f"messenger:{OLGA}", "template": "pick"},
            )
        assert answer.status_code == 202, answer.text
        done = sent_status(service, answer.json()["id"])
        assert done.status is InteractionStatus.SENT
        [body] = graph.sent
        assert body["page"] == PAGE_ID and body["recipient"] == {"id": OLGA}
        assert body["messaging_type"] == "RESPONSE" and "tag" not in body
        assert body["message"]["quick_replies"][1] == {
            "content_type": "text",
            "title": "Blue",
            "payload": "BLUE",
        }
        assert done.external_id == body["mid"]


def test_a_long_text_goes_in_pieces_the_send_api_takes(
    service: RunningService, graph: MetaGraph
) -> None:
    post_webhook(service, webhook_body([text_event(OLGA, "tell me everything", mid="m_L0")]))
    text = ("word " * 500).strip() + "\n" + "x" * 2500  # 2,499 + 1 + 2,500 characters
    done = sent_status(service, queue(service, "messenger", OLGA, text).json()["id"])
    assert done.status is InteractionStatus.SENT
    pieces = [s["message"]["text"] for s in graph.sent]
    assert "".join(pieces) == text and all(len(p) <= 2000 for p in pieces)
    assert pieces[0].endswith("word ")  # cut at a space, not in a word
    assert len(pieces) == 3 and done.external_id == graph.sent[-1]["mid"]


def test_outside_the_window_a_message_is_refused_with_the_reason(
    service: RunningService, graph: MetaGraph
) -> None:
    never = queue(service, "messenger", "4440001112223334", "hello?")
    assert never.status_code == 422 and "never wrote" in never.text
    old = time.time() - 30 * HOUR
    post_webhook(service, webhook_body([text_event(OLGA, "old", mid="m_O1", at=old)]))
    late = queue(service, "messenger", OLGA, "sorry for the wait")
    assert late.status_code == 422 and "24-hour" in late.text
    assert graph.sent == []


def test_a_human_agent_page_answers_for_seven_days_with_the_tag(
    tmp_path: Path, graph: MetaGraph
) -> None:
    graph.closed.add(OLGA)  # Meta refuses untagged messages to her now
    with meta_service(tmp_path, graph, meta=settings(graph, human_agent=True)) as service:
        post_webhook(
            service, webhook_body([text_event(OLGA, "old", mid="m_G1", at=time.time() - 30 * HOUR)])
        )
        answer = queue(service, "messenger", OLGA, "an agent here")
        assert answer.status_code == 202, answer.text
        assert sent_status(service, answer.json()["id"]).status is InteractionStatus.SENT
        [body] = graph.sent
        assert (body["messaging_type"], body["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
        post_webhook(
            service,
            webhook_body([text_event(OLGA, "older", mid="m_G2", at=time.time() - 8 * 24 * HOUR)]),
        )  # an older message does not move the window back
        assert queue(service, "messenger", OLGA, "still here").status_code == 202


def test_meta_errors_retry_fail_or_mark_the_channel_failing(
    service: RunningService, graph: MetaGraph
) -> None:
    post_webhook(service, webhook_body([text_event(OLGA, "hi", mid="m_X1")]))
    graph.fail_next("messages", 613, "Calls to this api have exceeded the rate limit.", times=2)
    throttled = queue(service, "messenger", OLGA, "one").json()["id"]
    assert sent_status(service, throttled).status is InteractionStatus.SENT
    graph.fail_next("messages", 551, "This person isn't available right now.")
    gone = sent_status(service, queue(service, "messenger", OLGA, "two").json()["id"])
    assert gone.status is InteractionStatus.FAILED and "551" in gone.error
    graph.fail_next(
        "messages", 10, "This message is sent outside of allowed window.", subcode=2018278
    )
    late = sent_status(service, queue(service, "messenger", OLGA, "three").json()["id"])
    assert late.status is InteractionStatus.FAILED and "outside the messaging window" in late.error
    graph.fail_next("messages", 190, "Error validating access token: Session has expired")
    expired = queue(service, "messenger", OLGA, "four").json()["id"]

    def failing() -> Any:
        messenger = health(service).json()["channels"]["messenger"]
        return "190" in (messenger.get("last_error") or "") and messenger

    assert failing() or until(failing)
    # the supervisor starts it again; the message waits in the outbox and goes then
    assert sent_status(service, expired).status is InteractionStatus.SENT
    assert PAGE_TOKEN not in health(service).text


def test_files_go_by_url_or_by_upload_from_our_folders_only(
    service: RunningService, graph: MetaGraph
) -> None:
    picture = graph.add_file(b"\x89PNG" + b"i" * 100, "image/png")
    post_webhook(
        service,
        webhook_body(
            [
                event(
                    OLGA,
                    "message",
                    {
                        "mid": "m_U1",
                        "attachments": [{"type": "image", "payload": {"url": picture}}],
                    },
                )
            ]
        ),
    )
    kept = one(timeline(service, "messenger", OLGA), "m_U1").meta["attachments"][0]["path"]
    sb = service.switchboard
    contact = card(service, "messenger", OLGA)

    async def send(payload: dict[str, Any]) -> Any:
        return await sb.outbox.enqueue(
            "messenger", contact_id=contact.id, text=None, payload=payload
        )

    upload = service.call(send({"attachment": {"kind": "image", "path": kept}}))
    assert sent_status(service, upload.id).status is InteractionStatus.SENT
    [uploaded] = graph.uploads
    assert uploaded["type"] == "image" and uploaded["size"] == 104
    by_id = graph.sent[-1]["message"]["attachment"]
    assert by_id == {"type": "image", "payload": {"attachment_id": uploaded["id"]}}
    with pytest.raises(Invalid, match=r"attachment\.path"):
        service.call(send({"attachment": {"kind": "file", "path": "/etc/passwd"}}))
    with pytest.raises(Invalid, match=r"attachment\.url"):
        service.call(send({"attachment": {"kind": "image", "url": "file:///etc/passwd"}}))


def test_receipts_move_sent_messages_forward(service: RunningService, graph: MetaGraph) -> None:
    post_webhook(service, webhook_body([text_event(OLGA, "hi", mid="m_D0")]))
    first = sent_status(service, queue(service, "messenger", OLGA, "one").json()["id"])
    second = sent_status(service, queue(service, "messenger", OLGA, "two").json()["id"])
    post_webhook(
        service,
        webhook_body([event(OLGA, "delivery", {"mids": [first.external_id], "watermark": 1})]),
    )
    store = service.switchboard.store
    assert store.get_interaction(first.id).status is InteractionStatus.DELIVERED
    assert store.get_interaction(second.id).status is InteractionStatus.SENT
    post_webhook(
        service,
        webhook_body([event(OLGA, "read", {"watermark": int(time.time() * 1000) + 1000})]),
    )
    assert store.get_interaction(first.id).status is InteractionStatus.READ
    assert store.get_interaction(second.id).status is InteractionStatus.READ
    # Instagram names the message that was seen
    post_webhook(
        service,
        webhook_body(
            [text_event(IVAN, "hi", mid="ig_D0", account=INSTAGRAM_ID)], account=INSTAGRAM_ID
        ),
    )
    seen = sent_status(service, queue(service, "instagram", IVAN, "three").json()["id"])
    post_webhook(
        service,
        webhook_body(
            [
                event(
                    IVAN,
                    "read",
                    {"mid": seen.external_id},
                    account=INSTAGRAM_ID,
                    at=time.time() - 60,
                )
            ],
            account=INSTAGRAM_ID,
        ),
    )
    assert store.get_interaction(seen.id).status is InteractionStatus.READ


def test_echoes_of_our_sends_are_not_stored_twice_and_the_page_inbox_is_recorded(
    service: RunningService, graph: MetaGraph
) -> None:
    post_webhook(service, webhook_body([text_event(OLGA, "hi", mid="m_Y0")]))
    ours = sent_status(service, queue(service, "messenger", OLGA, "from the CRM").json()["id"])
    echoes = [
        event(OLGA, "message", {"is_echo": True, "mid": ours.external_id, "text": "from the CRM"}),
        event(OLGA, "message", {"is_echo": True, "mid": "m_inbox1", "text": "from Meta's inbox"}),
    ]
    post_webhook(service, webhook_body(echoes))
    items = timeline(service, "messenger", OLGA)
    assert [i.text for i in items if i.external_id == ours.external_id] == ["from the CRM"]
    inbox = one(items, "m_inbox1")
    assert inbox.direction.value == "outbound" and inbox.status is InteractionStatus.SENT


def test_replies_go_through_the_page_the_person_wrote_to(tmp_path: Path) -> None:
    second, token2 = "104729345600002", "EAAPage-test-token-0002"
    pages = {PAGE_ID: PAGE_TOKEN, second: token2}
    with meta_graph(pages=pages) as graph:
        meta = settings(graph)
        meta["pages"].append({"id": second, "access_token": token2})
        with meta_service(tmp_path, graph, meta=meta) as service:
            post_webhook(service, webhook_body([text_event(OLGA, "hi A", mid="m_P1")]))
            post_webhook(
                service,
                webhook_body(
                    [text_event(IVAN, "hi B", mid="m_P2", account=second)], account=second
                ),
            )
            a = sent_status(service, queue(service, "messenger", OLGA, "from A").json()["id"])
            b = sent_status(service, queue(service, "messenger", IVAN, "from B").json()["id"])
            assert a.status is b.status is InteractionStatus.SENT
            pages_used = {s["recipient"]["id"]: s["page"] for s in graph.sent}
            assert pages_used == {OLGA: PAGE_ID, IVAN: second}


def test_a_page_without_instagram_leaves_that_channel_not_configured(
    tmp_path: Path, graph: MetaGraph
) -> None:
    meta = settings(graph)
    meta["pages"][0]["instagram_id"] = None
    with meta_service(tmp_path, graph, meta=meta) as service:
        channels = health(service).json()["channels"]
        assert channels["messenger"]["state"] == "running"
        assert channels["instagram"]["state"] == "not configured"
        assert "instagram_id" in channels["instagram"]["last_error"]
        refused = queue(service, "instagram", IVAN, "hi")
        assert refused.status_code == 422 and "instagram_id" in refused.text
        # Meta would retry a body no channel takes until it gave up on the whole webhook:
        # it is answered 200 and dropped (with a warning in the log)
        body = webhook_body([text_event(IVAN, "hi", account=INSTAGRAM_ID)], account=INSTAGRAM_ID)
        assert post_webhook(service, body).status_code == 200
        assert card(service, "instagram", IVAN) is None


def test_a_wrong_page_token_fails_the_start_without_showing_it(
    tmp_path: Path, graph: MetaGraph
) -> None:
    meta = settings(graph)
    meta["pages"][0]["access_token"] = "EAA-wrong-token"
    with meta_service(tmp_path, graph, meta=meta) as service:
        answer = health(service)
        messenger = answer.json()["channels"]["messenger"]
        assert messenger["state"] == "failing" and "190" in messenger["last_error"]
        assert "EAA-wrong-token" not in answer.text
        body = webhook_body([text_event(OLGA, "hi", mid="m_T1")])
        assert post_webhook(service, body).status_code == 503  # Meta keeps it, sends again
