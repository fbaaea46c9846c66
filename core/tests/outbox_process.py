"""A separate process for the outbox crash tests (run by test_outbox.py, not collected).

``enqueue URL N``: accept N messages, printing each interaction id once committed.
``send URL SINK``: run the outbox worker with a channel that appends to SINK, until empty.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from switchboard import OutboundMessage, Receipt, hookimpl
from switchboard.channels import ChannelContext
from switchboard.testing import open_switchboard


class FileSink:
    name = "sink"
    address_kind = "phone"

    def __init__(self, path: str) -> None:
        self.path = path

    async def start(self, ctx: ChannelContext) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, message: OutboundMessage) -> Receipt:
        await asyncio.sleep(0.01)  # a slow far side, so a kill lands mid-send
        with open(self.path, "a") as f:
            f.write(f"{message.interaction_id} {message.text}\n")
        return Receipt(external_id=f"sink-{message.interaction_id}")


class SinkPlugin:
    plugin_name = "sink"

    def __init__(self, path: str) -> None:
        self.channel = FileSink(path)

    @hookimpl
    def register_channels(self, register):  # type: ignore[no-untyped-def]
        register(self.channel)


async def main(mode: str, url: str, arg: str) -> None:
    folder = tempfile.mkdtemp()
    sink = arg if mode == "send" else str(Path(folder) / "unused")
    config = {
        "switchboard": {
            "database_url": url,
            "outbox": {"lease_seconds": 1.0, "poll_interval": 0.05},
        }
    }
    sb = await open_switchboard(folder, SinkPlugin(sink), config=config)
    if mode == "enqueue":
        for i in range(int(arg)):
            interaction = await sb.outbox.enqueue("sink", address="+12025550143", text=f"msg {i}")
            print(interaction.id, flush=True)
    else:
        print("worker started", flush=True)
        while sb.outbox.depth():
            if not await sb.outbox.process_due():
                await asyncio.sleep(0.05)
    await sb.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
