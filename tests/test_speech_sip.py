"""A real call, end to end: a customer's phone (baresip) calls through Kamailio, the SIP
channel rings alice's phone (baresip) and records the call; the speech plugin transcribes
both sides, measures and scores it, and the call is found by a word the customer said."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sip_peers import AGENTS, CALLER, baresip, ended_call, kam, sip_plugin, sip_settings, until
from sip_peers import softphones as softphones  # the fixture

from switchboard import Principal, Role
from switchboard.testing import open_switchboard
from switchboard_sip.testing import Baresip, Kamailio
from switchboard_speech import SpeechPlugin
from switchboard_speech.testing import Line, conversation

__all__ = ["kam", "softphones"]

RULES = [
    {"name": "greeting", "phrases": ["good morning"], "within_s": 6},
    {"name": "next step", "phrases": ["schedule a demo"]},
]


async def test_a_recorded_sip_call_gets_a_transcript_metrics_a_score_and_is_found(
    tmp_path: Path, kam: Kamailio, softphones: list[Baresip]
) -> None:
    # what each phone plays from its answer: baresip ends the call when its file ends, so
    # the files last longer than the call
    greeting = tmp_path / "alice.wav"
    conversation(
        greeting, [Line("agent", 1.0, "Good morning, thank you for calling Acme.")], 30, mono=True
    )
    complaint = tmp_path / "customer.wav"
    conversation(
        complaint, [Line("customer", 5.0, "Hello, I have a problem with my order.")], 30, mono=True
    )
    sb = await open_switchboard(
        tmp_path,
        sip_plugin(),
        SpeechPlugin(),
        config={
            "switchboard": {"agents": AGENTS},
            "plugins": {
                "sip": sip_settings(kam, ring_agents=["alice"]),
                "speech": {"rules": RULES},
            },
        },
    )
    try:
        speech = sb.plugin("speech").speech  # type: ignore[union-attr]
        await sb.consumers.start()  # as the runner does: call.recorded queues a job
        await baresip(softphones, tmp_path, kam, "101", "udp", source=greeting)
        customer = await baresip(softphones, tmp_path, kam, CALLER, "udp", source=complaint)
        customer.command("dial", f"sip:switchboard@127.0.0.1:{kam.port}")
        await until(lambda: any(c.agent_id for c in sb.store.list_calls()), within=20)
        await asyncio.sleep(10)
        customer.command("hangup")
        record = await until(lambda: ended_call(sb), within=15)
        await until(lambda: sb.store.get_call(record.call_id).recording is not None, within=15)
        deadline = asyncio.get_running_loop().time() + 30
        while not (await speech.job_counts()).get("queued"):
            assert asyncio.get_running_loop().time() < deadline, "no job queued"
            await asyncio.sleep(0.1)
        await speech.run(until_idle=True)
        found = (await speech.analyses([record.call_id]))[record.call_id]
        assert found["status"] == "done", found
        said = {s["speaker"]: s["text"] for s in found["segments"]}
        print("transcript:", found["segments"])
        assert "morning" in said["agent"]
        assert "order" in said["customer"]
        assert found["metrics"]["agent_talk_s"] > 1 and found["metrics"]["customer_talk_s"] > 1
        assert {r["rule"]: r["passed"] for r in found["rules"]} == {
            "greeting": True,
            "next step": False,
        }
        assert found["score"] == 50.0
        supervisor = Principal(name="sue", role=Role.SUPERVISOR)
        hits = await sb.search_calls(supervisor, "order")
        assert [c.call_id for c, _ in hits] == [record.call_id]
    finally:
        await sb.consumers.stop()
        await sb.close()
