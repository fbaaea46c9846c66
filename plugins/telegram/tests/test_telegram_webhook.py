"""Webhook mode: Telegram pushes updates to a runner route, checked against the secret."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

import switchboard_telegram
from switchboard import Address
from switchboard.app import create_app
from switchboard.plugins import Plugins
from switchboard.store import interaction_t
from switchboard.testing import make_config, serve_in_thread
from switchboard_telegram.testing import bot_api

SECRET = "webhook-secret-0123456789"


def test_webhook_updates_are_checked_and_stored(tmp_path: Path) -> None:
    with bot_api() as (api, url):
        plugins = Plugins()
        plugins.register(switchboard_telegram.TelegramPlugin(), "telegram")  # as its entry point
        config = make_config(
            tmp_path,
            {
                "plugins": {
                    "telegram": {
                        "token": api.token,
                        "base_url": f"{url}/bot",
                        "base_file_url": f"{url}/file/bot",
                        "mode": "webhook",
                        "webhook_url": "https://crm.example.com/telegram/webhook",
                        "webhook_secret": SECRET,
                    }
                }
            },
            {"telegram": switchboard_telegram.TelegramSettings},
        )
        with serve_in_thread(create_app(config, plugins=plugins)) as running:
            handle = running.switchboard.channels["telegram"]
            deadline = time.monotonic() + 10
            while handle.state.value != "running":  # channels start in the background
                assert time.monotonic() < deadline, handle.last_error
                time.sleep(0.02)
            assert api.webhook["url"] == "https://crm.example.com/telegram/webhook"
            assert api.webhook["secret_token"] == SECRET
            update = {"update_id": 77, "message": api.message(701, "via webhook")}
            hook = f"{running.url}/telegram/webhook"
            wrong = httpx.post(
                hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"}
            )
            assert wrong.status_code == 403
            assert httpx.post(hook, json=update).status_code == 403
            junk = httpx.post(
                hook, content=b"not json", headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
            )
            assert junk.status_code == 422
            ok = httpx.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
            assert ok.status_code == 200
            again = httpx.post(
                hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
            )
            assert again.status_code == 200  # Telegram retries: stored once
            sb = running.switchboard
            assert sb.store.count(interaction_t) == 1
            contact = sb.store.find_contact(Address("telegram", "701"))
            assert contact is not None
            assert sb.store.timeline(contact.id or 0)[0].text == "via webhook"
            time.sleep(0.1)
            assert not any(method == "getUpdates" for method, _ in api.calls)
