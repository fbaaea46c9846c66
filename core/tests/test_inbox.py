"""Inbound flow: dedupe → resolve contact (hook, store, create) → save → hooks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from switchboard import (
    Address,
    AddressError,
    Contact,
    InboundMessage,
    Interaction,
    InteractionStatus,
    InvalidInbound,
    hookimpl,
)
from switchboard.store import contact_t, interaction_t
from switchboard.testing import LoopbackChannel, LoopbackPlugin


class Recorder:
    plugin_name = "recorder"

    def __init__(self) -> None:
        self.received: list[tuple[Interaction, Contact]] = []
        self.created: list[Contact] = []

    @hookimpl
    def message_received(self, interaction: Interaction, contact: Contact) -> None:
        self.received.append((interaction, contact))

    @hookimpl
    async def contact_created(self, contact: Contact) -> None:
        await asyncio.sleep(0)
        self.created.append(contact)


async def test_message_is_saved_on_a_new_contact(open_sb: Any) -> None:
    ch, rec = LoopbackChannel("sms"), Recorder()
    sb = await open_sb(LoopbackPlugin(ch), rec, config={"switchboard": {"default_region": "RU"}})
    got = await ch.inject(InboundMessage("m1", "8 (495) 123-45-67", text="Hi", sender_name="Anna"))
    assert not got.duplicate and got.contact_created
    assert got.contact.name == "Anna"
    assert got.contact.addresses == (Address("phone", "+74951234567"),)
    assert got.interaction.status is InteractionStatus.RECEIVED
    assert got.interaction.text == "Hi"
    stored = sb.store.get_interaction(got.interaction.id)
    assert stored == got.interaction
    assert [c.id for c in rec.created] == [got.contact.id]
    assert [(i.id, c.id) for i, c in rec.received] == [(got.interaction.id, got.contact.id)]


async def test_duplicates_are_stored_once_and_fire_no_hook(open_sb: Any) -> None:
    ch, rec = LoopbackChannel("sms"), Recorder()
    sb = await open_sb(LoopbackPlugin(ch), rec)
    first = await ch.inject(InboundMessage("m1", "+12025550143", text="one"))
    again = await ch.inject(InboundMessage("m1", "+12025550143", text="changed"))
    burst = await asyncio.gather(
        *(ch.inject(InboundMessage("m2", "+12025550143", text="two")) for _ in range(5))
    )
    assert again.duplicate and again.interaction == first.interaction
    assert [r.duplicate for r in burst].count(False) == 1
    assert len({r.interaction.id for r in burst}) == 1
    assert sb.store.count(interaction_t) == 2
    assert len(rec.received) == 2
    assert len(rec.created) == 1


async def test_same_external_id_on_two_channels_is_two_messages(open_sb: Any) -> None:
    a, b = LoopbackChannel("a"), LoopbackChannel("b")
    sb = await open_sb(LoopbackPlugin(a, b))
    r1 = await a.inject(InboundMessage("1", "+12025550143"))
    r2 = await b.inject(InboundMessage("1", "+1 202 555 0143"))
    assert r1.interaction.id != r2.interaction.id
    assert r1.contact.id == r2.contact.id
    assert sb.store.count(contact_t) == 1


async def test_known_address_resolves_to_the_stored_contact(open_sb: Any) -> None:
    ch = LoopbackChannel("mail", "email")
    sb = await open_sb(LoopbackPlugin(ch))
    anna = sb.store.create_contact("Anna", [Address("email", "anna@example.com")])
    got = await ch.inject(InboundMessage("<x@y>", "ANNA@Example.com", subject="Re: offer"))
    assert got.contact.id == anna.id and not got.contact_created


async def test_resolve_contact_hook_answers_first(open_sb: Any) -> None:
    asked: list[Address] = []

    class Crm:
        plugin_name = "crm"

        @hookimpl
        async def resolve_contact(self, address: Address) -> Contact | None:
            asked.append(address)
            if address.value == "+12025550143":
                return Contact(
                    id=None,
                    name="Boris (from CRM)",
                    company="Globex",
                    addresses=(Address("email", "boris@globex.com"),),
                )
            return None

    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch), Crm())
    known = await ch.inject(InboundMessage("1", "+12025550143", sender_name="ignored"))
    assert known.contact.name == "Boris (from CRM)" and known.contact.company == "Globex"
    assert set(known.contact.addresses) == {
        Address("phone", "+12025550143"),
        Address("email", "boris@globex.com"),
    }
    # The CRM's answer is stored: the next message from either address finds it.
    again = await ch.inject(InboundMessage("2", "+12025550143"))
    assert again.contact.id == known.contact.id
    unknown = await ch.inject(InboundMessage("3", "+12025550199", sender_name="Walk-in"))
    assert unknown.contact.name == "Walk-in"
    assert asked[0] == Address("phone", "+12025550143")
    assert sb.store.count(contact_t) == 2


async def test_a_crashing_hook_loses_nothing(open_sb: Any, caplog: Any) -> None:
    class Crashes:
        plugin_name = "crashes"

        @hookimpl
        def message_received(self, interaction: Interaction) -> None:
            raise RuntimeError("webhook down")

    ch, rec = LoopbackChannel("sms"), Recorder()
    sb = await open_sb(LoopbackPlugin(ch), Crashes(), rec)
    with caplog.at_level(logging.ERROR):
        got = await ch.inject(InboundMessage("1", "+12025550143", text="keep me"))
    assert sb.store.get_interaction(got.interaction.id) is not None
    assert len(rec.received) == 1
    assert "plugin 'crashes' (hook message_received): RuntimeError: webhook down" in caplog.text


async def test_bad_sender_is_a_clear_error_and_the_rest_go_on(open_sb: Any) -> None:
    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch))
    results = await asyncio.gather(
        ch.inject(InboundMessage("1", "+12025550143")),
        ch.inject(InboundMessage("2", "not a number")),
        ch.inject(InboundMessage("3", "+12025550144")),
        return_exceptions=True,
    )
    # the channel's door says "never storable" (quarantine it); the cause is the address
    assert isinstance(results[1], InvalidInbound)
    assert isinstance(results[1].__cause__, AddressError)
    assert "'not a number'" in str(results[1])
    assert sb.store.count(interaction_t) == 2


async def test_a_burst_from_many_senders_is_all_stored(open_sb: Any) -> None:
    ch, rec = LoopbackChannel("sms"), Recorder()
    sb = await open_sb(LoopbackPlugin(ch), rec)
    msgs = [InboundMessage(f"m{i}", f"+1202555{i % 50:04d}", text=str(i)) for i in range(600)]
    results = await asyncio.gather(*(ch.inject(m) for m in msgs))
    assert sb.store.count(interaction_t) == 600
    assert sb.store.count(contact_t) == 50
    assert len(rec.created) == 50
    assert sorted(int(r.interaction.text or "") for r in results) == list(range(600))
    timeline = sb.store.timeline(results[0].contact.id or 0, limit=100)
    assert len(timeline) == 12
    assert all(r.contact.id is not None for r in results)


async def test_message_without_external_id_is_refused(open_sb: Any) -> None:
    ch = LoopbackChannel("sms")
    await open_sb(LoopbackPlugin(ch))
    with pytest.raises(ValueError, match="needs an external_id"):
        await ch.inject(InboundMessage("", "+12025550143"))


async def test_an_edit_updates_the_message_in_place(open_sb: Any) -> None:
    ch = LoopbackChannel("tg", "telegram")
    sb = await open_sb(LoopbackPlugin(ch))
    first = await ch.inject(InboundMessage("7:1", "telegram:7", text="helo"))
    assert ch.ctx is not None
    edited = await ch.ctx.edit(
        InboundMessage("7:1", "telegram:7", text="hello", meta={"edit_date": 5})
    )
    assert edited.interaction.id == first.interaction.id
    assert (edited.interaction.text, edited.interaction.meta) == (
        "hello",
        {"edit_date": 5, "edits": 1},
    )
    assert sb.store.count(interaction_t) == 1
    unseen = await ch.ctx.edit(InboundMessage("7:2", "telegram:7", text="never saw it"))
    assert not unseen.duplicate and unseen.interaction.text == "never saw it"
    types = [e.type for e in sb.events.read_since(0)]
    assert types == ["contact.created", "message.received", "message.edited", "message.received"]


async def test_an_unsent_message_stays_marked_with_its_content_gone(
    open_sb: Any, tmp_path: Path
) -> None:
    ch = LoopbackChannel("tg", "telegram")
    sb = await open_sb(LoopbackPlugin(ch))
    assert ch.ctx is not None
    folder = ch.ctx.files_dir(tmp_path / "files")
    folder.mkdir(parents=True)
    ours = folder / "photo.jpg"
    ours.write_bytes(b"jpeg")
    elsewhere = tmp_path / "not-ours.txt"  # a stored path outside our folders
    elsewhere.write_text("keep me")
    files = [
        {"kind": "image", "path": str(ours), "file_name": "photo.jpg"},
        {"kind": "file", "path": str(elsewhere)},
    ]
    await ch.inject(InboundMessage("7:1", "telegram:7", text="secret", meta={"attachments": files}))
    await ch.inject(InboundMessage("7:2", "telegram:7", text="kept"))
    gone = await ch.ctx.deleted("7:1")
    assert gone is not None and gone.text is None
    assert gone.meta["deleted"]["content_kept"] is False
    assert [a.get("path") for a in gone.meta["attachments"]] == [None, None]
    assert gone.meta["attachments"][0]["skipped"] == "deleted by the sender"
    assert not ours.exists() and elsewhere.read_text() == "keep me"
    kept = await ch.ctx.deleted("7:2", keep=True)
    assert kept is not None and kept.text == "kept" and kept.meta["deleted"]["content_kept"]
    again = await ch.ctx.deleted("7:1")  # told twice: nothing new
    assert again is not None and again.meta["deleted"] == gone.meta["deleted"]
    assert await ch.ctx.deleted("7:999") is None
    types = [e.type for e in sb.events.read_since(0)]
    assert types.count("message.deleted") == 2


async def test_a_name_learned_later_names_only_a_contact_still_named_by_its_address(
    open_sb: Any,
) -> None:
    ch = LoopbackChannel("tg", "telegram")
    sb = await open_sb(LoopbackPlugin(ch))
    assert ch.ctx is not None
    first = await ch.inject(InboundMessage("5:1", "telegram:5", text="hi"))
    assert first.contact.name == "5"  # no name given: named by the address
    assert await ch.ctx.name_contact("telegram:5", "Olga\nPetrova\x00") is True
    renamed = sb.store.get_contact(first.contact.id)
    assert renamed is not None and renamed.name == "Olga Petrova"  # one line, no NUL
    assert await ch.ctx.name_contact("telegram:5", "someone else") is False  # named now
    named = await sb.create_contact("Boss", [Address("telegram", "6")])
    assert await ch.ctx.name_contact("telegram:6", "boss_tg") is False  # an agent's name
    assert sb.store.get_contact(named.id).name == "Boss"
    assert await ch.ctx.name_contact("telegram:7", "nobody") is False  # no such contact
    assert await ch.ctx.name_contact("telegram:5", "  ") is False


async def test_linking_addresses_merges_two_contacts(open_sb: Any) -> None:
    ch = LoopbackChannel("tg", "telegram")
    sb = await open_sb(LoopbackPlugin(ch), config={"switchboard": {"default_region": "RU"}})
    known = sb.store.create_contact("Olga", [Address("phone", "+74951234567")])
    got = await ch.inject(InboundMessage("9:1", "telegram:9", text="hi", sender_name="olga_tg"))
    assert got.contact.id != known.id
    assert ch.ctx is not None
    merged = await ch.ctx.link_addresses("8 495 123-45-67", "telegram:9")
    assert merged.id == known.id
    assert set(merged.addresses) == {Address("phone", "+74951234567"), Address("telegram", "9")}
    assert [i.text for i in sb.store.timeline(known.id or 0)] == ["hi"]
    assert sb.store.get_contact(got.contact.id or 0) is None
    again = await ch.ctx.link_addresses("+74951234567", "telegram:9")
    assert again.id == known.id  # already one contact: nothing changes
    fresh = await ch.ctx.link_addresses("+74950000009", "telegram:10")
    assert set(fresh.addresses) == {Address("phone", "+74950000009"), Address("telegram", "10")}
