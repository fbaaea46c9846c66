"""The console with the Messenger and Instagram channels: their badges on the card, the
window (open after the person wrote; closed without a template form, since Meta takes
no message then), and a message its sender unsent, shown as deleted without its text."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from console_peers import TOKENS, console_service
from meta_peers import post_webhook, settled

from switchboard import Address
from switchboard_meta import MetaPlugin, MetaSettings
from switchboard_meta.testing import event, meta_graph, settings, text_event, webhook_body

OLGA = "6912345678901234"
IVAN = "1789012345678901"
IG = "17841400000000001"


def sign_in(c: httpx.Client, who: str) -> None:
    form = c.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    c.post("/console/login", data={"token": TOKENS[who], "csrf": csrf.group(1)})


def test_the_card_shows_meta_messages_windows_and_unsent_ones(tmp_path: Path) -> None:
    templates = {"hello": {"text": "Hello!", "channels": {"messenger": {}}}}
    with (
        meta_graph() as graph,
        console_service(
            tmp_path / "svc",
            (MetaPlugin(), "meta", MetaSettings),
            plugins_config={"meta": settings(graph)},
            templates=templates,
        ) as service,
    ):
        old = time.time() - 30 * 3600
        post_webhook(service.url, webhook_body([text_event(OLGA, "a day ago", mid="m_C0", at=old)]))
        post_webhook(
            service.url,
            webhook_body([text_event(IVAN, "in stock?", mid="ig_C1", account=IG)]),
        )
        settled(service)
        sb = service.switchboard
        olga = sb.store.find_contact(Address("messenger", OLGA))
        ivan = sb.store.find_contact(Address("instagram", IVAN))
        assert olga is not None and ivan is not None
        with httpx.Client(base_url=service.url, timeout=10) as c:
            sign_in(c, "alice")
            closed = c.get(f"/console/contacts/{olga.id}").text
            assert 'data-testid="channel">FB<' in closed and "a day ago" in closed
            assert "messenger: the window is closed until they write again" in closed
            assert "window-template-messenger" not in closed  # Meta would refuse any
            assert 'value="messenger|' not in closed  # nor a free text
            open_card = c.get(f"/console/contacts/{ivan.id}").text
            assert 'data-testid="channel">IG<' in open_card
            assert "instagram: free messages until" in open_card
            assert 'value="instagram|instagram:' + IVAN in open_card
            post_webhook(
                service.url,
                webhook_body(
                    [event(IVAN, "message", {"mid": "ig_C1", "is_deleted": True}, account=IG)]
                ),
            )
            settled(service)
            unsent = c.get(f"/console/contacts/{ivan.id}").text
            assert 'data-testid="deleted">deleted by the sender<' in unsent
            assert "in stock?" not in unsent
