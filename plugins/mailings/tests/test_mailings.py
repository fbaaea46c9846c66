"""Mailings through the runner: lists, a mailing to a list, signed open/click/unsubscribe
links served under /t/, statistics; an unsubscribed contact gets no further mailing."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sbservice import Service, start_service

from switchboard.testing import serve_in_thread

TEMPLATES = {
    "welcome": {"subject": "Welcome, {{ contact.name }}", "text": "Hello {{ contact.name }}."},
    "offer": {
        "subject": "{{ season }} offer for {{ contact.name }}",
        "text": "Hello {{ contact.name }}, see https://shop.example.com/sale",
        "html": "<html><body><p>Hello {{ contact.name }}</p>"
        '<a href="https://shop.example.com/sale?x=1">Sale</a></body></html>',
    },
}
TEMPLATES["news"] = {
    "subject": "News for {{ contact.company }}",
    "text": "Hello {{ contact.name }} ({{ contact.addresses | length }} addresses, "
    "this one {{ contact.address }})",
    "html": '<a href="https://shop.example.com/p?a=1&amp;b=2">Sale</a>',
}
TEMPLATES["followup"] = {
    "subject": "About your call",
    "text": "Thanks for calling us at {{ call.ringing_at[11:16] }} ({{ call.direction }}).",
}
MAILINGS = {"public_url": "https://crm.example.com", "link_secret": "0123456789abcdef-secret"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    app, channels = start_service(
        tmp_path, templates=TEMPLATES, plugins_config={"mailings": MAILINGS}
    )
    with serve_in_thread(app) as running:
        yield Service(running, channels)


def wait_for(check: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def local(url: str, service: Service) -> str:
    """The public link, pointed at the test runner."""
    return url.replace(MAILINGS["public_url"], service.url)


def test_a_mailing_to_a_list_with_tracking_and_one_click_unsubscribe(service: Service) -> None:
    with service.client("sue") as sue, service.client("anna") as anna:
        ids = []
        for name, address in [
            ("Olga", "olga@example.com"),
            ("Ivan", "ivan@example.com"),
            ("Petr", "+74951234567"),
        ]:
            r = sue.post("/api/contacts", json={"name": name, "addresses": [address]})
            ids.append(r.json()["id"])
        assert anna.post("/api/lists/customers", json={"add": ids}).status_code == 403
        assert sue.post("/api/lists/customers", json={"add": ids}).json() == {
            "name": "customers",
            "size": 3,
        }
        assert sue.post("/api/lists/customers", json={"add": [99999]}).status_code == 404
        assert sue.get("/api/lists").json()["items"] == [{"name": "customers", "size": 3}]

        bad = sue.post(
            "/api/mailings",
            json={"name": "x", "channel": "mail", "template": "offer", "audience": "customers"},
        )
        assert bad.status_code == 422 and "'season' is undefined" in bad.text
        assert service.sb.outbox.depth() == 0  # nothing stored when a rendering fails

        r = sue.post(
            "/api/mailings",
            json={
                "name": "Winter sale",
                "channel": "mail",
                "template": "offer",
                "audience": "customers",
                "variables": {"season": "Winter"},
            },
        )
        assert r.status_code == 201, r.text
        mailing = r.json()
        assert (mailing["total"], mailing["skipped"]) == (2, 1)  # Petr has no email address
        sent = wait_for(
            lambda: len(service.channels["mail"].sent) == 2 and service.channels["mail"].sent
        )
        stats = wait_for(
            lambda: (s := sue.get(f"/api/mailings/{mailing['id']}").json())["finished"] and s
        )
        assert (stats["sent"], stats["queued"], stats["failed"]) == (2, 0, 0)

        olga = next(m for m in sent if m.address.value == "olga@example.com")
        assert olga.subject == "Winter offer for Olga"
        unsubscribe = olga.payload["list_unsubscribe"]
        assert unsubscribe.startswith("https://crm.example.com/t/")
        html = olga.payload["html"]
        [pixel] = re.findall(r'<img src="([^"]+)"', html)
        [click] = re.findall(r'href="([^"]+)"', html)
        assert "shop.example.com" not in click.split("?u=")[0]

        # the open pixel and the click redirect
        with httpx.Client(timeout=10) as web:
            gif = web.get(local(pixel, service))
            assert (gif.status_code, gif.headers["content-type"]) == (200, "image/gif")
            hop = web.get(local(click.replace("&amp;", "&"), service), follow_redirects=False)
            assert hop.status_code == 302
            assert hop.headers["location"] == "https://shop.example.com/sale?x=1"
            # a forged target (or signature) is refused: not an open redirect
            token = click.split("/t/")[1].split("/")[0]
            forged = f"{service.url}/t/{token}/click?u={quote('https://evil.example')}&s=abc"
            assert web.get(forged).status_code == 404
            assert web.get(f"{service.url}/t/1.nope/open.gif").status_code == 200  # not counted
            # RFC 8058 one-click unsubscribe; the page for people has a button, not a GET action
            page = web.get(local(unsubscribe, service))
            assert page.status_code == 200 and "<form method=post>" in page.text
            done = web.post(local(unsubscribe, service), content=b"List-Unsubscribe=One-Click")
            assert done.status_code == 200
            assert web.post(f"{service.url}/t/1.forged/unsubscribe").status_code == 404

        stats = sue.get(f"/api/mailings/{mailing['id']}").json()
        assert (stats["opened"], stats["clicked"], stats["unsubscribed"]) == (1, 1, 1)

        # Olga unsubscribed: the next mailing skips her
        again = sue.post(
            "/api/mailings",
            json={
                "name": "Spring",
                "channel": "mail",
                "template": "welcome",
                "audience": "customers",
            },
        ).json()
        assert (again["total"], again["skipped"]) == (1, 2)
        later = wait_for(
            lambda: len(service.channels["mail"].sent) == 3 and service.channels["mail"].sent
        )
        assert later[-1].address.value == "ivan@example.com"
        listed = sue.get("/api/mailings").json()["items"]
        assert [m["name"] for m in listed] == ["Spring", "Winter sale"]
        assert sue.get("/api/mailings/9999").status_code == 404


def test_mailings_need_links_configured(tmp_path: Path) -> None:
    app, _ = start_service(tmp_path, templates=TEMPLATES, plugins_config={})
    with serve_in_thread(app) as running:
        service = Service(running, {})
        with service.client("sue") as sue:
            cid = sue.post("/api/contacts", json={"name": "A", "addresses": ["a@example.com"]})
            sue.post("/api/lists/l", json={"add": [cid.json()["id"]]})
            r = sue.post(
                "/api/mailings",
                json={"name": "x", "channel": "mail", "template": "welcome", "audience": "l"},
            )
            assert r.status_code == 422 and "public_url and link_secret" in r.text


def test_a_template_sees_the_call_it_follows_up(service: Service) -> None:
    from switchboard import Direction

    service.running.call(
        service.sb.calls.ringing(
            "voice",
            "c-77",
            direction=Direction.INBOUND,
            from_address="+74951234599",
            to_address="1",
        )
    )
    with service.client("sue") as sue:
        r = sue.post(
            "/api/templates/followup/preview",
            json={"address": "a@example.com", "call_id": "c-77"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["text"].startswith("Thanks for calling us at ")
        assert r.json()["text"].endswith("(inbound).")
        missing = sue.post(
            "/api/templates/followup/preview", json={"address": "a@example.com", "call_id": "nope"}
        )
        assert missing.status_code == 404


def test_a_slow_mailing_is_not_sent_to_someone_who_unsubscribed_meanwhile(
    service: Service,
) -> None:
    """Unsubscribing cancels the contact's messages still queued in other mailings on the
    channel (a failure with the reason, at once); the send checks the list again."""
    mail = service.channels["mail"]
    with service.client("sue") as sue:
        olga, ivan = (
            sue.post("/api/contacts", json={"name": n, "addresses": [a]}).json()["id"]
            for n, a in [("Olga", "olga@example.com"), ("Ivan", "ivan@example.com")]
        )
        sue.post("/api/lists/both", json={"add": [olga, ivan]})
        sue.post("/api/lists/ivan", json={"add": [ivan]})
        slow = sue.post(
            "/api/mailings",
            json={
                "name": "Slow",
                "channel": "mail",
                "template": "welcome",
                "audience": "both",
                "rate_per_minute": 1,  # Olga now, Ivan in a minute
            },
        ).json()
        wait_for(lambda: len(mail.sent) == 1)
        fast = sue.post(
            "/api/mailings",
            json={"name": "Fast", "channel": "mail", "template": "welcome", "audience": "ivan"},
        ).json()
        [to_ivan] = wait_for(
            lambda: [m for m in mail.sent if m.payload["mailing_id"] == fast["id"]]
        )
        with httpx.Client(timeout=10) as web:
            done = web.post(local(to_ivan.payload["list_unsubscribe"], service))
            assert done.status_code == 200
        stats = wait_for(
            lambda: (s := sue.get(f"/api/mailings/{slow['id']}").json())["finished"] and s
        )
        assert (stats["sent"], stats["failed"], stats["queued"]) == (1, 1, 0)
        assert [m.address.value for m in mail.sent if m.payload["mailing_id"] == slow["id"]] == [
            "olga@example.com"
        ]
        items = sue.get(f"/api/contacts/{ivan}/timeline").json()["items"]
        failed = [m for m in items if m["status"] == "failed"]
        assert [m["error"].split(":")[0] for m in failed] == ["unsubscribed"]


def test_a_mailing_sees_the_same_contact_as_a_preview_and_links_keep_their_query(
    service: Service,
) -> None:
    mail = service.channels["mail"]
    with service.client("sue") as sue:
        cid = sue.post(
            "/api/contacts",
            json={
                "name": "Olga",
                "company": "Romashka",
                "addresses": ["olga@example.com", "+74951234567"],
            },
        ).json()["id"]
        preview = sue.post(
            "/api/templates/news/preview",
            json={"contact_id": cid, "address": "olga@example.com"},
        ).json()
        sue.post("/api/lists/one", json={"add": [cid]})
        r = sue.post(
            "/api/mailings",
            json={"name": "News", "channel": "mail", "template": "news", "audience": "one"},
        )
        assert r.status_code == 201, r.text
        [sent] = wait_for(lambda: mail.sent)
        assert (sent.subject, sent.text) == (preview["subject"], preview["text"])
        assert preview["text"] == "Hello Olga (2 addresses, this one email:olga@example.com)"
        assert sent.subject == "News for Romashka"
        [click] = re.findall(r'href="([^"]+)"', sent.payload["html"])
        with httpx.Client(timeout=10) as web:
            hop = web.get(local(html.unescape(click), service), follow_redirects=False)
        assert hop.headers["location"] == "https://shop.example.com/p?a=1&b=2"
