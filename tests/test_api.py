"""The HTTP API, driven over HTTP against a running service."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import httpx
import sqlalchemy as sa
from sbservice import TOKENS, Service, service_config

from switchboard import Direction, InboundMessage
from switchboard.events import event_t


def wait_for(check, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_tokens(service: Service) -> None:
    with service.client(None) as anon:
        r = anon.get("/api/contacts")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["detail"].startswith("missing bearer token")
        bad = anon.get("/api/contacts", headers={"Authorization": "Bearer not-a-token"})
        assert (bad.status_code, bad.json()["detail"]) == (401, "invalid token")
        assert anon.get("/api/health").json()["status"] == "ok"
    with service.client("anna") as anna:
        assert anna.get("/api/agents").status_code == 200


def test_health_lists_channels(service: Service) -> None:
    with service.client(None) as anon:
        # without a token: states only (error texts can hold paths, hosts and secrets)
        assert set(anon.get("/api/health").json()) == {
            "status",
            "store",
            "channels",
            "loops",
            "details",
        }
    with service.client("anna") as c:
        health = c.get("/api/health").json()
    assert {n: ch["state"] for n, ch in health["channels"].items()} == {
        "sms": "running",
        "mail": "running",
        "voice": "running",
    }


def test_contacts_crud_lookup_and_search(service: Service) -> None:
    with service.client("anna") as c:
        r = c.post(
            "/api/contacts",
            json={
                "name": "Olga Petrova",
                "company": "Romashka",
                "addresses": ["8 (495) 123-45-67", "Olga@Romashka.RU"],
                "owner_agent": "anna",
            },
        )
        assert r.status_code == 201, r.text
        olga = r.json()
        assert olga["addresses"] == ["phone:+74951234567", "email:olga@romashka.ru"]
        assert olga["owner_agent_id"] is not None
        taken = c.post("/api/contacts", json={"name": "Other", "addresses": ["+74951234567"]})
        assert taken.status_code == 409
        assert "phone:+74951234567 already belongs to contact" in taken.json()["detail"]

        for form in ["+7 495 123-45-67", "84951234567", "phone:+74951234567", "olga@ROMASHKA.ru"]:
            found = c.get("/api/contacts/lookup", params={"address": form})
            assert found.status_code == 200, form
            assert found.json()["id"] == olga["id"]
        missing = c.get("/api/contacts/lookup", params={"address": "+74950000000"})
        assert missing.status_code == 404
        bad = c.get("/api/contacts/lookup", params={"address": "phone:hello"})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["query.address"]

        by_name = c.get("/api/contacts", params={"q": "petrova"}).json()
        by_phone = c.get("/api/contacts", params={"q": "8 495 123 45 67"}).json()
        by_company = c.get("/api/contacts", params={"q": "ROMASH"}).json()
        assert [x["id"] for x in by_name["items"]] == [olga["id"]]
        assert [x["id"] for x in by_phone["items"]] == [olga["id"]]
        assert by_company["total"] == 1

        patched = c.patch(
            f"/api/contacts/{olga['id']}",
            json={
                "company": None,
                "add_addresses": ["telegram:42"],
                "remove_addresses": ["olga@romashka.ru"],
            },
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["company"] is None
        assert patched.json()["name"] == "Olga Petrova"
        assert patched.json()["addresses"] == ["phone:+74951234567", "telegram:42"]
        got = c.get(f"/api/contacts/{olga['id']}").json()
        assert got.pop("windows") == {}  # no channel here has a service window
        assert got == patched.json()
        assert c.get("/api/contacts/999999").status_code == 404
        assert c.patch("/api/contacts/999999", json={"name": "x"}).status_code == 404
        unknown_owner = c.patch(f"/api/contacts/{olga['id']}", json={"owner_agent": "nobody"})
        assert unknown_owner.status_code == 422


def test_invalid_input_names_each_field(service: Service) -> None:
    with service.client() as c:
        r = c.post("/api/contacts", json={"company": 5, "addresses": "x"})
        assert r.status_code == 422
        locs = {tuple(e["loc"]) for e in r.json()["detail"]}
        assert {("body", "name"), ("body", "company"), ("body", "addresses")} <= locs
        broken = c.post(
            "/api/contacts", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 422
        addr = c.post("/api/contacts", json={"name": "X", "addresses": ["+1", "a@b.c"]})
        assert addr.status_code == 422
        assert addr.json()["detail"][0]["loc"] == ["body.addresses[0]"]
        both = c.post(
            "/api/messages",
            json={"channel": "sms", "address": "+74951234567", "text": "a", "template": "welcome"},
        )
        assert both.status_code == 422
        assert "give text or template" in both.text


def test_body_over_the_limit_is_413(service: Service) -> None:
    with service.client() as c:
        r = c.post(
            "/api/messages", json={"channel": "sms", "address": "+74951234567", "text": "x" * 5000}
        )
        assert r.status_code == 413
        assert r.json() == {"detail": "request body over 4096 bytes"}

        def chunks():  # type: ignore[no-untyped-def]
            yield b'{"channel": "sms", "address": "+74951234567", "text": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        streamed = c.post(
            "/api/messages", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413


def test_nul_characters_are_refused_at_the_edge(service: Service) -> None:
    """PostgreSQL cannot store a NUL: schemathesis found them answered 500 there."""
    with service.client("anna") as c:
        r = c.get("/api/tasks", params={"agent": "an\x00na"})
        assert r.status_code == 422 and "NUL" in r.json()["detail"]
        r = c.post("/api/calls", json={"agent": "anna\x00", "to": "+74951234567"})
        assert r.status_code == 422 and "NUL" in r.text
        nested = {"channel": "sms", "address": "+74951234567", "template": "welcome"}
        r = c.post("/api/messages", json={**nested, "variables": {"code": ["1\x002"]}})
        assert r.status_code == 422 and "NUL" in r.text
        assert c.get("/api/tasks", params={"agent": "anna"}).status_code == 200


def test_message_goes_through_the_outbox(service: Service) -> None:
    with service.client("boris") as c:
        r = c.post(
            "/api/messages",
            json={"channel": "sms", "address": "+7 495 765-43-21", "text": "Your order is ready"},
        )
        assert r.status_code == 202, r.text
        mid = r.json()["id"]
        sent = wait_for(
            lambda: (m := c.get(f"/api/messages/{mid}").json())["status"] == "sent" and m
        )
        assert sent["external_id"].startswith("sms-out-")
        assert [m.text for m in service.channels["sms"].sent] == ["Your order is ready"]
        assert c.get("/api/messages/999999").status_code == 404
        unknown = c.post(
            "/api/messages", json={"channel": "fax", "address": "+74957654321", "text": "x"}
        )
        assert unknown.status_code == 422
        assert "unknown channel 'fax'" in unknown.json()["detail"]
        wrong_kind = c.post(
            "/api/messages", json={"channel": "mail", "address": "+74957654321", "text": "x"}
        )
        assert wrong_kind.status_code == 422
        no_contact = c.post(
            "/api/messages", json={"channel": "sms", "contact_id": 999999, "text": "x"}
        )
        assert no_contact.status_code == 404


def test_templated_email(service: Service) -> None:
    with service.client("anna") as c:
        contact = c.post("/api/contacts", json={"name": "Ivan", "addresses": ["ivan@example.com"]})
        cid = contact.json()["id"]
        r = c.post(
            "/api/messages",
            json={
                "channel": "mail",
                "contact_id": cid,
                "template": "welcome",
                "variables": {"code": "X-42"},
            },
        )
        assert r.status_code == 202, r.text
        wait_for(lambda: service.channels["mail"].sent)
        [msg] = service.channels["mail"].sent
        assert (msg.subject, msg.text) == ("Welcome, Ivan", "Hello Ivan, your code is X-42.")
        assert msg.payload == {"template": "welcome"}
        missing = c.post(
            "/api/messages", json={"channel": "mail", "contact_id": cid, "template": "welcome"}
        )
        assert missing.status_code == 422
        assert "'code' is undefined" in missing.text
        unknown = c.post(
            "/api/messages", json={"channel": "mail", "contact_id": cid, "template": "nope"}
        )
        assert "unknown template 'nope' (templates: welcome)" in unknown.text


def test_template_preview_renders_without_sending(service: Service) -> None:
    with service.client("anna") as c:
        cid = c.post("/api/contacts", json={"name": "Olga", "addresses": ["olga@example.com"]})
        cid = cid.json()["id"]
        assert c.get("/api/templates").json() == {"items": ["welcome"]}
        r = c.post(
            "/api/templates/welcome/preview",
            json={"contact_id": cid, "variables": {"code": "Z-9"}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["subject"] == "Welcome, Olga"
        assert r.json()["text"] == "Hello Olga, your code is Z-9."
        assert service.channels["mail"].sent == []
        assert service.sb.outbox.depth() == 0
        missing = c.post("/api/templates/welcome/preview", json={"contact_id": cid})
        assert missing.status_code == 422 and "'code' is undefined" in missing.text
        assert c.post("/api/templates/nope/preview", json={}).status_code == 422
        assert (
            c.post("/api/templates/welcome/preview", json={"contact_id": 99999}).status_code == 404
        )


def test_timeline_newest_first_with_pages(service: Service) -> None:
    sms = service.channels["sms"]
    for i in range(5):
        service.running.call(sms.inject(InboundMessage(f"in-{i}", "+74951112233", text=f"m{i}")))
    _, contact = service.running.call(
        service.sb.calls.ringing(
            "voice",
            "call-t",
            direction=Direction.INBOUND,
            from_address="+74951112233",
            to_address="100",
        )
    )
    with service.client() as c:
        first = c.get(f"/api/contacts/{contact.id}/timeline", params={"limit": 4}).json()
        assert [i.get("text") or i["kind"] for i in first["items"]] == ["call", "m4", "m3", "m2"]
        assert first["items"][0]["call"]["call_id"] == "call-t"
        second = c.get(
            f"/api/contacts/{contact.id}/timeline",
            params={"limit": 4, "before": first["next_before"]},
        ).json()
        assert [i["text"] for i in second["items"]] == ["m1", "m0"]
        assert second["next_before"] is None
        assert c.get("/api/contacts/999999/timeline").status_code == 404


def make_wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000)


def test_click_to_call_and_recordings(service: Service, tmp_path: Path) -> None:
    with (
        service.client("anna") as anna,
        service.client("boris") as boris,
        service.client("sue") as sue,
    ):
        r = anna.post("/api/calls", json={"agent": "anna", "to": "8 495 222-33-44"})
        assert r.status_code == 202, r.text
        call_id = r.json()["id"]
        [(agent, address, dialed)] = service.channels["voice"].dialed
        assert (agent.name, str(address), dialed) == ("anna", "phone:+74952223344", call_id)
        assert (
            anna.post("/api/calls", json={"agent": "boris", "to": "+74952223344"}).status_code
            == 403
        )
        assert (
            sue.post("/api/calls", json={"agent": "boris", "to": "+74952223344"}).status_code == 202
        )
        assert anna.post("/api/calls", json={"agent": "anna"}).status_code == 422
        assert (
            anna.post("/api/calls", json={"agent": "zoe", "to": "+74952223344"}).status_code == 422
        )

        call = anna.get(f"/api/calls/{call_id}").json()
        assert (call["direction"], call["status"], call["to_address"]) == (
            "outbound",
            "ringing",
            "phone:+74952223344",
        )
        anna_agent = service.sb.store.get_agent("anna")
        service.running.call(service.sb.calls.answered("voice", call_id, anna_agent))
        service.running.call(service.sb.calls.ended("voice", call_id))
        wav = tmp_path / "rec.wav"
        make_wav(wav)
        service.running.call(service.sb.calls.recording_saved("voice", call_id, wav))

        listed = anna.get("/api/calls", params={"agent": "anna"}).json()["items"]
        assert [c["call_id"] for c in listed] == [call_id]
        assert listed[0]["recording"]["duration"] == 1.0
        own = anna.get(f"/api/calls/{call_id}/recording")
        assert (own.status_code, own.headers["content-type"]) == (200, "audio/wav")
        assert own.content == wav.read_bytes()
        assert boris.get(f"/api/calls/{call_id}/recording").status_code == 403
        assert boris.get(f"/api/calls/{call_id}").json()["recording"]["allowed"] is False
        assert sue.get(f"/api/calls/{call_id}/recording").status_code == 200
        assert anna.get("/api/calls/nope").status_code == 404
        contact = anna.get("/api/contacts/lookup", params={"address": "+74952223344"}).json()
        by_contact = anna.get("/api/calls", params={"contact_id": contact["id"]}).json()
        assert len(by_contact["items"]) == 2


def test_hold_resume_and_transfer_a_talking_call(service: Service) -> None:
    voice = service.channels["voice"]
    with service.client("anna") as anna, service.client("boris") as boris:
        call_id = anna.post("/api/calls", json={"agent": "anna", "to": "+74952223344"}).json()["id"]
        anna_agent = service.sb.store.get_agent("anna")
        service.running.call(service.sb.calls.answered("voice", call_id, anna_agent))
        # not talking on the channel (yet): 404
        assert anna.post(f"/api/calls/{call_id}/hold").status_code == 404
        voice.talking.add(call_id)
        assert boris.post(f"/api/calls/{call_id}/hold").status_code == 403  # not his call
        assert anna.post(f"/api/calls/{call_id}/hold").status_code == 200
        assert anna.post(f"/api/calls/{call_id}/resume").status_code == 200
        moved = anna.post(f"/api/calls/{call_id}/transfer", json={"to": "boris"})
        assert moved.status_code == 200, moved.text
        assert moved.json()["agent_id"] == service.sb.store.get_agent("boris").id
        assert boris.post(f"/api/calls/{call_id}/hold").status_code == 200  # now his
        assert boris.post(f"/api/calls/{call_id}/consult", json={"to": "anna"}).status_code == 200
        out = boris.post(f"/api/calls/{call_id}/transfer", json={"to": "8 495 765-43-21"})
        assert out.status_code == 200 and out.json()["agent_id"] is None
        assert [(a, getattr(t, "name", None) or (t and str(t))) for a, _, t in voice.actions] == [
            ("hold", None),
            ("resume", None),
            ("transfer", "boris"),
            ("hold", None),
            ("consult", "anna"),
            ("transfer", "phone:+74957654321"),
        ]
        assert anna.post(f"/api/calls/{call_id}/transfer", json={}).status_code == 422
        assert anna.post("/api/calls/nope/hold").status_code == 404


def test_a_supervisor_joins_a_talking_call_and_it_is_on_the_record(service: Service) -> None:
    voice = service.channels["voice"]
    with service.client("anna") as anna, service.client("sue") as sue, service.client() as crm:
        call_id = anna.post("/api/calls", json={"agent": "anna", "to": "+74952223344"}).json()["id"]
        anna_agent = service.sb.store.get_agent("anna")
        service.running.call(service.sb.calls.answered("voice", call_id, anna_agent))
        voice.talking.add(call_id)
        path = f"/api/calls/{call_id}/supervise"
        assert anna.post(path, json={"mode": "listen"}).status_code == 403  # an agent
        assert crm.post(path, json={"mode": "listen"}).status_code == 403  # no agent to ring
        assert sue.post(path, json={"mode": "shout"}).status_code == 422
        assert sue.post("/api/calls/nope/supervise", json={"mode": "listen"}).status_code == 404
        for mode in ("listen", "barge"):
            done = sue.post(path, json={"mode": mode})
            assert done.status_code == 200, done.text
        sue_id = service.sb.store.get_agent("sue").id
        assert [(s["agent_id"], s["mode"]) for s in done.json()["supervision"]] == [
            (sue_id, "listen"),
            (sue_id, "barge"),
        ]
        assert [a for a, _, _ in voice.actions] == ["supervise:listen", "supervise:barge"]
        supervised = [e for e in service.sb.events.read_since(0) if e.type == "call.supervised"]
        assert [e.data["mode"] for e in supervised] == ["listen", "barge"]
        assert all({anna_agent.id, sue_id} <= set(e.agents or ()) for e in supervised)


def test_a_call_id_with_a_slash_is_served(service: Service, tmp_path: Path) -> None:
    """Call ids are the channels' own: a SIP Call-ID may hold "/", "?" or "#"."""
    from switchboard import Direction

    call_id = "a/b?c#d@203.0.113.5"
    service.running.call(
        service.sb.calls.ringing(
            "voice",
            call_id,
            direction=Direction.INBOUND,
            from_address="+74951234599",
            to_address="1",
        )
    )
    service.running.call(service.sb.calls.ended("voice", call_id))
    wav = tmp_path / "rec.wav"
    make_wav(wav)
    service.running.call(service.sb.calls.recording_saved("voice", call_id, wav))
    with service.client("sue") as sue:
        [listed] = sue.get("/api/calls").json()["items"]
        assert listed["call_id"] == call_id
        url = listed["recording"]["url"]
        assert sue.get(url).content == wav.read_bytes()
        assert sue.get(url).headers["content-disposition"].endswith("a_b_c%23d%40203.0.113.5.wav")
        assert sue.get(url.removesuffix("/recording")).json()["call_id"] == call_id


