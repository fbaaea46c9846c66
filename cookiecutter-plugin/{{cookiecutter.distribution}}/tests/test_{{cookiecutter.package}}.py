"""Tests of the {{ cookiecutter.plugin_name }} channel, against a loopback gateway."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import Gateway
from switchboard import ConfigError, InteractionStatus, Switchboard
from switchboard.conformance import ChannelConformance
from switchboard.testing import open_switchboard

import {{ cookiecutter.package }}
from {{ cookiecutter.package }}.channel import Settings
from {{ cookiecutter.package }}.tables import gateway_reply_t

ADDRESS = {"phone": "+12025550143", "email": "anna@example.com", "telegram": "42"}[
    "{{ cookiecutter.address_kind }}"]


def Plugin() -> {{ cookiecutter.package }}.{{ cookiecutter.class_name }}Plugin:  # noqa: N802
    """A fresh plugin (and channel) per test; the entry point's is ``PLUGIN``."""
    return {{ cookiecutter.package }}.{{ cookiecutter.class_name }}Plugin()


def settings(gateway: Gateway) -> dict[str, Any]:
    return {"api_url": gateway.url, "token": "t0ken", "inbound_secret": "s3cret"}


async def test_outbox_sends_through_the_gateway(gateway: Gateway, tmp_path: Path) -> None:
    sb = await open_switchboard(tmp_path, Plugin(), config={
        "plugins": {"{{ cookiecutter.plugin_name }}": settings(gateway)}})
    queued = await sb.outbox.enqueue("{{ cookiecutter.plugin_name }}",
                                     address="{{ cookiecutter.address_kind }}:" + ADDRESS,
                                     text="Hello from the template")
    assert await sb.outbox.process_due() == 1
    assert gateway.sent == [{"to": ADDRESS, "text": "Hello from the template",
                             "auth": "Bearer t0ken"}]
    stored = sb.store.get_interaction(queued.id)
    assert stored is not None
    assert (stored.status, stored.external_id) == (InteractionStatus.SENT, "gw-1")
    # the plugin's own table (its migration ran when the Switchboard opened)
    replies = await sb.transaction(
        lambda conn: conn.execute(sa.select(gateway_reply_t.c.external_id, gateway_reply_t.c.status)).all(),
        write=False)
    assert [tuple(r) for r in replies] == [("gw-1", 200)]
    await sb.close()


async def test_refusals_are_send_errors(gateway: Gateway, tmp_path: Path) -> None:
    plugin = Plugin()
    sb = await open_switchboard(tmp_path, plugin, config={
        "plugins": {"{{ cookiecutter.plugin_name }}": settings(gateway)}})
    gateway.refuse.append((400, {}))
    queued = await sb.outbox.enqueue("{{ cookiecutter.plugin_name }}",
                                     address="{{ cookiecutter.address_kind }}:" + ADDRESS,
                                     text="x")
    await sb.outbox.process_due()
    stored = sb.store.get_interaction(queued.id)
    assert stored is not None and stored.status is InteractionStatus.FAILED
    assert stored.error is not None and "refused (400)" in stored.error
    await sb.close()


def test_inbound_route_checks_the_secret(gateway: Gateway, tmp_path: Path) -> None:
    from switchboard.app import create_app
    from switchboard.plugins import Plugins
    from switchboard.testing import make_config, serve_in_thread

    plugins = Plugins()
    plugins.register(Plugin(), "{{ cookiecutter.plugin_name }}")
    config = make_config(tmp_path, {"plugins": {"{{ cookiecutter.plugin_name }}": settings(gateway)}},
                         {"{{ cookiecutter.plugin_name }}": Settings})
    with serve_in_thread(create_app(config, plugins=plugins)) as service:
        deadline = time.monotonic() + 10
        while service.switchboard.channels["{{ cookiecutter.plugin_name }}"].state.value != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        url = f"{service.url}/{{ cookiecutter.plugin_name }}/inbound"
        body = {"id": "in-1", "from": ADDRESS, "text": "Hi there"}
        assert httpx.post(url, json=body).status_code == 403
        assert httpx.post(url, json=body, headers={"X-Inbound-Secret": "s3cret"}).status_code == 200
        assert httpx.post(url, json={"id": "x"},
                          headers={"X-Inbound-Secret": "s3cret"}).status_code == 422
        contact = service.switchboard.store.find_contact(
            service.switchboard.addresses.parse("{{ cookiecutter.address_kind }}:" + ADDRESS))
        assert contact is not None
        assert service.switchboard.store.timeline(contact.id or 0)[0].text == "Hi there"


class Test{{ cookiecutter.class_name }}Conformance(ChannelConformance):
    """Switchboard's channel contract: see switchboard.conformance."""

    @pytest.fixture(autouse=True)
    def _gateway(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def open(self, folder: Path) -> Switchboard:
        self.plugin = Plugin()
        return await open_switchboard(folder, self.plugin, config={
            "plugins": {"{{ cookiecutter.plugin_name }}": settings(self.gateway)}})

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        await self.plugin.channel.accept({"id": external_id, "from": ADDRESS, "text": text})

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        await self.plugin.channel.accept({"id": external_id, "from": "\x00 no address", "text": "x"})

    def address(self) -> str:
        return "{{ cookiecutter.address_kind }}:" + ADDRESS

    async def refuse_next_send(self) -> None:
        self.gateway.refuse.append((403, {}))


def test_plugin_is_found_through_its_entry_point() -> None:
    from switchboard.plugins import Plugins

    plugins = Plugins()
    plugins.load_entry_points(["{{ cookiecutter.plugin_name }}"])
    assert plugins.errors == []
    assert plugins.names == ["{{ cookiecutter.plugin_name }}"]


async def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.{{ cookiecutter.plugin_name }}\] api_url: required"):
        await open_switchboard(tmp_path, Plugin(), config={
            "plugins": {"{{ cookiecutter.plugin_name }}": {"token": "t"}}})
