"""The Telegram channel against a loopback Bot API, through the real core."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from switchboard import Address, InteractionStatus, Switchboard
from switchboard.store import contact_t, interaction_t
from switchboard.testing import LoopbackPlugin, open_switchboard
from switchboard_telegram.channel import TelegramChannel, TelegramSettings
from switchboard_telegram.testing import BotApi, bot_api

FAST = {
    "rate_per_second": 1000.0,
    "rate_per_chat_per_second": 1000.0,
    "rate_per_group_per_minute": 60000.0,
}


def telegram_plugin() -> LoopbackPlugin:
    """A fresh telegram channel registered with its settings class."""
    return LoopbackPlugin(TelegramChannel(), plugin_name="telegram", settings=TelegramSettings)


class Harness:
    def __init__(self, api: BotApi, url: str, tmp_path: Path) -> None:
        self.api, self.url, self.tmp_path = api, url, tmp_path
        self.opened: list[Switchboard] = []

    async def open(self, **settings: Any) -> tuple[Switchboard, TelegramChannel]:
        plugin = telegram_plugin()
        folder = self.tmp_path / f"sb{len(self.opened)}"
        folder.mkdir()
        config = {
            "switchboard": {
                "database_url": f"sqlite:///{self.tmp_path / 'store.db'}",
                "default_region": "RU",
                "outbox": {"backoff_initial": 0.05, "poll_interval": 0.02},
            },
            "plugins": {
                "telegram": {
                    "token": self.api.token,
                    "base_url": f"{self.url}/bot",
                    "base_file_url": f"{self.url}/file/bot",
                    "poll_timeout": 1,
                    **FAST,
                    **settings,
                }
            },
        }
        sb = await open_switchboard(folder, plugin, config=config)
        self.opened.append(sb)
        return sb, plugin.channel


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[Harness]:
    with bot_api() as (api, url):
        harness = Harness(api, url, tmp_path)
        yield harness
        for sb in harness.opened:
            await sb.close()


async def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
    return value


async def test_text_is_stored_and_the_update_acknowledged(tg: Harness) -> None:
    sb, _ = await tg.open()
    uid = tg.api.push({"message": tg.api.message(501, "Hello, is the sofa in stock?")})
    await until(lambda: sb.store.count(interaction_t) == 1)
    contact = sb.store.find_contact(Address("telegram", "501"))
    assert contact is not None and contact.name == "Test"
    [item] = sb.store.timeline(contact.id or 0)
    assert item.text == "Hello, is the sofa in stock?"
    assert item.external_id.startswith("501:")
    assert item.meta["chat_type"] == "private"
    await until(lambda: tg.api.confirmed == uid + 1)  # acknowledged by the next getUpdates


async def test_redelivered_update_and_restart_store_once(tg: Harness) -> None:
    sb, _ = await tg.open()
    msg = tg.api.message(502, "once")
    tg.api.push({"message": msg})
    await until(lambda: sb.store.count(interaction_t) == 1)
    await sb.stop_channels()
    # Telegram delivers the same message again (say, the offset was lost in a crash).
    tg.api.push({"message": msg})
    for i in range(30):
        tg.api.push({"message": tg.api.message(503, f"burst {i}")})
    sb2, _ = await tg.open()
    await until(lambda: sb2.store.count(interaction_t) == 31)
    await asyncio.sleep(0.3)
    assert sb2.store.count(interaction_t) == 31  # the redelivery was not stored again


async def test_stop_in_the_middle_of_a_burst_loses_nothing(tg: Harness) -> None:
    sb, _ = await tg.open()
    burst = 2000  # long enough (about a second) that the stop comes in the middle of it
    for i in range(burst):
        tg.api.push({"message": tg.api.message(600 + i % 7, f"m{i}")})
    await until(lambda: sb.store.count(interaction_t) >= 20)
    await sb.stop_channels()  # mid-burst: the poller is cancelled between updates
    stored = sb.store.count(interaction_t)
    assert stored < burst
    sb2, _ = await tg.open()
    await until(lambda: sb2.store.count(interaction_t) == burst, timeout=30)
    texts = {
        i.text
        for c in range(600, 607)
        for i in sb2.store.timeline(
            sb2.store.find_contact_id(Address("telegram", str(c))) or 0, limit=500
        )
    }
    assert texts == {f"m{i}" for i in range(burst)}


async def test_edited_message_updates_the_interaction(tg: Harness) -> None:
    sb, _ = await tg.open()
    msg = tg.api.message(504, "I want 2 chairs")
    tg.api.push({"message": msg})
    await until(lambda: sb.store.count(interaction_t) == 1)
    tg.api.push(
        {"edited_message": {**msg, "text": "I want 3 chairs", "edit_date": int(time.time())}}
    )
    contact_id = sb.store.find_contact_id(Address("telegram", "504")) or 0
    await until(lambda: sb.store.timeline(contact_id)[0].text == "I want 3 chairs")
    [item] = sb.store.timeline(contact_id)
    assert item.meta["edits"] == 1 and "edited_at" in item.meta
    assert sb.store.count(interaction_t) == 1


async def test_photos_documents_and_voice_are_kept_with_a_size_limit(tg: Harness) -> None:
    sb, _ = await tg.open(max_file_bytes=1000)
    photo = tg.api.add_file(b"\x89PNG small", "photos/p.png")
    doc = tg.api.add_file(b"%PDF-1.4 invoice", "documents/invoice.pdf")
    voice = tg.api.add_file(b"OggS voice", "voice/v.oga")
    big = tg.api.add_file(b"x" * 5000, "documents/big.bin")
    api = tg.api
    api.push(
        {
            "message": api.message(
                505,
                None,
                caption="my room",
                photo=[
                    {
                        "file_id": photo,
                        "file_unique_id": "p1s",
                        "width": 90,
                        "height": 90,
                        "file_size": 10,
                    },
                    {
                        "file_id": photo,
                        "file_unique_id": "p1",
                        "width": 900,
                        "height": 900,
                        "file_size": 10,
                    },
                ],
            )
        }
    )
    api.push(
        {
            "message": api.message(
                505,
                None,
                document={
                    "file_id": doc,
                    "file_unique_id": "d1",
                    "file_name": "invoice.pdf",
                    "mime_type": "application/pdf",
                    "file_size": 16,
                },
            )
        }
    )
    api.push(
        {
            "message": api.message(
                505,
                None,
                voice={
                    "file_id": voice,
                    "file_unique_id": "v1",
                    "duration": 2,
                    "mime_type": "audio/ogg",
                    "file_size": 10,
                },
            )
        }
    )
    api.push(
        {
            "message": api.message(
                505,
                None,
                document={
                    "file_id": big,
                    "file_unique_id": "b1",
                    "file_name": "big.bin",
                    "file_size": 5000,
                },
            )
        }
    )
    contact_id = await until(lambda: sb.store.find_contact_id(Address("telegram", "505")))
    items = await until(lambda: len(t := sb.store.timeline(contact_id)) == 4 and t)
    by_kind = {
        i.meta["attachment"]["kind"] + (":big" if "skipped" in i.meta["attachment"] else ""): i
        for i in items
    }
    assert by_kind["photo"].text == "my room"
    assert Path(by_kind["photo"].meta["attachment"]["path"]).read_bytes() == b"\x89PNG small"
    assert Path(by_kind["document"].meta["attachment"]["path"]).name.endswith("invoice.pdf")
    assert Path(by_kind["voice"].meta["attachment"]["path"]).read_bytes() == b"OggS voice"
    assert by_kind["document:big"].meta["attachment"]["skipped"].startswith("larger than")
    assert "path" not in by_kind["document:big"].meta["attachment"]


async def test_shared_phone_links_to_the_existing_contact(tg: Harness) -> None:
    sb, _ = await tg.open()
    known = sb.store.create_contact("Olga (from the CRM)", [Address("phone", "+74951234567")])
    api = tg.api
    api.push({"message": api.message(506, "hi")})
    await until(lambda: sb.store.count(interaction_t) == 1)
    api.push(
        {
            "message": api.message(
                506,
                None,
                contact={"phone_number": "+7 495 123-45-67", "first_name": "Olga", "user_id": 506},
            )
        }
    )
    await until(lambda: sb.store.find_contact_id(Address("telegram", "506")) == known.id)
    merged = sb.store.get_contact(known.id or 0)
    assert merged is not None
    assert set(merged.addresses) == {Address("phone", "+74951234567"), Address("telegram", "506")}
    assert len(sb.store.timeline(known.id or 0)) == 2
    assert sb.store.count(contact_t) == 1


async def test_group_messages_follow_allowed_chat_types(tg: Harness) -> None:
    sb, _ = await tg.open()
    group = {"id": -100200, "type": "group", "title": "Buyers"}
    tg.api.push({"message": tg.api.message(507, "in a group", chat=group)})
    tg.api.push({"message": tg.api.message(507, "in private")})
    await until(lambda: sb.store.count(interaction_t) == 1)
    await asyncio.sleep(0.2)
    [item] = sb.store.timeline(sb.store.find_contact_id(Address("telegram", "507")) or 0)
    assert item.text == "in private"


async def test_outbound_text_is_escaped_for_the_parse_mode(tg: Harness) -> None:
    sb, _ = await tg.open(parse_mode="HTML")
    worker = asyncio.create_task(sb.outbox.run())
    queued = await sb.outbox.enqueue(
        "telegram", address="telegram:508", text="2 < 3 & <b>not bold</b>"
    )
    await until(lambda: tg.api.sent)
    [sent] = tg.api.sent
    assert (sent["chat_id"], sent["parse_mode"]) == (508, "HTML")
    assert sent["text"] == "2 &lt; 3 &amp; &lt;b&gt;not bold&lt;/b&gt;"
    stored = await until(
        lambda: (
            (i := sb.store.get_interaction(queued.id)) and i.status is InteractionStatus.SENT and i
        )
    )
    assert stored.external_id == f"508:{sent['result']['message_id']}"
    sb.outbox.stop()
    await worker


async def test_outbound_document_only_from_our_own_folders(tg: Harness, tmp_path: Path) -> None:
    sb, _ = await tg.open()
    folder = Path(sb.config.core.recordings_dir).parent / "telegram-files"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "offer.pdf"
    path.write_bytes(b"%PDF offer")
    (tmp_path / "secret.txt").write_text("not for customers")
    worker = asyncio.create_task(sb.outbox.run())
    await sb.outbox.enqueue(
        "telegram", address="telegram:509", text="Our offer", payload={"file": str(path)}
    )
    stray = await sb.outbox.enqueue(
        "telegram",
        address="telegram:509",
        text="x",
        payload={"file": str(tmp_path / "secret.txt")},
    )
    await until(lambda: tg.api.sent)
    [sent] = tg.api.sent
    assert sent["caption"] == "Our offer"
    assert sent["document"] == {"filename": "offer.pdf", "data": b"%PDF offer"}
    failed = await until(
        lambda: (
            (i := sb.store.get_interaction(stray.id)) and i.status is InteractionStatus.FAILED and i
        )
    )
    assert "a file in the recordings folder" in failed.error
    assert len(tg.api.sent) == 1
    sb.outbox.stop()
    await worker


async def test_429_storm_is_honoured_and_nothing_is_lost(tg: Harness) -> None:
    sb, _ = await tg.open()
    tg.api.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, times=5)
    worker = asyncio.create_task(sb.outbox.run())
    started = time.monotonic()
    ids = [
        (await sb.outbox.enqueue("telegram", address=f"telegram:{510 + i % 3}", text=f"n{i}")).id
        for i in range(12)
    ]
    await until(
        lambda: all(sb.store.get_interaction(i).status is InteractionStatus.SENT for i in ids),
        timeout=30,
    )
    assert time.monotonic() - started >= 1.0  # retry_after was waited out
    assert sorted(s["text"] for s in tg.api.sent) == sorted(f"n{i}" for i in range(12))
    sb.outbox.stop()
    await worker


async def test_blocked_user_fails_with_the_reason(tg: Harness) -> None:
    sb, _ = await tg.open()
    tg.api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    worker = asyncio.create_task(sb.outbox.run())
    queued = await sb.outbox.enqueue("telegram", address="telegram:520", text="hello?")
    failed = await until(
        lambda: (
            (i := sb.store.get_interaction(queued.id))
            and i.status is InteractionStatus.FAILED
            and i
        )
    )
    assert failed.error == (
        "Telegram refused: Forbidden: bot was blocked by the user "
        "(the user blocked the bot or left the chat)"
    )
    assert tg.api.sent == []
    sb.outbox.stop()
    await worker


async def test_per_chat_rate_limit(tg: Harness) -> None:
    sb, _ = await tg.open(rate_per_chat_per_second=5.0)
    worker = asyncio.create_task(sb.outbox.run())
    started = time.monotonic()
    for i in range(11):
        await sb.outbox.enqueue("telegram", address="telegram:530", text=f"r{i}")
    await until(lambda: len(tg.api.sent) == 11, timeout=20)
    assert time.monotonic() - started >= 1.9  # 11 messages at 5/s to one chat: ≥ 2 s
    sb.outbox.stop()
    await worker


async def test_wrong_token_fails_the_channel_with_a_clear_error(tg: Harness) -> None:
    sb, _ = await tg.open(token="4242:WRONG")
    handle = sb.channels["telegram"]
    assert handle.state.value == "failing"
    assert "Telegram refused the bot token" in (handle.last_error or "")


async def test_hostile_updates_never_stop_the_poller(tg: Harness) -> None:
    """Found by an outside review: a document named ``..`` or with a name over 255 bytes,
    and a shared phone number ``default_region`` cannot read, killed the poller, which then
    restarted into the same batch forever: nobody's messages arrived."""
    api = tg.api
    names = ["..", "Договор поставки " * 20 + ".pdf", "../../switchboard.toml", "a\x00b"]
    for i, name in enumerate(names):
        file_id = api.add_file(b"%PDF hostile", f"documents/h{i}.pdf")
        api.push(
            {
                "message": api.message(
                    601,
                    None,
                    document={
                        "file_id": file_id,
                        "file_unique_id": f"h{i}",
                        "file_name": name,
                        "file_size": 12,
                    },
                )
            }
        )
    # a number without "+" that region RU cannot read as a phone number
    api.push(
        {
            "message": api.message(
                602,
                None,
                contact={"phone_number": "14155552671", "first_name": "Ann", "user_id": 602},
            )
        }
    )
    # a message and its edit in one batch (after downtime): the edit must win
    original = api.message(603, "I want 2 chairs")
    api.push({"message": original})
    api.push(
        {
            "edited_message": {
                **original,
                "text": "I want 3 chairs",
                "edit_date": int(time.time()),
            }
        }
    )
    last = api.push({"message": api.message(604, "after the hostile ones")})
    sb, _ = await tg.open(files_dir="files")
    await until(lambda: api.confirmed == last + 1)
    assert sb.channels["telegram"].state.value == "running"
    assert sb.store.count(interaction_t) == 7

    files_root = (tg.tmp_path / "sb0" / "files").resolve()
    sender = sb.store.find_contact(Address("telegram", "601"))
    assert sender is not None
    docs = sb.store.timeline(sender.id or 0)
    assert len(docs) == 4
    for item in docs:
        path = Path(item.meta["attachment"]["path"]).resolve()
        assert path.is_relative_to(files_root) and path.read_bytes() == b"%PDF hostile"
        assert len(path.name.encode()) <= 150
    assert not (tg.tmp_path / "switchboard.toml").exists()

    ann = sb.store.find_contact(Address("telegram", "602"))
    assert ann is not None
    [shared] = sb.store.timeline(ann.id or 0)
    assert "shared_phone_not_linked" in shared.meta

    buyer = sb.store.find_contact(Address("telegram", "603"))
    assert buyer is not None
    assert [i.text for i in sb.store.timeline(buyer.id or 0)] == ["I want 3 chairs"]


