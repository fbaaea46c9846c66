"""The console's pages over HTTP: sign-in, CSRF, permissions, search, languages, the
dashboard's figures and CSV exports, call costs, callback tasks (on SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import re
import wave
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from call_seed import record_call
from console_peers import DAY1, DAY2, PERIOD, TARIFF, TOKENS, cells, console_service, seed_calls

from switchboard import Direction
from switchboard.config import ConfigError
from switchboard.testing import RunningService, make_config
from switchboard_console import ConsoleSettings, Rate, TariffSettings, call_costs
from switchboard_console.i18n import catalog_path, choose
from switchboard_mailings import MailingSettings, MailingsPlugin


@pytest.fixture
def service(tmp_path: Path, db_url: str) -> Iterator[RunningService]:
    """The console with the mailings plugin beside it (its table on the dashboard)."""
    with console_service(
        tmp_path / "service", (MailingsPlugin(), "mailings", MailingSettings), database_url=db_url
    ) as running:
        yield running


def client(service: RunningService, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=service.url, headers=headers, timeout=10)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def sign_in(c: httpx.Client, who: str) -> str:
    """Sign in through the form; the session's CSRF token (from the next page)."""
    form = c.get("/console/login")
    assert form.status_code == 200
    done = c.post(
        "/console/login",
        data={"token": TOKENS[who], "csrf": csrf_of(form.text), "next": "/console/contacts"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/contacts"
    page = c.get("/console/contacts")
    assert page.status_code == 200
    return csrf_of(page.text)


# -- sign-in and forms ---------------------------------------------------------------------


def test_pages_need_sign_in_and_the_form_a_known_token(service: RunningService) -> None:
    with client(service) as c:
        first = c.get("/console/contacts?q=olga")
        assert first.status_code == 303
        assert first.headers["location"] == "/console/login?next=%2Fconsole%2Fcontacts%3Fq%3Dolga"
        form = c.get("/console/login")
        bad = c.post("/console/login", data={"token": "nope", "csrf": csrf_of(form.text)})
        assert bad.status_code == 401 and "Unknown token." in bad.text
        # a form posted from elsewhere carries no matching sign-in cookie
        with client(service) as other:
            forged = other.post(
                "/console/login", data={"token": TOKENS["alice"], "csrf": csrf_of(form.text)}
            )
        assert forged.status_code == 401 and "The form expired" in forged.text
        assert "switchboard_console" not in forged.cookies
        sign_in(c, "alice")
        page = c.get("/console/contacts")
        assert 'data-testid="me">alice · ext. 101' in page.text
        # only console paths as the place to go after signing in
        c.cookies.clear()
        form = c.get("/console/login")
        out = c.post(
            "/console/login",
            data={"token": TOKENS["alice"], "csrf": csrf_of(form.text), "next": "//evil.test/x"},
        )
        assert out.headers["location"] == "/console/contacts"


def test_forms_need_the_session_csrf_token(service: RunningService) -> None:
    contact = service.call(service.switchboard.create_contact("Olga Petrova", []))
    with client(service) as c:
        token = sign_in(c, "alice")
        url = f"/console/contacts/{contact.id}"
        assert c.post(url, data={"name": "Mallory"}).status_code == 403
        assert c.post(url, data={"name": "Mallory", "csrf": "guess"}).status_code == 403
        assert service.switchboard.store.get_contact(contact.id).name == "Olga Petrova"
        saved = c.post(url, data={"name": "Olga P.", "company": "Romashka", "csrf": token})
        assert saved.status_code == 303
        assert service.switchboard.store.get_contact(contact.id).company == "Romashka"
        assert "Saved." in c.get(url).text
        # a failed action says why on the page and changes nothing
        refused = c.post(
            f"{url}/message",
            data={"target": "fax|phone:+12025550143", "text": "hello", "csrf": token},
        )
        assert refused.status_code == 303
        assert "unknown channel &#39;fax&#39;" in c.get(url).text
        assert service.switchboard.store.timeline(contact.id) == []
        # signing out ends the session, on the server too: a copy of the cookie kept
        # elsewhere (stolen, or another tab's) no longer works
        kept = c.cookies["switchboard_console"]
        assert c.post("/console/logout", data={"csrf": token}).status_code == 303
        assert c.get(url).status_code == 303
        c.cookies.set("switchboard_console", kept, path="/console")
        assert c.get(url).status_code == 303


@pytest.mark.postgres
def test_signing_out_on_one_runner_ends_the_session_on_every_runner(
    tmp_path: Path, pg_url: str
) -> None:
    """Two runners on one PostgreSQL database (behind a balancer; SQLite takes one
    runner): the sign-out is kept in the console's own table (its migration,
    register_migrations), not in one process."""
    with (
        console_service(tmp_path / "a", database_url=pg_url) as a,
        console_service(tmp_path / "b", database_url=pg_url) as b,
    ):
        with client(a) as c:
            token = sign_in(c, "alice")
            kept = c.cookies["switchboard_console"]
            with client(b) as other:
                other.cookies.set("switchboard_console", kept, path="/console")
                assert other.get("/console/contacts").status_code == 200  # same session
                assert c.post("/console/logout", data={"csrf": token}).status_code == 303
                assert other.get("/console/contacts").status_code == 303  # ended there too
        revisions = a.switchboard.store.plugin_revisions(a.switchboard.schemas)
        assert revisions == {"console": "console_0001"}


def test_pages_refuse_frames_and_foreign_scripts_and_cookies_are_secure_over_https(
    service: RunningService,
) -> None:
    with client(service) as c:
        form = c.get("/console/login")
        csp = form.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert form.headers["x-frame-options"] == "DENY"
        assert form.headers["x-content-type-options"] == "nosniff"
        assert "secure" not in form.headers["set-cookie"].lower()  # plain HTTP here
        sign_in(c, "alice")
        assert c.get("/console/contacts").headers["x-frame-options"] == "DENY"
    # behind a TLS proxy (uvicorn trusts X-Forwarded-Proto from 127.0.0.1)
    with client(service, **{"X-Forwarded-Proto": "https"}) as c:
        form = c.get("/console/login")
        assert "; Secure" in form.headers["set-cookie"]


def test_a_tampered_or_foreign_session_cookie_is_refused(service: RunningService) -> None:
    with client(service) as c:
        sign_in(c, "alice")
        value = c.cookies["switchboard_console"]
        c.cookies.set("switchboard_console", value[:-2] + "xx", path="/console")
        assert c.get("/console/contacts").status_code == 303


def test_the_dashboard_is_for_supervisors(service: RunningService) -> None:
    with client(service) as c:
        sign_in(c, "alice")
        page = c.get("/console/dashboard")
        assert page.status_code == 403
        assert "for supervisors and admins" in page.text
        assert c.get(f"/console/dashboard/agent.csv?{PERIOD}").status_code == 403
        assert 'href="/console/dashboard"' not in c.get("/console/contacts").text


# -- contacts ------------------------------------------------------------------------------


def test_search_by_name_email_and_a_phone_in_any_format(service: RunningService) -> None:
    sb = service.switchboard
    addresses = [sb.addresses.parse("+1 202 555 0143"), sb.addresses.parse("olga@romashka.ru")]
    olga = service.call(sb.create_contact("Olga Petrova", addresses, company="Romashka"))
    service.call(sb.create_contact("Ivan Sidorov", [sb.addresses.parse("+12025550199")]))
    with client(service) as c:
        sign_in(c, "alice")
        for q in (
            "(202) 555-0143",
            "202.555.0143",
            "+1 202 555 01 43",
            "olga@romashka.ru",
            "petrova",
            "romash",
        ):
            page = c.get("/console/contacts", params={"q": q})
            assert f'href="/console/contacts/{olga.id}"' in page.text, q
            assert "Ivan" not in page.text, q
        card = c.get(f"/console/contacts/{olga.id}").text
        assert "+12025550143" in card and "olga@romashka.ru" in card
        assert "Romashka" in card
        missing = c.get("/console/contacts/999999")
        assert missing.status_code == 404 and "There is no such contact." in missing.text


# -- languages -----------------------------------------------------------------------------


def test_the_language_follows_the_browser_then_the_user_pick(service: RunningService) -> None:
    with client(service, **{"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"}) as c:
        assert "Ваш токен сотрудника" in c.get("/console/login").text
        sign_in(c, "sue")
        assert "Аналитика" in c.get("/console/contacts").text
        switched = c.get("/console/lang/en?next=/console/contacts")
        assert switched.status_code == 303
        page = c.get("/console/contacts").text
        assert "Dashboard" in page and "Аналитика" not in page
    assert choose("de-DE,de;q=0.9,ru;q=0.8") == "ru"
    assert choose("de-DE, fr;q=0.5") == "en"
    assert choose("ru", setting="en") == "en"
    assert choose("en", setting="auto", override="ru") == "ru"
    assert choose("ru;q=0, en;q=0.1") == "en"


def test_every_template_string_has_a_russian_translation() -> None:
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    templates = catalog_path("ru").parent.parent.parent.parent / "templates"
    with catalog_path("ru").open("rb") as fp:
        catalog = read_po(fp, locale="ru")
    used = {
        msg
        for _, _, msg, _, _ in extract_from_dir(
            str(templates),
            method_map=[("**.html", "jinja2.ext:babel_extract")],
            options_map={"**.html": {"extensions": "jinja2.ext.i18n"}},
        )
    }
    assert len(used) > 50
    missing = sorted(m for m in used if m not in catalog or not catalog[m].string)
    assert not missing, f"add to locale/ru/LC_MESSAGES/messages.po: {missing}"
    for msg in used:
        placeholders = set(re.findall(r"%\(\w+\)s", msg))
        assert placeholders == set(re.findall(r"%\(\w+\)s", catalog[msg].string)), msg
    unused = sorted(m.id for m in catalog if m.id and m.id not in used)
    assert not unused, f"no longer used, remove from the catalog: {unused}"


# -- the dashboard -------------------------------------------------------------------------


def test_the_dashboard_shows_the_seeded_figures_and_exports_csv(
    service: RunningService,
) -> None:
    service.call(seed_calls(service.switchboard))
    with client(service) as c:
        sign_in(c, "sue")
        page = c.get(f"/console/dashboard?{PERIOD}")
        assert page.status_code == 200
        html = page.text
        # calls, in, out, answered, missed, abandoned, answer rate, service level, waits, talks
        assert cells(html, "by-agent", "alice") == [
            "alice",
            "3",
            "2",
            "1",
            "3",
            "0",
            "0",
            "100%",
            "50%",
            "15.0",
            "82.0",
        ]
        assert cells(html, "by-agent", "unassigned")[:7] == [
            "unassigned",
            "2",
            "2",
            "0",
            "0",
            "1",
            "1",
        ]
        assert cells(html, "by-day", "2026-11-03")[:5] == ["2026-11-03", "3", "1", "2", "2"]
        assert cells(html, "by-ivr-node", "greeting") == ["greeting", "3", "1", "1: 1 7: 1"]
        # the period's totals: 7 calls, 5 answered; 4 inbound, 2 of them answered, 1 within
        # 20 s; waits 5, 30, 10, 8 and 3 s
        totals = html.split('data-testid="totals"', 1)[1].split("</section>", 1)[0]
        figures = re.findall(r"<strong>(.*?)</strong>", totals)
        assert figures == ["7", "5", "50%", "25%", "11.2", "$0.94"]
        # the chart's bars carry the same figures
        bars = re.findall(
            r'data-series="(\w+)" data-category="([\w-]+)" data-value="([\d.]+)"', html
        )
        assert ("answered", "alice", "3") in bars and ("missed", "unassigned", "2") in bars
        assert ("out", "11-03", "2") in bars
        # costs: outbound answered calls by prefix; minutes rounded up per call
        # c4 +7495, 125 s -> 3 min at 0.02 / 0.25; c6 +7812 ("+7"), 30 s -> 1 min at 0.05 / 0.3;
        # c7 +49, 200 s -> 4 min, no rate
        assert cells(html, "costs", "+7495")[:4] == ["+7495", "1", "2.1", "3"]
        assert cells(html, "costs", "+7495")[5:] == ["$0.06", "$0.25", "$0.75", "$0.69"]
        assert cells(html, "costs", "+7")[5:] == ["$0.05", "$0.30", "$0.30", "$0.25"]
        assert cells(html, "costs", "other")[:4] == ["other (no rate)", "1", "3.3", "4"]
        assert "$0.94" in html.split('data-testid="saving"', 1)[1].split("</p>", 1)[0]
        assert 'data-testid="chart-agents"' in html and "<svg" in html
        # CSV: the same rows as the API's aggregates
        agent_csv = c.get(f"/console/dashboard/agent.csv?{PERIOD}")
        assert agent_csv.headers["content-type"].startswith("text/csv")
        rows = {r["agent"]: r for r in csv.DictReader(io.StringIO(agent_csv.text))}
        assert rows["alice"]["answered"] == "3" and rows["bob"]["calls_out"] == "2"
        costs = list(
            csv.DictReader(io.StringIO(c.get(f"/console/dashboard/costs.csv?{PERIOD}").text))
        )
        assert costs[-1]["prefix"] == "total" and costs[-1]["saving"] == "0.94"
        for table in ("day", "ivr_node", "mailings"):
            assert c.get(f"/console/dashboard/{table}.csv?{PERIOD}").status_code == 200
        assert 'data-testid="mailings"' in html
        assert c.get(f"/console/dashboard/nope.csv?{PERIOD}").status_code == 404
        assert c.get("/console/dashboard?from=yesterday").status_code == 422
        # an empty period draws no chart and says so
        empty = c.get("/console/dashboard?from=2020-01-01&to=2020-01-02").text
        assert "No data for this period." in empty


def test_without_the_mailings_plugin_the_dashboard_has_no_mailings(tmp_path: Path) -> None:
    with console_service(tmp_path / "alone") as alone, client(alone) as c:
        sign_in(c, "sue")
        page = c.get(f"/console/dashboard?{PERIOD}")
        assert page.status_code == 200 and 'data-testid="by-agent"' in page.text
        assert 'data-testid="mailings"' not in page.text
        missing = c.get(f"/console/dashboard/mailings.csv?{PERIOD}")
        assert missing.status_code == 404 and "not installed" in missing.text


async def test_call_costs_by_prefix(open_sb: Any) -> None:
    agents = [{"name": "alice", "extension": "101"}, {"name": "bob", "extension": "102"}]
    sb = await open_sb(config={"switchboard": {"agents": agents}})
    await seed_calls(sb)
    tariff = TariffSettings(rates=[Rate(**r) for r in TARIFF["rates"]])  # type: ignore[attr-defined]
    out = await call_costs(sb, DAY1, DAY2 + timedelta(days=1), tariff)
    by = {r["prefix"]: r for r in out["rows"]}
    assert set(by) == {"+7495", "+7", "other"}
    assert (by["+7495"]["billed_minutes"], by["+7495"]["cost"]) == (3.0, 0.06)
    assert out["total"]["cost"] == pytest.approx(0.11)
    assert out["total"]["reference_cost"] == pytest.approx(1.05)
    # per-second billing, inbound calls billed too
    tariff.increment_seconds, tariff.bill_inbound = 1, True
    out = await call_costs(sb, DAY1, DAY2 + timedelta(days=1), tariff)
    by = {r["prefix"]: r for r in out["rows"]}
    assert by["+1"]["calls"] == 1 and by["+1"]["billed_minutes"] == pytest.approx(61 / 60, abs=0.01)
    assert by["+7495"]["calls"] == 2  # c2 inbound and c4 outbound


def test_console_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(
            Path("."),
            {
                "plugins": {
                    "console": {
                        "secret": "short",
                        "language": "de",
                        "tariff": {
                            "currency": "usd",
                            "rates": [
                                {"prefix": "7495", "price": 0.1, "reference": 0.2},
                                {"prefix": "+1", "price": -1, "reference": 0.2},
                                {"prefix": "+1", "price": 1, "reference": 0.2},
                            ],
                        },
                    }
                }
            },
            {"console": ConsoleSettings},
        )
    text = str(caught.value)
    for expected in (
        "secret: at least 16 characters",
        "language: auto, en or ru, got 'de'",
        "tariff.currency: an ISO 4217 code such as USD, got 'usd'",
        "tariff.rates[0].prefix: '+' and digits",
        "tariff.rates[1]: prices cannot be negative",
        "tariff.rates[2].prefix: '+1' is listed twice",
    ):
        assert expected in text, text


# -- recordings ----------------------------------------------------------------------------


def test_recordings_only_for_the_agent_who_took_the_call_and_supervisors(
    service: RunningService, tmp_path: Path
) -> None:
    sb = service.switchboard
    service.call(
        record_call(sb, "r1", DAY1, agent="alice", wait=2, talk=3, customer="+12025550143")
    )
    wav = tmp_path / "r1.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 2 * 8000)
    service.call(sb.calls.recording_saved("sip", "r1", wav))
    contact_id = sb.store.get_call("r1").contact_id
    url = "/console/calls/r1/recording"
    for who, status in (("alice", 200), ("bob", 403), ("sue", 200)):
        with client(service) as c:
            sign_in(c, who)
            got = c.get(url)
            assert got.status_code == status, who
            card = c.get(f"/console/contacts/{contact_id}").text
            if status == 200:
                assert got.headers["content-type"] == "audio/wav"
                assert f'src="{url}"' in card
            else:
                assert "only the agent who took the call and supervisors" in card
                assert f'src="{url}"' not in card


# -- callback tasks ------------------------------------------------------------------------


def test_callbacks_page_lists_an_agents_open_tasks_and_marks_them_done(
    service: RunningService,
) -> None:
    sb = service.switchboard
    bob = sb.store.get_agent("bob")

    async def missed_call(call_id: str = "m1") -> None:
        await sb.calls.ringing(
            "sip",
            call_id,
            direction=Direction.INBOUND,
            from_address="+12025550177",
            to_address="100",
            agents=[bob.id],
        )
        await sb.calls.ended("sip", call_id)

    service.call(missed_call())
    task = sb.store.list_tasks()[0]
    with client(service) as c:
        sign_in(c, "alice")
        assert "Nothing to call back." in c.get("/console/tasks").text
    with client(service) as c:
        token = sign_in(c, "bob")
        page = c.get("/console/tasks").text
        assert f'data-id="{task.id}"' in page and "Call back +12025550177" in page
        assert f'href="/console/contacts/{task.contact_id}"' in page
        done = f"/console/tasks/{task.id}/done"
        assert c.post(done, data={}).status_code == 403
        assert sb.store.list_tasks() == [task]
        assert c.post(done, data={"csrf": token}).headers["location"] == "/console/tasks"
        assert "Marked done." in c.get("/console/tasks").text
        assert sb.store.list_tasks() == []
        # the card shows an open task with its own Done button, which comes back to it
        service.call(missed_call("m2"))
        again = sb.store.list_tasks()[0]
        card = f"/console/contacts/{again.contact_id}"
        assert f'action="/console/tasks/{again.id}/done"' in c.get(card).text
        back = c.post(f"/console/tasks/{again.id}/done", data={"csrf": token, "back": card})
        assert back.headers["location"] == card and sb.store.list_tasks() == []
        assert f'action="/console/tasks/{again.id}/done"' not in c.get(card).text
        missing = c.post("/console/tasks/999999/done", data={"csrf": token})
        assert missing.status_code == 303
        assert "no task with id 999999" in c.get("/console/tasks").text


def test_call_costs_in_the_http_api_for_supervisors(service: RunningService) -> None:
    service.call(seed_calls(service.switchboard))
    period = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-04T00:00:00Z"}
    with client(service, Authorization=f"Bearer {TOKENS['sue']}") as c:
        got = c.get("/api/analytics/costs", params=period)
        assert got.status_code == 200
        body = got.json()
        assert body["currency"] == "USD" and body["reference_name"] == "PSTN"
        by = {r["prefix"]: r for r in body["rows"]}
        assert (by["+7495"]["billed_minutes"], by["+7495"]["saving"]) == (3.0, 0.69)
        assert body["total"]["saving"] == 0.94
        rows = list(
            csv.DictReader(
                io.StringIO(c.get("/api/analytics/costs", params={**period, "format": "csv"}).text)
            )
        )
        assert [r["prefix"] for r in rows] == ["+7", "+7495", "other", "total"]
        naive = c.get(
            "/api/analytics/costs", params={"from": "2026-11-02T00:00:00", "to": period["to"]}
        )
        assert naive.status_code == 422 and naive.json()["detail"][0]["loc"] == ["query", "from"]
    with client(service, Authorization=f"Bearer {TOKENS['alice']}") as c:
        assert c.get("/api/analytics/costs", params=period).status_code == 403
    with client(service) as c:
        assert c.get("/api/analytics/costs", params=period).status_code == 401


def test_an_agent_adds_a_contact_and_an_address_from_the_pages(service: RunningService) -> None:
    sb = service.switchboard
    with client(service) as c:
        token = sign_in(c, "alice")
        made = c.post(
            "/console/contacts",
            data={
                "name": "Pavel Orlov",
                "company": "Orlov & Sons",
                "phone": "(202) 555-01 66",
                "email": "",
                "owner": "alice",
                "csrf": token,
            },
        )
        assert made.status_code == 303
        contact = sb.store.find_contact(sb.addresses.parse("+12025550166"))
        assert contact is not None and contact.name == "Pavel Orlov"
        assert made.headers["location"] == f"/console/contacts/{contact.id}"
        assert contact.owner_agent_id == sb.store.get_agent("alice").id
        # the same number again: refused with the reason, nothing stored
        again = c.post(
            "/console/contacts", data={"name": "Pasha", "phone": "+12025550166", "csrf": token}
        )
        assert again.headers["location"] == "/console/contacts"
        assert "+12025550166" in c.get("/console/contacts").text
        assert sb.store.search_contacts("Pasha", None)[1] == 0
        bad = c.post("/console/contacts", data={"name": "X", "phone": "12", "csrf": token})
        assert bad.status_code == 303 and sb.store.search_contacts("X", None)[1] == 0
        # an address added on the card
        url = f"/console/contacts/{contact.id}"
        c.post(
            url, data={"name": "Pavel Orlov", "add_address": "pavel@orlov.example", "csrf": token}
        )
        assert "email:pavel@orlov.example" in [
            str(a) for a in sb.store.get_contact(contact.id).addresses
        ]