def test_missed_calls_are_callback_tasks(service: Service) -> None:
    boris = service.sb.store.get_agent("boris")
    service.running.call(
        service.sb.calls.ringing(
            "voice",
            "missed-1",
            direction=Direction.INBOUND,
            from_address="+74952223355",
            to_address="100",
            agents=[boris.id],
        )
    )
    service.running.call(service.sb.calls.ended("voice", "missed-1"))
    with service.client("boris") as b, service.client("anna") as anna:
        [task] = b.get("/api/tasks", params={"agent": "boris"}).json()["items"]
        assert (task["kind"], task["status"], task["meta"]["call_id"]) == (
            "task",
            "open",
            "missed-1",
        )
        assert anna.get("/api/tasks", params={"agent": "anna"}).json()["items"] == []
        # an agent sees and closes only their own tasks (found by an outside review)
        assert anna.get("/api/tasks").json()["items"] == []
        assert anna.get("/api/tasks", params={"agent": "boris"}).status_code == 403
        assert anna.post(f"/api/tasks/{task['id']}/done").status_code == 403
        with service.client("sue") as sue:
            assert [t["id"] for t in sue.get("/api/tasks").json()["items"]] == [task["id"]]
        assert b.get("/api/tasks", params={"status": "bogus"}).status_code == 422
        done = b.post(f"/api/tasks/{task['id']}/done")
        assert (done.status_code, done.json()["status"]) == (200, "done")
        assert b.get("/api/tasks").json()["items"] == []
        assert len(b.get("/api/tasks", params={"status": "all"}).json()["items"]) == 1
        assert b.post("/api/tasks/999999/done").status_code == 404