def test_the_bot_token_never_reaches_logs_or_health(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an outside review: httpx logged every Bot API URL (the token is in it) at
    INFO, and the unauthenticated /api/health showed error texts."""
    import httpx

    from switchboard.app import create_app
    from switchboard.core import settings_classes
    from switchboard.plugins import Plugins
    from switchboard.testing import make_config, serve_in_thread

    token = "4242:TEST-TOKEN"
    admin = "admin-token-0123456789"
    caplog.set_level(logging.INFO)
    with bot_api(token) as (api, url):
        api.fail_next("getMe", 401, f"Unauthorized: bad token {token}", times=1000)
        plugins = Plugins()
        plugins.register(telegram_plugin(), "telegram")
        config = make_config(
            tmp_path,
            {
                "switchboard": {"tokens": [{"token": admin, "role": "admin"}]},
                "plugins": {
                    "telegram": {"token": token, "base_url": f"{url}/bot", "poll_timeout": 1}
                },
            },
            asyncio.run(settings_classes(plugins)),
        )
        app = create_app(config, plugins=plugins, supervise_backoff=(0.2, 0.5))
        with serve_in_thread(app) as running:
            deadline = time.monotonic() + 10
            while True:
                full = httpx.get(
                    f"{running.url}/api/health", headers={"Authorization": f"Bearer {admin}"}
                ).json()
                if full["channels"]["telegram"]["last_error"]:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)
            anonymous = httpx.get(f"{running.url}/api/health").text
    error = full["channels"]["telegram"]["last_error"]
    assert "***" in error and token not in error, error
    assert token not in anonymous and "last_error" not in anonymous
    assert "HTTP Request" in caplog.text and "/bot***/getMe" in caplog.text
    assert token not in caplog.text
    assert token not in repr(TelegramSettings(token=token))  # repr=False: a secret
