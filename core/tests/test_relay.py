"""Call control asked of one runner for a call another runner holds (PostgreSQL): the
request is relayed to the holder, which acts and answers with its result or its error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from switchboard import Direction, Forbidden, Invalid, NotFound, Principal, Role, Unavailable
from switchboard.testing import LoopbackPlugin, LoopbackVoiceChannel, open_switchboard

pytestmark = pytest.mark.postgres


async def test_a_call_held_by_another_runner_is_controlled_through_it(
    tmp_path: Path, pg_url: str
) -> None:
    config = {
        "switchboard": {
            "database_url": pg_url,
            "default_region": "RU",
            "agents": [{"name": "anna"}, {"name": "boris"}, {"name": "sue", "role": "supervisor"}],
        }
    }
    voices = {}
    nodes = []
    tasks = []
    for name in ("a", "b"):
        voices[name] = LoopbackVoiceChannel("voice")
        sb = await open_switchboard(tmp_path / name, LoopbackPlugin(voices[name]), config=config)
        sb.singletons.node = f"host-{name}:{100 + len(nodes)}"  # two runners, one process
        tasks.append(asyncio.create_task(sb.relay.listen()))
        nodes.append(sb)
    a, b = nodes
    try:
        await asyncio.sleep(0.3)  # both LISTENing
        anna = await b.agent("anna")
        await b.calls.ringing(
            "voice", "c1", direction=Direction.INBOUND, from_address="+74951110001",
            to_address="100",
        )  # fmt: skip
        await b.calls.answered("voice", "c1", anna)
        voices["b"].talking.add("c1")
        admin = Principal("ops", Role.ADMIN)

        await a.control_call(admin, "c1", "hold")  # asked of A, done by B
        record = await a.control_call(admin, "c1", "transfer", await a.agent("boris"))
        assert [action for action, _, _ in voices["b"].actions] == ["hold", "transfer"]
        assert voices["a"].actions == []
        assert record.agent_id == (await a.agent("boris")).id  # B's work, read by A
        sue = Principal("sue", Role.SUPERVISOR, await a.agent("sue"))
        record = await a.supervise_call(sue, "c1", "whisper")
        assert voices["b"].actions[-1][0] == "supervise:whisper"
        assert record.supervision[-1].agent_id == sue.agent_id

        # B's errors come back as they are
        with pytest.raises(Invalid):
            await a.control_call(admin, "c1", "transfer", a.parse_address("email:x@example.com"))
        voices["b"].talking.discard("c1")
        with pytest.raises(NotFound):
            await a.control_call(admin, "c1", "resume")
        # A checks first what it can: an agent who does not have the call
        with pytest.raises(Forbidden):
            await a.control_call(Principal("anna", Role.AGENT, anna), "c1", "hold")

        # a holder that does not answer (its runner is gone): 503 after ACK_SECONDS
        tasks[1].cancel()
        await asyncio.gather(tasks[1], return_exceptions=True)
        with pytest.raises(Unavailable, match="does not answer"):
            await a.control_call(admin, "c1", "hold")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sb in nodes:
            await sb.relay.stop()
            await sb.close()
