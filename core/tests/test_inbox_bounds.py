"""Hostile inbound items at the core's edge: bounded before the store, and one item the
database refuses never fails the other messages of its batch (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard import InboundMessage, limits
from switchboard.store import interaction_t
from switchboard.testing import LoopbackChannel, LoopbackPlugin


def hostile() -> list[InboundMessage]:
    return [
        InboundMessage("long-name", "+12025550101", text="a", sender_name="Ж" * 400),
        InboundMessage("long-subject", "+12025550102", text="b", subject="s\r\n" * 600),
        InboundMessage("x" * 300, "+12025550103", text="c"),
        InboundMessage(
            "nul\x00id",
            "+12025550104",
            text="nul\x00in text",
            sender_name="Eve\x00\r\nBcc: x",
            meta={"file\x00": ["a\x00b", {"k": "v\x00"}]},
        ),
        InboundMessage("surrogate", "+12025550105", text="bad \udcff byte"),
    ]


async def test_hostile_fields_are_bounded_and_every_message_is_stored(open_sb: Any) -> None:
    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch))
    valid = [InboundMessage(f"ok-{i}", f"+1202555020{i}", text=f"fine {i}") for i in range(5)]
    # all at once: one group-committed batch with the valid messages of other senders
    got = await asyncio.gather(*(ch.inject(m) for m in [*hostile(), *valid]))
    assert sb.store.count(interaction_t) == 10
    by_text = {r.interaction.text: r for r in got}
    assert by_text["a"].contact.name == "Ж" * limits.MAX_NAME
    subject = by_text["b"].interaction.subject
    assert subject is not None and len(subject) <= limits.MAX_SUBJECT
    assert "\r" not in subject and "\n" not in subject
    digested = by_text["c"].interaction.external_id
    assert digested is not None and digested.startswith("sha256:") and len(digested) == 71
    nul = by_text["nulin text"]
    assert nul.interaction.external_id == "nulid"
    assert nul.contact.name == "Eve Bcc: x"
    assert nul.interaction.meta == {"file": ["ab", {"k": "v"}]}
    assert by_text["bad \ufffd byte"].interaction.external_id == "surrogate"
    # the long id still deduplicates: the same message again is a duplicate
    again = await ch.inject(InboundMessage("x" * 300, "+12025550103", text="c"))
    assert again.duplicate and again.interaction.id == by_text["c"].interaction.id


async def test_a_very_long_text_is_cut_and_says_so(open_sb: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(limits, "MAX_TEXT", 1000)
    ch = LoopbackChannel("sms")
    await open_sb(LoopbackPlugin(ch))
    got = await ch.inject(InboundMessage("big", "+12025550143", text="y" * 5000))
    assert got.interaction.text == "y" * 1000
    assert got.interaction.meta["truncated"] == "text cut to 1000 characters"


async def test_an_item_the_database_refuses_fails_alone(open_sb: Any) -> None:
    """NaN is not JSON to PostgreSQL (DataError): only that message fails; the rest of its
    batch is stored (before, only IntegrityError fell back to item by item). SQLite keeps
    NaN, so there all six are stored."""
    ch = LoopbackChannel("sms")
    sb = await open_sb(LoopbackPlugin(ch))
    bad = InboundMessage("nan", "+12025550199", text="bad", meta={"score": float("nan")})
    valid = [InboundMessage(f"ok-{i}", f"+1202555030{i}", text=f"fine {i}") for i in range(5)]
    got = await asyncio.gather(*(ch.inject(m) for m in [bad, *valid]), return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in got[1:]), got
    if sb.store.dialect == "postgresql":
        assert isinstance(got[0], Exception) and "NaN" in str(got[0])
        assert sb.store.count(interaction_t) == 5
    else:
        assert sb.store.count(interaction_t) == 6
