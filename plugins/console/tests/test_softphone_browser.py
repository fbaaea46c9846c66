"""The console's softphone in Debian's Chromium (Playwright) with a fake microphone, and a
SIPp caller through Kamailio: the card pops with Answer, the agent answers in the browser,
mutes, holds, transfers to a colleague's browser who hangs up; the recording on the card
has both sides, and each of those steps shows in it. Screenshots go to
``artifacts/console/``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from console_peers import chromium, console_service, fake_microphone, screenshot, signed_in
from sip_peers import (
    CALLER,
    answering_phone,
    ended_call,
    place_call,
    sip_plugin,
    sip_settings,
)
from sip_peers import until as eventually

from switchboard import Direction, Disposition
from switchboard_sip import SipSettings
from switchboard_sip.testing import (
    Kamailio,
    Sipp,
    caller_scenario,
    pcm_rms,
    tone_level,
    unanswered_caller_scenario,
    wav_part,
    write_alaw,
    write_tone,
)

AGENTS = [
    {"name": "alice", "ring": "browser", "email": "alice@example.com"},
    {"name": "bob", "ring": "browser", "email": "bob@example.com"},
    {"name": "sue", "extension": "103", "role": "supervisor"},
]
LOUD = 1000  # the tones play at 8000 peak (RMS about 5600); silence is near 0


async def state(page: Any, name: str, timeout: float = 15) -> None:
    await page.wait_for_selector(f"#softphone[data-state={name}]", timeout=timeout * 1000)


async def test_an_agent_with_only_a_browser_takes_holds_and_transfers_a_call(
    tmp_path: Path, kam: Kamailio, phones: list[Sipp]
) -> None:
    mic = write_tone(tmp_path / "mic.wav", 10.0, freq=600)
    voice = write_alaw(tmp_path / "caller.alaw", 4.0, freq=350)
    sip = (sip_plugin(), "sip", SipSettings)
    settings = sip_settings(kam, ring_agents=["alice"], ring_timeout=15.0)
    with console_service(
        tmp_path / "service", sip, plugins_config={"sip": settings}, agents=AGENTS
    ) as svc:
        sb = svc.switchboard
        alice_id, bob_id = sb.store.get_agent("alice").id, sb.store.get_agent("bob").id
        await eventually(lambda: sb.channels["sip"].state.value == "running", within=15)
        olga = svc.call(sb.create_contact("Olga Petrova", [sb.addresses.parse("+1 202 555 0143")]))
        async with chromium(*fake_microphone(mic)) as browser:
            alice = await signed_in(browser, svc.url, "alice")
            bob = await signed_in(browser, svc.url, "bob")
            await state(alice, "ready")
            await state(bob, "ready")
            assert sb.softphones.status()["connected"] == 2

            # a second tab of alice's: one softphone is active, the other says so
            second = await alice.context.new_page()
            await second.goto(f"{svc.url}/console/contacts")
            await state(second, "elsewhere")
            assert "another tab" in await second.inner_text("[data-testid=softphone-note]")
            await second.close()

            call = asyncio.create_task(
                place_call(
                    tmp_path,
                    kam,
                    caller_scenario(CALLER, hangup="callee", stream=voice, expect_reinvites=2),
                    90,
                )
            )
            await alice.locator("[data-testid=pop]").first.wait_for(timeout=15_000)
            await state(alice, "ringing")
            # no click on the page yet: the ringtone waits for one, and says so
            assert "Click anywhere" in await alice.inner_text("[data-testid=softphone-note]")
            assert "Olga Petrova" in await alice.inner_text("[data-testid=softphone-caller]")
            await screenshot(alice, "20-softphone-ringing")
            await alice.click("[data-testid=pop-answer]")
            await state(alice, "incall")
            talking = time.monotonic()
            await screenshot(alice, "21-softphone-in-call")
            await asyncio.sleep(2.0)

            await alice.click("[data-testid=softphone-mute]")
            muted = time.monotonic()
            await asyncio.sleep(2.0)
            await alice.click("[data-testid=softphone-mute]")
            unmuted = time.monotonic()
            await asyncio.sleep(1.5)

            await alice.click("[data-testid=softphone-hold]")
            await state(alice, "held")
            held = time.monotonic()
            await asyncio.sleep(2.0)
            await alice.click("[data-testid=softphone-hold]")
            await state(alice, "incall")
            resumed = time.monotonic()
            await asyncio.sleep(1.5)

            # blind transfer to bob, who answers in his browser
            await alice.fill("[data-testid=softphone-to]", "bob")
            await alice.click("[data-testid=softphone-blind]")
            await state(bob, "ringing")
            await bob.click("[data-testid=softphone-answer]")
            await state(bob, "incall")
            transferred = time.monotonic()
            await state(alice, "ready")
            await asyncio.sleep(2.0)
            await bob.click("[data-testid=softphone-hangup]")
            hung_up = time.monotonic()
            await call  # the caller got our BYE
            first = await eventually(lambda: ended_call(sb), within=20)
            await eventually(lambda: sb.store.get_call(first.call_id).recording, within=10)

            # on the card: bob, who has the call now, plays its recording
            await bob.goto(f"{svc.url}/console/contacts/{olga.id}")
            player = bob.locator("[data-testid=recording]")
            assert await player.count() == 1
            assert quote(first.call_id) in (await player.get_attribute("src") or "")
            await screenshot(bob, "24-card-with-the-softphone-call")

            # click-to-call from the card: alice's softphone first (answered by itself:
            # her click was the answer), then the customer's phone
            customer = await answering_phone(
                phones, tmp_path, "customer", answer_after_ms=300, hangup_after_ms=2500
            )
            kam.route("+12025550143", customer.port)
            await alice.goto(f"{svc.url}/console/contacts/{olga.id}")
            await state(alice, "ready")
            await alice.click("[data-testid=call]")
            await state(alice, "incall")
            assert alice.url.endswith(f"/console/contacts/{olga.id}")  # never left the card
            await state(alice, "ready", timeout=20)  # the customer hung up
            assert (await customer.wait(10)).ok

        dialled = await eventually(lambda: ended_call(sb), within=20)
        assert dialled.call_id != first.call_id
        assert dialled.direction is Direction.OUTBOUND
        assert dialled.disposition is Disposition.ANSWERED and dialled.agent_id == alice_id
        assert dialled.recording is not None
        assert pcm_rms(dialled.recording.path, 0) > LOUD / 2  # the customer's phone
        assert pcm_rms(dialled.recording.path, 1) > LOUD  # alice's microphone

        record = first
        assert record.disposition is Disposition.ANSWERED
        assert record.agent_id == bob_id  # the transfer moved the call
        assert record.recording is not None
        wav = record.recording.path

        def level(channel: int, start: float, end: float) -> int:
            return pcm_rms(wav, channel, start - talking, end - talking)

        customer, agent = 0, 1
        # talking: the caller's tone on the left, alice's microphone on the right
        assert level(customer, talking + 0.5, muted) > LOUD
        assert level(agent, talking + 0.5, muted) > LOUD
        # muted: the customer still heard, alice not
        assert level(agent, muted + 0.5, unmuted - 0.2) < LOUD / 10
        assert level(customer, muted + 0.5, unmuted - 0.2) > LOUD
        # on hold: the customer hears music, and nothing of theirs reaches alice
        assert level(customer, held + 0.5, resumed - 0.2) < LOUD / 10
        assert level(customer, resumed + 0.5, resumed + 1.4) > LOUD
        # after the transfer: bob's microphone, until he hung up
        assert level(agent, transferred + 0.5, hung_up - 0.2) > LOUD
        assert abs(record.recording.duration - (hung_up - talking)) < 1.5


# what the page's softphone plays, by pitch (dB at each frequency's FFT bin, the loudest
# over ``ms``): -100 dB and below is silence; a tone at the fake microphones' level, -40
HEARS = """async ([freqs, ms]) => {
  const audio = document.querySelector('#softphone .sp-audio');
  const ctx = new AudioContext();
  await ctx.resume();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  ctx.createMediaStreamSource(audio.srcObject).connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  const peaks = freqs.map(() => -200);
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await new Promise(done => setTimeout(done, 100));
    analyser.getFloatFrequencyData(bins);
    freqs.forEach((f, i) => {
      const at = Math.round(f / (ctx.sampleRate / analyser.fftSize));
      peaks[i] = Math.max(peaks[i], bins[at - 1], bins[at], bins[at + 1]);
    });
  }
  await ctx.close();
  return peaks;
}"""


async def test_a_supervisor_listens_whispers_and_barges_in_from_the_dashboard(
    tmp_path: Path, kam: Kamailio
) -> None:
    """The caller plays 350 Hz, alice's microphone 600 Hz, sue's (another browser) 900 Hz."""
    agents = [
        {"name": "alice", "ring": "browser"},
        {"name": "bob", "extension": "102"},
        {"name": "sue", "ring": "browser", "role": "supervisor"},
    ]
    alice_mic = write_tone(tmp_path / "alice.wav", 10.0, freq=600)
    sue_mic = write_tone(tmp_path / "sue.wav", 10.0, freq=900)
    voice = write_alaw(tmp_path / "caller.alaw", 2.0, freq=350)
    sip = (sip_plugin(), "sip", SipSettings)
    settings = sip_settings(kam, ring_agents=["alice"], ring_timeout=15.0)
    with console_service(
        tmp_path / "service", sip, plugins_config={"sip": settings}, agents=agents
    ) as svc:
        sb = svc.switchboard
        await eventually(lambda: sb.channels["sip"].state.value == "running", within=15)
        async with (
            chromium(*fake_microphone(alice_mic)) as one,
            chromium(*fake_microphone(sue_mic)) as two,
        ):
            alice = await signed_in(one, svc.url, "alice")
            sue = await signed_in(two, svc.url, "sue")
            await state(alice, "ready")
            await state(sue, "ready")
            call = asyncio.create_task(
                place_call(
                    tmp_path,
                    kam,
                    caller_scenario(CALLER, hangup="callee", stream=voice),
                    90,
                )
            )
            await state(alice, "ringing")
            await alice.click("[data-testid=softphone-answer]")
            await state(alice, "incall")
            talking = time.monotonic()

            await sue.goto(f"{svc.url}/console/dashboard")
            row = sue.locator("[data-testid=live-call]").first
            await row.wait_for(timeout=10_000)  # listed at once, or on the next reload
            assert "alice" in await row.inner_text()
            await row.locator("[data-testid=supervise-listen]").click()
            await state(sue, "incall")  # her softphone answered by itself
            listened = time.monotonic()
            caller_db, alice_db = await sue.evaluate(HEARS, [[350, 600], 1500])
            (whisper_before,) = await alice.evaluate(HEARS, [[900], 1000])
            await screenshot(sue, "22-supervisor-listening")

            await sue.locator("[data-testid=live-call] [data-testid=supervise-whisper]").click()
            await eventually(lambda: len(sb.store.list_calls()[0].supervision) == 2, within=10)
            (whispered,) = await alice.evaluate(HEARS, [[900], 1500])
            whispering = time.monotonic()
            await asyncio.sleep(1.5)

            await sue.locator("[data-testid=live-call] [data-testid=supervise-barge]").click()
            await eventually(lambda: len(sb.store.list_calls()[0].supervision) == 3, within=10)
            barged = time.monotonic()
            await asyncio.sleep(2.0)
            await alice.click("[data-testid=softphone-hangup]")
            await call
            await state(sue, "ready")  # the supervisor's leg ended with the call

        record = await eventually(lambda: ended_call(sb), within=20)
        sue_id = sb.store.get_agent("sue").id
        assert [(s.agent_id, str(s.mode)) for s in record.supervision] == [
            (sue_id, "listen"),
            (sue_id, "whisper"),
            (sue_id, "barge"),
        ]
        # on the card, for whoever sees the call
        async with chromium() as browser:
            page = await signed_in(browser, svc.url, "alice")
            await page.goto(f"{svc.url}/console/contacts/{record.contact_id}")
            marks = await page.locator("[data-testid=supervision]").all_inner_texts()
            assert marks == ["sue: listened", "sue: whispered", "sue: barged in"]
        # listening, sue heard both sides; alice did not hear sue
        assert caller_db > -60 and alice_db > -60, (caller_db, alice_db)
        assert whisper_before < -80, whisper_before
        # whispering, alice heard sue; barging in, the customer did too (the recording)
        assert whispered > -60, whispered
        wav = record.recording.path

        def pitch(start: float, seconds: float, freq: int) -> float:
            return tone_level(wav_part(wav, 1, start - talking, start - talking + seconds), freq)

        assert pitch(listened + 0.5, 1.0, 900) < 100  # not while listening
        assert pitch(whispering, 1.0, 900) < 100  # nor whispering
        assert pitch(barged + 0.5, 1.2, 900) > 400  # barging in (the browser processes its mic)


async def test_a_refused_microphone_is_explained_and_the_call_rings_on(
    tmp_path: Path, kam: Kamailio
) -> None:
    """No fake permission prompt: Chromium refuses the microphone (headless, nobody to ask);
    the panel says what to do, the call keeps ringing, then goes unanswered."""
    sip = (sip_plugin(), "sip", SipSettings)
    settings = sip_settings(kam, ring_agents=["alice"], ring_timeout=6.0)
    with console_service(
        tmp_path / "service", sip, plugins_config={"sip": settings}, agents=AGENTS
    ) as svc:
        sb = svc.switchboard
        await eventually(lambda: sb.channels["sip"].state.value == "running", within=15)
        async with chromium("--use-fake-device-for-media-stream") as browser:
            alice = await signed_in(browser, svc.url, "alice")
            await state(alice, "ready")
            call = asyncio.create_task(
                place_call(tmp_path, kam, unanswered_caller_scenario(CALLER, expect=480), 30)
            )
            await state(alice, "ringing")
            await alice.click("[data-testid=softphone-answer]")
            note = alice.locator("[data-testid=softphone-note]")
            await note.filter(has_text="refused the microphone").wait_for(timeout=10_000)
            assert await alice.get_attribute("#softphone", "data-state") == "ringing"
            await screenshot(alice, "23-softphone-microphone-refused")
            await call  # nobody answered: 480 to the caller
            await state(alice, "ready")
        record = await eventually(lambda: ended_call(sb), within=20)
        assert record.disposition is Disposition.MISSED
