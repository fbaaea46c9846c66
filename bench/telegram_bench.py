"""Telegram channel: inbound updates through the core, outbound at Telegram's limits.

Runs against the loopback Bot API (``switchboard_telegram.testing``) in the same process.
Inbound: N updates from 500 users queued at the Bot API, then the channel polls them
(getUpdates, 100 at a time) into the core (resolve + save + hooks); updates/s from the
channel's start to the last one stored. Outbound: M messages to 60 chats with the default
limits (30/s overall, 1/s per chat) while every 25th sendMessage answers 429
(retry_after 1): the rate reached and how many messages were lost.
Usage: python bench/telegram_bench.py [--updates 10000] [--messages 600]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

from switchboard import InteractionStatus, hookimpl
from switchboard.store import interaction_t
from switchboard.testing import LoopbackPlugin, open_switchboard
from switchboard_telegram.channel import TelegramChannel, TelegramSettings
from switchboard_telegram.testing import BotApi, bot_api


class Plugin(LoopbackPlugin):
    """The Telegram channel, plus a count of the messages the core stored."""

    def __init__(self) -> None:
        super().__init__(TelegramChannel(), plugin_name="telegram", settings=TelegramSettings)
        self.received = 0

    @hookimpl
    def message_received(self) -> None:
        self.received += 1


async def inbound(api: BotApi, url: str, n: int) -> float:
    for i in range(n):
        api.push({"message": api.message(10_000 + i % 500, f"update {i}")})
    plugin = Plugin()
    with tempfile.TemporaryDirectory() as folder:
        config = {
            "plugins": {
                "telegram": {
                    "token": api.token,
                    "base_url": f"{url}/bot",
                    "base_file_url": f"{url}/file/bot",
                    "poll_timeout": 1,
                }
            }
        }
        started = time.perf_counter()
        sb = await open_switchboard(folder, plugin, config=config)
        while sb.store.count(interaction_t) < n:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        assert plugin.received == n
        await sb.close()
    return n / elapsed


async def outbound(api: BotApi, url: str, m: int) -> tuple[float, int, int]:
    plugin = Plugin()
    real = api._m_sendMessage
    calls = 0

    async def flaky(params: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls % 25 == 0:
            api.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
        return await real(params)

    api._m_sendMessage = flaky  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder:
        config = {
            "switchboard": {"outbox": {"poll_interval": 0.05}},
            "plugins": {
                "telegram": {
                    "token": api.token,
                    "base_url": f"{url}/bot",
                    "base_file_url": f"{url}/file/bot",
                    "poll_timeout": 1,
                }
            },
        }
        sb = await open_switchboard(folder, plugin, config=config)
        ids = [
            (
                await sb.outbox.enqueue(
                    "telegram", address=f"telegram:{20_000 + i % 60}", text=f"out {i}"
                )
            ).id
            for i in range(m)
        ]
        worker = asyncio.create_task(sb.outbox.run())
        started = time.perf_counter()
        while sb.outbox.depth():
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        sb.outbox.stop()
        await worker
        sent = sum(sb.store.get_interaction(i).status is InteractionStatus.SENT for i in ids)
        await sb.close()
    delivered = {s["text"] for s in api.sent}
    lost = m - len(delivered & {f"out {i}" for i in range(m)})
    return sent / elapsed, m - sent, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=600)
    args = parser.parse_args()
    print(machine())
    with bot_api() as (api, url):
        rate = asyncio.run(inbound(api, url, args.updates))
    print(
        f"inbound: {args.updates} updates from 500 users: {rate:.0f} updates/s through "
        f"the core (SQLite)"
    )
    with bot_api() as (api, url):
        out_rate, failed, lost = asyncio.run(outbound(api, url, args.messages))
        injected = sum(1 for method, _ in api.calls if method == "sendMessage") - len(api.sent)
    print(
        f"outbound: {args.messages} messages to 60 chats, {injected} answered 429: "
        f"{out_rate:.1f} messages/s (limit 30/s), {failed} failed, {lost} lost"
    )


if __name__ == "__main__":
    main()
