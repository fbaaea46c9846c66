"""The console with the WhatsApp channel: a WhatsApp message on the card, the window's
end (closed until the customer writes, then open), and delivery ticks on a sent message."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from console_peers import console_service
from wa_peers import post_webhook, settled, wa_settings

from switchboard import Address
from switchboard_whatsapp import WhatsAppPlugin, WhatsAppSettings
from switchboard_whatsapp.testing import graph_api, text_message, webhook_body

OLGA = "12025550143"


def sign_in(c: httpx.Client, who: str) -> str:
    from console_peers import TOKENS

    form = c.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    c.post("/console/login", data={"token": TOKENS[who], "csrf": csrf.group(1)})
    page = c.get("/console/contacts")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def test_the_card_shows_the_whatsapp_window_and_delivery_ticks(tmp_path: Path) -> None:
    with (
        graph_api() as graph,
        console_service(
            tmp_path / "svc",
            (WhatsAppPlugin(), "whatsapp", WhatsAppSettings),
            plugins_config={"whatsapp": wa_settings(graph, per_recipient_seconds=0)},
        ) as service,
    ):
        sb = service.switchboard
        olga = service.call(sb.create_contact("Olga", [Address("phone", f"+{OLGA}")]))
        card = f"/console/contacts/{olga.id}"
        with httpx.Client(base_url=service.url, timeout=10) as c:
            csrf = sign_in(c, "alice")
            closed = c.get(card).text
            assert "whatsapp: the customer-service window is closed" in closed
            post_webhook(service.url, webhook_body(messages=[text_message(OLGA, "Hi there")]))
            settled(service)
            page = c.get(card).text
            assert "whatsapp: free messages until" in page and "Hi there" in page
            sent = c.post(
                f"{card}/message",
                data={"csrf": csrf, "target": f"whatsapp|phone:+{OLGA}", "text": "Hello Olga"},
            )
            assert sent.status_code == 303
            deadline = time.monotonic() + 10
            while not graph.sent:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            now = str(int(time.time()))
            read = [{"id": graph.sent[0]["id"], "status": "read", "timestamp": now}]
            post_webhook(service.url, webhook_body(statuses=read))
            settled(service)
            while 'class="status read"' not in (page := c.get(card).text):
                assert time.monotonic() < deadline, "no read tick"
                time.sleep(0.05)
            assert "Hello Olga" in page