def test_no_voice_channel_is_503(service: Service) -> None:
    service.running.call(service.sb.stop_channels())
    with service.client() as c:
        r = c.post("/api/calls", json={"agent": "anna", "to": "+74952223344"})
    assert (r.status_code, r.json()["detail"]) == (503, "no voice channel is running")


def test_metrics(service: Service) -> None:
    with service.client() as c:
        c.get("/api/agents")
        text = c.get("/metrics").text
    assert 'switchboard_http_requests_total{method="GET",route="/api/agents",status="200"}' in text
    assert "switchboard_outbox_depth 0.0" in text
    assert 'switchboard_channel_state{channel="sms",state="running"} 1.0' in text


def test_call_analytics_json_and_csv(service: Service) -> None:
    anna = service.sb.store.get_agent("anna")
    service.running.call(
        service.sb.calls.ringing(
            "voice", "a-1", direction=Direction.INBOUND, from_address="+74952223366", to_address="1"
        )
    )
    service.running.call(service.sb.calls.answered("voice", "a-1", anna))
    service.running.call(service.sb.calls.ended("voice", "a-1"))
    period = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    with service.client("sue") as sue, service.client("anna") as agent:
        r = sue.get("/api/analytics/calls", params={**period, "group_by": "agent"})
        assert r.status_code == 200, r.text
        [row] = r.json()["rows"]
        assert (row["agent"], row["calls"], row["answered"], row["answer_rate"]) == (
            "anna",
            1,
            1,
            1.0,
        )
        csv_text = sue.get("/api/analytics/calls", params={**period, "format": "csv"}).text
        assert csv_text.splitlines()[0].startswith("agent,calls,calls_in,calls_out,answered")
        assert csv_text.splitlines()[1].startswith("anna,1,1,0,1")
        assert agent.get("/api/analytics/calls", params=period).status_code == 403
        naive = sue.get(
            "/api/analytics/calls",
            params={"from": "2000-01-01T00:00:00", "to": "2100-01-01T00:00:00Z"},
        )
        assert naive.status_code == 422
        assert (
            sue.get("/api/analytics/calls", params={**period, "group_by": "week"}).status_code
            == 422
        )


