"""The assembled core: channel registration and start-up failures, and the fixtures that
``switchboard.testing`` gives every pytest run through its ``pytest11`` entry point."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import attrs
import pytest

from switchboard import (
    ChannelContext,
    InboundMessage,
    Invalid,
    NotConfigured,
    Switchboard,
    hookimpl,
)
from switchboard.channels import ChannelState
from switchboard.store import Store, contact_t
from switchboard.testing import LoopbackChannel, LoopbackPlugin


class Refuses(LoopbackChannel):
    async def start(self, ctx: ChannelContext) -> None:
        raise ConnectionRefusedError("registrar 127.0.0.1:5060 refused")


async def test_a_channel_that_fails_to_start_does_not_stop_the_others(
    make_switchboard: Any, caplog: Any
) -> None:
    good, bad = LoopbackChannel("good"), Refuses("bad")
    with caplog.at_level(logging.ERROR):
        sb: Switchboard = await make_switchboard(LoopbackPlugin(bad, good))
    assert sb.channels["good"].state is ChannelState.RUNNING
    assert sb.channels["bad"].state is ChannelState.FAILING
    assert sb.channels["bad"].last_error == (
        "ConnectionRefusedError: registrar 127.0.0.1:5060 refused"
    )
    assert "channel bad (plugin loopback) failed to start" in caplog.text
    assert sb.running_channels() == ["good"]
    got = await good.inject(InboundMessage("1", "+12025550143", text="still works"))
    assert not got.duplicate


async def test_bad_registrations_are_reported(make_switchboard: Any) -> None:
    class Confused:
        plugin_name = "confused"

        @hookimpl
        def register_channels(self, register):  # type: ignore[no-untyped-def]
            register("not a channel")
            register(LoopbackChannel("dup"))

        @hookimpl
        def register_address_kinds(self, register):  # type: ignore[no-untyped-def]
            register("Bad Kind!", lambda raw, book: raw)

    sb: Switchboard = await make_switchboard(LoopbackPlugin(LoopbackChannel("dup")), Confused())
    errors = [(e.plugin, e.stage, e.error) for e in sb.plugins.hook_errors]
    assert (
        "confused",
        "hook register_channels",
        "register() takes one Channel object, got ('not a channel',)",
    ) in errors
    owner = sb.channels["dup"].plugin
    other = {"loopback": "confused", "confused": "loopback"}[owner]
    assert (
        other,
        "hook register_channels",
        f"channel name 'dup' is already taken by plugin '{owner}'",
    ) in errors
    assert any(e[1] == "hook register_address_kinds" and "Bad Kind!" in e[2] for e in errors)
    assert list(sb.channels) == ["dup"]


async def test_plugin_settings_reach_the_channel(make_switchboard: Any) -> None:
    @attrs.define
    class Settings:
        token: str
        rate: int = 30

    class WithSettings(LoopbackPlugin):
        @hookimpl
        def register_settings(self, register):  # type: ignore[no-untyped-def]
            register(Settings)

    ch = LoopbackChannel("tg", "telegram")
    sb = await make_switchboard(
        WithSettings(ch, plugin_name="tg"), config={"plugins": {"tg": {"token": "abc"}}}
    )
    assert ch.ctx is not None
    assert ch.ctx.settings == Settings("abc", 30)
    assert sb.channels["tg"].state is ChannelState.RUNNING


async def test_unconfigured_plugin_channels_stay_stopped(make_switchboard: Any) -> None:
    @attrs.define
    class Required:
        server: str

    class NeedsConfig(LoopbackPlugin):
        @hookimpl
        def register_settings(self, register):  # type: ignore[no-untyped-def]
            register(Required)

    ch = LoopbackChannel("sip")
    sb = await make_switchboard(NeedsConfig(ch, plugin_name="sip"))
    assert sb.channels["sip"].state is ChannelState.NOT_CONFIGURED
    assert ch.started == 0
    await sb.stop_channels()
    assert ch.stopped == 0


async def test_a_channel_its_settings_do_not_ask_for_shows_why_and_is_not_restarted(
    make_switchboard: Any,
) -> None:
    class Unwanted(LoopbackChannel):
        async def start(self, ctx: ChannelContext) -> None:
            await super().start(ctx)
            raise NotConfigured("no [[plugins.two.pages]] with instagram_id")

    half, whole = Unwanted("half"), LoopbackChannel("whole")
    sb = await make_switchboard(LoopbackPlugin(half, whole, plugin_name="two"), start=False)
    await sb.supervise_channels(backoff_initial=0.01, backoff_max=0.02)
    await asyncio.sleep(0.1)  # many backoffs long: a restart would have happened
    handle = sb.channels["half"]
    assert handle.state is ChannelState.NOT_CONFIGURED and handle.restarts == 0
    assert handle.last_error == "no [[plugins.two.pages]] with instagram_id"
    assert half.started == 1 and sb.channels["whole"].state is ChannelState.RUNNING
    with pytest.raises(Invalid, match=r"not configured \(no \[\[plugins\.two\.pages"):
        await sb.outbox.enqueue("half", address="+12025550143", text="hi")
    await sb.stop_channels()


async def test_stop_channels_stops_each_once(make_switchboard: Any) -> None:
    a, b = LoopbackChannel("a"), LoopbackChannel("b")
    sb = await make_switchboard(LoopbackPlugin(a, b))
    await sb.stop_channels()
    await sb.stop_channels()
    assert (a.stopped, b.stopped) == (1, 1)
    assert {h.state for h in sb.channels.values()} == {ChannelState.STOPPED}


def test_switchboard_store_fixture_is_migrated(switchboard_store: Store) -> None:
    assert switchboard_store.current_revision() == Store.head_revision()
    assert switchboard_store.count(contact_t) == 0


def test_registered_unregisters_even_on_error() -> None:
    from switchboard.plugins import Plugins
    from switchboard.testing import registered

    plugins = Plugins()
    seen = []

    def use_and_fail() -> None:
        with registered(plugins, LoopbackPlugin(), "temp"):
            seen.append(plugins.names)
            raise RuntimeError("test body failed")

    with pytest.raises(RuntimeError, match="test body failed"):
        use_and_fail()
    assert seen == [["temp"]]
    assert plugins.names == []


def test_switchboard_service_fixture_serves_http(switchboard_service: Any) -> None:
    import httpx

    channel = LoopbackChannel("sms")
    service = switchboard_service(
        LoopbackPlugin(channel),
        config={
            "switchboard": {"tokens": [{"token": "fixture-token-0123456789", "role": "admin"}]}
        },
    )
    deadline = time.monotonic() + 10
    while httpx.get(f"{service.url}/api/health").json()["channels"]["sms"]["state"] != (
        "running"
    ):  # channels start in the background
        assert time.monotonic() < deadline
        time.sleep(0.02)
    got = service.call(channel.inject(InboundMessage("f1", "+12025550143", text="hi")))
    listed = httpx.get(
        f"{service.url}/api/contacts/{got.contact.id}/timeline",
        headers={"Authorization": "Bearer fixture-token-0123456789"},
    ).json()
    assert [i["text"] for i in listed["items"]] == ["hi"]


async def test_templates_render_for_a_contact_through_the_switchboard(tmp_path: Any) -> None:
    from switchboard import Address, Invalid, TemplateError
    from switchboard.testing import open_switchboard

    sb = await open_switchboard(
        tmp_path,
        config={
            "switchboard": {
                "templates": {
                    "hello": {"subject": "Hi {{ contact.name }}", "text": "Code {{ code }}"}
                }
            }
        },
    )
    try:
        anna = await sb.create_contact("Anna", [Address("phone", "+12025550143")])
        done = sb.render("hello", contact=anna, address=anna.addresses[0], variables={"code": 7})
        assert (done.subject, done.text, done.html) == ("Hi Anna", "Code 7", None)
        with pytest.raises(TemplateError, match="'code' is undefined") as caught:
            sb.render("hello", contact=anna)
        assert isinstance(caught.value, Invalid)  # a 422 from the API
        with pytest.raises(TemplateError, match="unknown template 'nope'"):
            sb.render("nope")
    finally:
        await sb.close()
