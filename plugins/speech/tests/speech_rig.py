"""What the speech tests share: a scripted conversation, a Switchboard with the plugin,
and a recorded call in its log."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

from switchboard import Direction, Switchboard
from switchboard.testing import open_switchboard
from switchboard_speech import SpeechPlugin
from switchboard_speech.testing import Line

#: A sales call: the agent greets, the customer interrupts, the agent names a price.
SCRIPT = [
    Line("agent", 0.8, "Good morning, thank you for calling Acme. My name is Alice."),
    Line("customer", 5.5, "Hello, I have a problem with my order."),
    Line("agent", 7.5, "I am sorry to hear that."),
    Line("agent", 11.0, "The price is two hundred dollars per month."),
    Line("customer", 16.0, "I would like to cancel my subscription."),
]
SECONDS = 20.0

RULES = [
    {"name": "greeting", "phrases": ["good morning", "good afternoon"], "within_s": 5},
    {"name": "price", "phrases": ["dollars", "dollar", "price"], "weight": 2},
    {"name": "next step", "phrases": ["schedule a demo", "next meeting"]},
    {"name": "no slang", "kind": "must_not", "phrases": ["whatever"]},
]


def config(**speech: Any) -> dict[str, Any]:
    return {
        "switchboard": {
            "default_region": "US",
            "agents": [{"name": "alice", "extension": "101"}, {"name": "bob", "extension": "102"}],
        },
        "plugins": {"speech": {"rules": RULES, **speech}},
    }


async def open_speech(folder: Path, db: str | None = None, **speech: Any) -> Switchboard:
    cfg = config(**speech)
    if db is not None:
        cfg["switchboard"]["database_url"] = db
    return await open_switchboard(folder, SpeechPlugin(), config=cfg, start=False)


def plugin(sb: Switchboard) -> Any:
    found = sb.plugin("speech")
    assert found is not None and found.speech is not None
    return found.speech


async def recorded_call(
    sb: Switchboard, call_id: str, wav: Path, agent: str = "alice", number: str = "+12025550143"
) -> None:
    """A call ``agent`` answered, ended, its recording ``wav`` saved (the SIP channel's
    steps, made here by hand)."""
    who = sb.store.get_agent(agent)
    assert who is not None
    await sb.calls.ringing(
        "sip",
        call_id,
        direction=Direction.INBOUND,
        from_address=number,
        to_address="+12025550100",
        agents=[who.id],
    )
    await sb.calls.answered("sip", call_id, who)
    await sb.calls.ended("sip", call_id, hangup_cause="BYE")
    await sb.calls.recording_saved("sip", call_id, wav)


def silent_wav(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00" * int(8000 * seconds) * 4)
    return path
