"""The flow engine through an in-memory CallSession."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ivr_fakes import HANGUP, FakeSession

from switchboard import Agent, CallSession, Disposition
from switchboard_ivr.engine import Engine
from switchboard_ivr.flow import Prompt, build_flow

AGENTS = [
    Agent(id=1, name="anna", extension="101"),
    Agent(id=2, name="boris", extension="102"),
    Agent(id=3, name="carl", extension="103"),
]
OPEN = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def flow_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "start": "hours",
        "timezone": "Europe/Moscow",
        "consent": {"text": "recorded"},
        "groups": {
            "sales": {"agents": ["anna", "boris", "carl"], "strategy": "round_robin"},
            "support": {"agents": ["boris", "carl"], "strategy": "longest_idle"},
        },
        "nodes": {
            "hours": {
                "type": "hours",
                "weekly": dict(OPEN),
                "holidays": ["2026-12-31"],
                "open": "known",
                "closed": "closed",
            },
            "known": {"type": "caller", "next": "greeting"},
            "greeting": {
                "type": "menu",
                "prompt": {"text": "menu"},
                "invalid": {"text": "invalid"},
                "retries": 2,
                "default": "operator",
                "options": {"1": "sales", "2": "support", "0": "operator"},
            },
            "sales": {"type": "group", "group": "sales", "no_answer": "voicemail"},
            "support": {"type": "group", "group": "support", "no_answer": "voicemail"},
            "operator": {"type": "agent", "agent": "anna", "no_answer": "voicemail"},
            "closed": {"type": "play", "prompt": {"text": "closed"}, "next": "voicemail"},
            "voicemail": {"type": "voicemail", "prompt": {"text": "leave a message"}},
        },
    }
    doc.update(changes)
    return doc


def engine(
    doc: dict[str, Any] | None = None, now: datetime | None = None, idle: Any = None
) -> Engine:
    flow = build_flow(doc or flow_doc(), agents=[a.name for a in AGENTS])
    when = now or datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    return Engine(
        flow,
        render=lambda p: Path(f"/tts/{p.text}.wav"),
        agents=lambda: AGENTS,
        idle_since=idle,
        now=lambda: when,
    )


def played(session: FakeSession) -> list[str]:
    return [Path(p).stem for kind, p in session.log if kind == "play" and isinstance(p, str)]


def test_the_fake_is_a_call_session() -> None:
    assert isinstance(FakeSession(), CallSession)


async def test_a_digit_routes_to_the_group_and_round_robin_rotates() -> None:
    e = engine()
    first = FakeSession(["1"], answering=["anna", "boris", "carl"])
    await e.run(first)
    second = FakeSession(["1"], answering=["anna", "boris", "carl"])
    await e.run(second)
    assert first.rung == [["anna"]] and second.rung == [["boris"]]
    assert first.steps == [("hours", "open"), ("known", ""), ("greeting", "1"), ("sales", "")]
    assert played(first) == ["menu", "recorded"]  # consent before the agents ring


async def test_round_robin_goes_on_to_the_next_agent_when_one_does_not_answer() -> None:
    s = FakeSession(["1"], answering=["carl"])
    await engine().run(s)
    assert s.rung == [["anna"], ["boris"], ["carl"]]


async def test_an_invalid_digit_replays_the_menu() -> None:
    s = FakeSession(["7", "2"], answering=["boris", "carl"])
    await engine().run(s)
    assert [x for x in s.steps if x[0] == "greeting"] == [("greeting", "7"), ("greeting", "2")]
    assert played(s)[:3] == ["menu", "invalid", "menu"]


async def test_silence_times_out_to_the_default() -> None:
    s = FakeSession(["", "", ""], answering=["anna"])
    await engine().run(s)
    assert [x for x in s.steps if x[0] == "greeting"] == [("greeting", "")] * 3
    assert s.rung == [["anna"]]
    assert ("operator", "") in s.steps


async def test_out_of_hours_plays_closed_then_voicemail() -> None:
    saturday_night = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    doc = flow_doc()
    doc["nodes"]["hours"]["weekly"] = {"mon": "09:00-18:00"}
    s = FakeSession()
    await engine(doc, now=saturday_night).run(s)
    assert s.steps == [("hours", "closed"), ("closed", ""), ("voicemail", "")]
    assert ("record", 120.0) in s.log
    assert s.disposition is Disposition.VOICEMAIL
    assert played(s)[:2] == ["closed", "leave a message"]


async def test_holidays_are_closed_in_the_flows_time_zone() -> None:
    # 21:30 UTC on Dec 30 is 00:30 on Dec 31 in Moscow: a holiday
    s = FakeSession()
    await engine(now=datetime(2026, 12, 30, 21, 30, tzinfo=UTC)).run(s)
    assert s.steps[0] == ("hours", "closed")


async def test_hang_up_in_the_menu_stops_the_flow_where_it_was() -> None:
    s = FakeSession(["", HANGUP])
    await engine().run(s)
    assert s.steps[-1][0] == "greeting" and s.rung == []


async def test_a_known_contact_rings_its_owner_first() -> None:
    s = FakeSession(["2"], answering=["boris"], owner_agent_id=3)
    await engine().run(s)
    assert s.rung[0] == ["carl"]  # the owner; he does not answer, the menu follows
    assert s.steps[1] == ("known", "owner")


async def test_longest_idle_rings_who_waited_longest() -> None:
    last = {
        2: datetime(2026, 11, 25, 11, 0, tzinfo=UTC),
        3: datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
    }
    s = FakeSession(["2"], answering=["boris"])

    async def idle(agent_id: int) -> datetime | None:
        return last.get(agent_id)

    await engine(idle=idle).run(s)
    assert s.rung == [["carl"], ["boris"]]


async def test_nobody_answers_goes_to_voicemail() -> None:
    s = FakeSession(["0"], answering=[])
    await engine().run(s)
    assert s.steps[-1] == ("voicemail", "") and s.disposition is Disposition.VOICEMAIL


async def test_a_menu_without_default_hangs_up_after_its_retries() -> None:
    doc = flow_doc()
    del doc["nodes"]["greeting"]["default"]
    doc["nodes"]["operator"]["no_answer"] = "voicemail"
    doc["nodes"]["greeting"]["options"]["0"] = "operator"
    s = FakeSession(["", "", ""])
    await engine(doc).run(s)
    assert s.rung == [] and s.steps[-1] == ("greeting", "")


@pytest.mark.parametrize("text", ["a", "b"])
def test_prompts_render_through_the_given_renderer(text: str) -> None:
    e = engine()
    assert e.path(Prompt(text=text)) == Path(f"/tts/{text}.wav")
