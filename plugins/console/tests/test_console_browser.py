"""The console in Debian's Chromium (Playwright), with real calls through Kamailio and SIPp
and real email through an SMTP server: sign in, search, the card, click-to-call, the
recording player, a templated email, the screen pop for a known and an unknown caller,
recording permissions, the dashboard in English and Russian. Screenshots of each page go
to ``artifacts/console/``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from console_peers import (
    PERIOD,
    cells,
    chromium,
    console_service,
    screenshot,
    seed_calls,
    signed_in,
)
from email_servers import smtp_server
from sip_peers import CALLER, answering_phone, ended_call, place_call, sip_plugin, sip_settings
from sip_peers import until as eventually

from switchboard import Direction, Disposition
from switchboard.testing import LoopbackPlugin
from switchboard_email.channel import EmailChannel, EmailSettings
from switchboard_sip import SipSettings
from switchboard_sip.testing import Kamailio, Sipp, caller_scenario

READ_DURATION = """a => new Promise((ok, fail) => {
    if (a.readyState >= 1) return ok(a.duration);
    a.addEventListener("loadedmetadata", () => ok(a.duration));
    a.addEventListener("error", () => fail(new Error("media error " + (a.error && a.error.code))));
    a.load();
})"""


@pytest.fixture
def smtp() -> Iterator[tuple[Any, int]]:
    with smtp_server("none") as (recorder, port, _):
        yield recorder, port


async def test_the_agent_console_in_chromium(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp], smtp: tuple[Any, int]
) -> None:
    recorder, smtp_port = smtp
    sip = (sip_plugin(), "sip", SipSettings)
    mail = (LoopbackPlugin(EmailChannel(), plugin_name="email"), "email", EmailSettings)
    plugins_config = {
        "sip": sip_settings(kam, ring_agents=["alice"], ring_timeout=8.0),
        "email": {
            "from_address": "sales@example.com",
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "smtp_security": "none",
            "smtp_timeout": 5,
        },
    }
    with console_service(tmp_path / "service", sip, mail, plugins_config=plugins_config) as svc:
        sb = svc.switchboard
        alice_id = sb.store.get_agent("alice").id
        olga = svc.call(
            sb.create_contact(
                "Olga Petrova",
                [sb.addresses.parse("+1 202 555 0143"), sb.addresses.parse("olga@romashka.ru")],
                company="Romashka",
                owner_agent_id=alice_id,
            )
        )
        await eventually(lambda: sb.channels["sip"].state.value == "running", within=15)
        async with chromium() as browser:
            login = await browser.new_page()
            await login.goto(f"{svc.url}/console/contacts")
            assert "/console/login" in login.url  # signed out: to the sign-in form
            await screenshot(login, "00-sign-in")
            page = await signed_in(browser, svc.url, "alice")
            await screenshot(page, "01-contacts")

            # search by a differently written number, open the card
            await page.fill("input[name=q]", "(202) 555-01 43")
            await page.press("input[name=q]", "Enter")
            await page.click("text=Olga Petrova")
            await page.wait_for_url(f"**/console/contacts/{olga.id}")
            assert "Romashka" in await page.inner_text("[data-testid=card]")
            await screenshot(page, "02-card")

            # click-to-call: alice's phone rings and answers, then the customer's
            alice = await answering_phone(phones, tmp_path, "alice", answer_after_ms=200)
            customer = await answering_phone(
                phones, tmp_path, "customer", answer_after_ms=500, hangup_after_ms=2500
            )
            kam.route("101", alice.port)
            kam.route("+12025550143", customer.port)
            await page.click("[data-testid=call]")
            assert "Calling" in await page.inner_text(".flash.ok")
            record = await eventually(lambda: ended_call(sb), within=30)
            assert record.direction is Direction.OUTBOUND
            assert record.disposition is Disposition.ANSWERED
            assert record.contact_id == olga.id and record.agent_id == alice_id
            assert record.recording is not None
            assert (await alice.wait(10)).ok and (await customer.wait(10)).ok

            # the recording player loads the WAV
            await page.reload()
            player = page.locator("[data-testid=recording]").first
            duration = await player.evaluate(READ_DURATION)
            assert duration == pytest.approx(record.recording.duration, abs=0.2)
            await screenshot(page, "03-card-with-recording")

            # a templated email from the card, through the SMTP server
            await page.select_option(
                "[data-testid=template-form] select[name=template]", "follow-up"
            )
            await page.click("[data-testid=template-form] button[type=submit]")
            assert "Message queued." in await page.inner_text(".flash.ok")
            await eventually(lambda: recorder.messages, within=15)
            sent = message_from_bytes(recorder.messages[0].content, policy=default_policy)
            assert sent["Subject"] == "Following up, Olga Petrova"
            assert sent["To"] == "olga@romashka.ru"
            assert "thank you for the call. alice" in sent.get_body().get_content()

            # and a plain message, written on the card
            await page.select_option(
                "[data-testid=message-form] select[name=target]", "email|email:olga@romashka.ru"
            )
            await page.fill("[data-testid=message-form] input[name=subject]", "Prices")
            await page.fill("[data-testid=message-form] textarea[name=text]", "As promised.")
            await page.click("[data-testid=message-form] button[type=submit]")
            assert "Message queued." in await page.inner_text(".flash.ok")
            await eventually(lambda: len(recorder.messages) == 2, within=15)
            sent = message_from_bytes(recorder.messages[1].content, policy=default_policy)
            assert sent["Subject"] == "Prices"
            assert sent.get_body().get_content().strip() == "As promised."

            # screen pop: a known caller rings alice; the card pops before she answers
            alice = await answering_phone(phones, tmp_path, "alice2", answer_after_ms=2500)
            kam.route("101", alice.port)
            call = asyncio.create_task(
                place_call(tmp_path, kam, caller_scenario(CALLER, talk_ms=1000), timeout=40)
            )
            pop = page.locator("[data-testid=pop]").first
            await pop.wait_for(timeout=15_000)
            text = await pop.inner_text()
            assert "Incoming call" in text and "Olga Petrova" in text and "Romashka" in text
            assert "Owner: alice" in text
            shown = await pop.evaluate(
                "p => [Number(p.dataset.shownAt), Number(p.dataset.eventAt)]"
            )
            await screenshot(page, "04-screen-pop")
            await call
            popped = await eventually(lambda: ended_call(sb), within=20)
            assert popped.direction is Direction.INBOUND and popped.answered_at is not None
            assert shown[0] < popped.answered_at.timestamp() * 1000  # before the answer
            assert shown[0] - shown[1] < 1000  # within a blink of the event

            # an unknown caller pops a "new contact" card
            alice = await answering_phone(phones, tmp_path, "alice3", answer_after_ms=1500)
            kam.route("101", alice.port)
            call = asyncio.create_task(
                place_call(tmp_path, kam, caller_scenario("12025550188", talk_ms=500), timeout=40)
            )
            new = page.locator("[data-testid=pop].new").first
            await new.wait_for(timeout=15_000)
            assert "New contact" in await new.inner_text()
            await screenshot(page, "05-screen-pop-new-contact")
            await call

            # the callbacks page (the calls above were all answered: nothing to call back)
            await page.goto(f"{svc.url}/console/tasks")
            assert "Nothing to call back." in await page.inner_text("[data-testid=tasks]")
            await screenshot(page, "05b-callbacks")

            # bob may not hear alice's call
            bob = await signed_in(browser, svc.url, "bob")
            await bob.goto(f"{svc.url}/console/contacts/{olga.id}")
            assert "only the agent who took the call" in await bob.inner_text(
                "[data-testid=timeline]"
            )
            denied = await bob.request.get(f"{svc.url}/console/calls/{record.call_id}/recording")
            assert denied.status == 403

            # the dashboard for the supervisor, on seeded calls
            svc.call(seed_calls(sb))
            sue = await signed_in(browser, svc.url, "sue")
            await sue.goto(f"{svc.url}/console/dashboard?{PERIOD}")
            html = await sue.content()
            assert cells(html, "by-agent", "alice")[:5] == ["alice", "3", "2", "1", "3"]
            bars = sue.locator("[data-testid=chart-agents] rect[data-series=answered]")
            assert await bars.count() == 3  # alice, bob and the unassigned calls
            alice_bar = sue.locator(
                "[data-testid=chart-agents] rect[data-series=answered][data-category=alice]"
            )
            assert await alice_bar.get_attribute("data-value") == "3"
            assert float(await alice_bar.get_attribute("height") or 0) > 0
            await screenshot(sue, "06-dashboard")
            await screenshot(sue, "06-dashboard-window", full_page=False)
            sue_ru = await signed_in(browser, svc.url, "sue", locale="ru-RU")
            await sue_ru.goto(f"{svc.url}/console/dashboard?{PERIOD}")
            assert "По сотрудникам" in await sue_ru.inner_text("main")
            await screenshot(sue_ru, "07-dashboard-ru")