def test_quarantine_lists_what_a_channel_could_not_store(service: Service) -> None:
    sms = service.channels["sms"]
    bad = InboundMessage("q-1", "not a number at all", text="hostile")
    assert service.running.call(sms.accept(bad)) is None
    assert service.running.call(sms.accept(bad)) is None  # kept once
    with service.client("admin") as admin, service.client("anna") as anna:
        [item] = admin.get("/api/quarantine").json()["items"]
        assert (item["channel"], item["external_id"]) == ("sms", "q-1")
        assert item["reason"].startswith("sender: not a valid phone address")
        assert "hostile" in item["raw"]
        assert admin.get("/api/quarantine", params={"channel": "mail"}).json()["items"] == []
        assert anna.get("/api/quarantine").status_code == 403
    types = [e.type for e in service.sb.events.read_since(0)]
    assert types.count("message.quarantined") == 1


def test_unknown_fields_and_line_breaks_are_refused(service: Service) -> None:
    """Found by an outside review: unknown fields were dropped (a documented ``file`` sent
    plain text), and a subject or name with a line break was accepted, then failed every
    send attempt for minutes."""
    with service.client() as c:
        r = c.post("/api/messages", json={"channel": "sms", "to": "+74951234567", "text": "x"})
        assert r.status_code == 422 and "Extra inputs are not permitted" in r.text
        assert r.json()["detail"][0]["loc"] == ["body", "to"]
        r = c.post(
            "/api/messages",
            json={"channel": "mail", "address": "a@example.com", "text": "x", "subject": "a\r\nb"},
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "subject"]
        assert c.post("/api/contacts", json={"name": "Eve\nBcc: x"}).status_code == 422
        assert c.post("/api/contacts", json={"name": "Eve", "nick": "x"}).status_code == 422
        r = c.post(
            "/api/messages",
            json={
                "channel": "mail",
                "address": "a@example.com",
                "text": "x",
                "subject": "Re",
                "in_reply_to": "<m1@example.com>",
                "references": "<m0@x> <m1@example.com>",
                "html": "<p>x</p>",
            },
        )
        assert r.status_code == 202, r.text
    wait_for(lambda: service.channels["mail"].sent)
    sent = service.channels["mail"].sent[-1]
    assert sent.payload == {
        "html": "<p>x</p>",
        "in_reply_to": "<m1@example.com>",
        "references": "<m0@x> <m1@example.com>",
    }


