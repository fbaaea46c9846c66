"""The console with the WhatsApp channel: a WhatsApp message on the card, the window's
end (closed until the customer writes, then open), delivery ticks on a sent message, the
template picker of a closed window, and the media a customer sent (shown, downloaded, or
the reason it was not kept; never a file outside the served folders)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa
from console_peers import console_service
from wa_peers import post_webhook, settled, wa_settings

from switchboard import Address
from switchboard.store import interaction_t
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


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def test_a_closed_window_offers_only_whatsapp_templates_and_media_show_on_the_card(
    tmp_path: Path,
) -> None:
    from console_peers import TEMPLATES, TOKENS

    templates = {
        **TEMPLATES,
        "shipped": {
            "text": "Your order shipped",
            "channels": {"whatsapp": {"whatsapp_template": {"name": "shipped", "language": "en"}}},
        },
    }
    with (
        graph_api() as graph,
        console_service(
            tmp_path / "svc",
            (WhatsAppPlugin(), "whatsapp", WhatsAppSettings),
            plugins_config={"whatsapp": wa_settings(graph, max_file_bytes=2000)},
            templates=templates,
        ) as service,
    ):
        sb = service.switchboard
        olga = service.call(sb.create_contact("Olga", [Address("phone", f"+{OLGA}")]))
        card = f"/console/contacts/{olga.id}"
        with httpx.Client(base_url=service.url, timeout=10) as c:
            csrf = sign_in(c, "alice")
            page = c.get(card).text
            form = page.split('data-testid="window-template-whatsapp"')[1].split("</form>")[0]
            assert re.findall(r"<option>([^<]+)</option>", form) == ["shipped"]
            # a free text would be refused: WhatsApp is offered in that form only
            assert page.count('value="whatsapp|') == 1
            sent = c.post(
                f"{card}/message",
                data={"csrf": csrf, "target": f"whatsapp|phone:+{OLGA}", "template": "shipped"},
            )
            assert sent.status_code == 303 and "error" not in sent.headers["location"]

            photo = graph.add_media(PNG, "image/png")
            doc = graph.add_media(b"<script>alert(1)</script>", "text/html")
            big = graph.add_media(b"x" * 5000, "video/mp4")
            messages = [
                text_message(
                    OLGA,
                    "",
                    ident="wamid.P",
                    type="image",
                    image={"id": photo, "mime_type": "image/png", "caption": "my cat"},
                ),
                text_message(
                    OLGA,
                    "",
                    ident="wamid.D",
                    type="document",
                    document={
                        "id": doc,
                        "mime_type": "text/html",
                        "filename": "../../etc/page.html",
                    },
                ),
                text_message(
                    OLGA,
                    "",
                    ident="wamid.V",
                    type="video",
                    video={"id": big, "mime_type": "video/mp4"},
                ),
            ]
            post_webhook(service.url, webhook_body(messages=messages))
            settled(service)
            page = c.get(card).text
            assert "window-template-whatsapp" not in page  # the customer wrote: open again
            images = re.findall(r'<img src="(/console/interactions/\d+/attachments/0)"', page)
            assert len(images) == 1
            shown = c.get(images[0])
            assert shown.status_code == 200 and shown.content == PNG
            assert shown.headers["content-type"] == "image/png"
            assert shown.headers["x-content-type-options"] == "nosniff"
            [link] = re.findall(
                r'<a href="(/console/interactions/\d+/attachments/0)" download>', page
            )
            got = c.get(link)
            assert got.content == b"<script>alert(1)</script>"
            assert got.headers["content-type"] == "application/octet-stream"
            assert got.headers["content-disposition"].startswith("attachment;")
            assert "page.html" in got.headers["content-disposition"]
            assert "larger than max_file_bytes (2000)" in page  # the video: not kept, said so

        timeline = httpx.get(
            f"{service.url}/api/contacts/{olga.id}/timeline",
            headers={"Authorization": f"Bearer {TOKENS['alice']}"},
        ).json()["items"]
        by_text = {i["text"]: i for i in timeline}
        [photo_file] = by_text["my cat"]["attachments"]
        assert photo_file["shown"] == "image" and photo_file["mime_type"] == "image/png"
        api_file = httpx.get(
            service.url + photo_file["url"],
            headers={"Authorization": f"Bearer {TOKENS['alice']}"},
        )
        assert api_file.content == PNG
        assert httpx.get(service.url + photo_file["url"]).status_code == 401

        # a path in a stored row that points elsewhere is never served
        forged = service.call(sb.create_contact("Forged", [Address("phone", "+12025550100")]))
        with sb.store.write() as conn:
            conn.execute(
                sa.insert(interaction_t).values(
                    contact_id=forged.id,
                    kind="message",
                    direction="inbound",
                    channel="whatsapp",
                    status="received",
                    text="x",
                    meta={"attachment": {"path": "/etc/hostname", "mime_type": "text/plain"}},
                    created_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC),
                )
            )
        forged_items = httpx.get(
            f"{service.url}/api/contacts/{forged.id}/timeline",
            headers={"Authorization": f"Bearer {TOKENS['alice']}"},
        ).json()["items"]
        refused = httpx.get(
            service.url + forged_items[0]["attachments"][0]["url"],
            headers={"Authorization": f"Bearer {TOKENS['alice']}"},
        )
        assert refused.status_code == 404