def test_a_channel_installed_but_not_configured_refuses_messages(tmp_path: Path) -> None:
    """Found by an outside review: 202, then queued forever."""
    import attrs

    from switchboard.app import create_app
    from switchboard.core import settings_classes
    from switchboard.plugins import Plugins
    from switchboard.testing import LoopbackChannel, LoopbackPlugin, make_config, serve_in_thread

    @attrs.define
    class NeedsToken:
        token: str

    plugins = Plugins()
    plugins.register(
        LoopbackPlugin(LoopbackChannel("fax"), plugin_name="fax", settings=NeedsToken), "fax"
    )
    classes = asyncio.run(settings_classes(plugins))
    app = create_app(make_config(tmp_path, service_config(tmp_path), classes), plugins=plugins)
    with serve_in_thread(app) as running:
        assert running.switchboard.channels["fax"].state.value == "not configured"
        r = httpx.post(
            f"{running.url}/api/messages",
            json={"channel": "fax", "address": "+74951234567", "text": "x"},
            headers={"Authorization": f"Bearer {TOKENS['admin']}"},
        )
        assert r.status_code == 422
        assert "installed but not configured" in r.text and "[plugins.fax]" in r.text


def test_merging_joins_the_card_that_holds_an_address(service: Service) -> None:
    with service.client("anna") as c:
        vk_user = c.post(
            "/api/contacts", json={"name": "Ivan (TG)", "addresses": ["telegram:1001"]}
        )
        caller = c.post(
            "/api/contacts", json={"name": "Ivan Petrov", "addresses": ["+7 916 123-45-67"]}
        )
        assert vk_user.status_code == caller.status_code == 201, vk_user.text
        vk_id, caller_id = vk_user.json()["id"], caller.json()["id"]
        sms = service.channels["sms"]
        service.running.call(sms.inject(InboundMessage("m1", "+79161234567", text="hi")))
        # the Telegram user wrote their phone number: an agent joins the cards
        merged = c.post(f"/api/contacts/{vk_id}/merge", json={"address": "8 916 123 45 67"})
        assert merged.status_code == 200, merged.text
        assert merged.json()["id"] == vk_id
        assert set(merged.json()["addresses"]) == {"telegram:1001", "phone:+79161234567"}
        assert c.get(f"/api/contacts/{caller_id}").status_code == 404
        with service.sb.store.read() as conn:
            [event] = conn.execute(
                sa.select(event_t.c.data).where(event_t.c.type == "contact.merged")
            ).scalars()
        assert event["merged_id"] == caller_id and event["contact"]["id"] == vk_id
        items = c.get(f"/api/contacts/{vk_id}/timeline").json()["items"]
        assert [i["text"] for i in items] == ["hi"]  # the other card's timeline moved
        added = c.post(f"/api/contacts/{vk_id}/merge", json={"address": "ivan@example.com"})
        assert "email:ivan@example.com" in added.json()["addresses"]  # nobody held it
        bad = c.post(f"/api/contacts/{vk_id}/merge", json={"address": "phone:hello"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body.address"]
        assert (
            c.post("/api/contacts/999999/merge", json={"address": "+79160000000"}).status_code
            == 404
        )
