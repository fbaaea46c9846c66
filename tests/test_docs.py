"""The docs keep up with the code: every hook and every core setting is documented."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from switchboard import hookspecs
from switchboard.config import (
    AgentSettings,
    AnalyticsSettings,
    CallbackSettings,
    CoreSettings,
    HttpSettings,
    NodeSettings,
    OutboxSettings,
    TemplateSettings,
    TokenSettings,
    WebhookSettings,
)
from switchboard.plugins import HOOK_NAMES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def sections(text: str) -> dict[str, str]:
    """``### `name(args)` `` headings → (heading, body)."""
    found = {}
    parts = re.split(r"^### `([a-z_]+\([^)]*\))`\s*$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        found[heading.split("(")[0]] = (heading, body.split("\n## ")[0])
    return found


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_section_with_its_signature(hook: str) -> None:
    documented = sections((DOCS / "hooks.md").read_text(encoding="utf-8"))
    assert hook in documented, f"docs/hooks.md has no section for {hook}"
    heading, body = documented[hook]
    spec = getattr(hookspecs, hook)
    args = ", ".join(inspect.signature(spec).parameters)
    assert heading == f"{hook}({args})"
    firstresult = spec.switchboard_spec["firstresult"]
    assert ("**firstresult**" in body) == firstresult
    assert ("Not firstresult" in body) == (not firstresult)
    assert "```python" in body and "@hookimpl" in body, f"{hook}: no example"
    assert (spec.__doc__ or "").strip(), f"{hook}: the spec has no docstring"


def _examples(hook: str) -> list[str]:
    _, body = sections((DOCS / "hooks.md").read_text(encoding="utf-8"))[hook]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.mark.parametrize("hook", HOOK_NAMES)
async def test_every_hook_example_is_a_plugin_that_registers(
    hook: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example runs as written: its plugin class registers with the hook it shows,
    and a ``register_*`` example registers something when its hook is called."""
    # the package the examples name (register_migrations reads its migrations folder)
    (tmp_path / "switchboard_acme_sms" / "migrations").mkdir(parents=True)
    (tmp_path / "switchboard_acme_sms" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import click
    from fastapi import APIRouter

    from switchboard import hookimpl
    from switchboard.plugins import Plugins

    [example] = _examples(hook)
    namespace: dict[str, object] = {"hookimpl": hookimpl, "__name__": f"example_{hook}"}
    exec(compile(example, f"docs/hooks.md ({hook})", "exec"), namespace)
    plugins = Plugins()
    assert plugins.register(namespace["MyPlugin"](), "example"), plugins.errors  # type: ignore[operator]
    assert plugins.info()[0].hooks == (hook,)
    if hook in {"register_routes", "register_commands"}:
        router, group = APIRouter(), click.Group("switchboard")
        await getattr(plugins.hooks, hook)(
            **{"router": router} if "routes" in hook else {"group": group}
        )
        assert router.routes or group.commands
    elif hook.startswith("register_"):
        assert await getattr(plugins.hooks, hook)() != []
    assert plugins.hook_errors == []


async def test_the_event_consumer_example_gets_events(tmp_path: Path) -> None:
    import asyncio

    from switchboard import InboundMessage
    from switchboard.testing import LoopbackChannel, LoopbackPlugin, open_switchboard

    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    section = text.split("### Following the event log", 1)[1]
    [example] = re.findall(r"```python\n(.*?)```", section.split("\n### ", 1)[0], flags=re.S)
    namespace: dict[str, Any] = {"__name__": "example_consumer"}
    exec(compile(example, "docs/plugins.md (consumers)", "exec"), namespace)
    crm = namespace["AcmeCrm"]()
    channel = LoopbackChannel("sms")
    sb = await open_switchboard(tmp_path, crm, LoopbackPlugin(channel))
    try:
        sb.loops.start("events", sb.events.run)
        await sb.consumers.start()
        got = await channel.inject(InboundMessage("m1", "+12025550143", text="hello"))
        deadline = asyncio.get_running_loop().time() + 10
        while getattr(crm, "last", None) is None:
            assert asyncio.get_running_loop().time() < deadline, "no event reached it"
            await asyncio.sleep(0.02)
        event = sb.events.read_since(crm.last - 1, 1)[0]
        assert event.type == "message.received"  # contact.created was not asked for
        assert event.data["interaction"]["id"] == got.interaction.id
    finally:
        await sb.close()


def test_the_plugin_style_example_registers() -> None:
    from switchboard.plugins import Plugins

    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    first = re.search(r"```python\n(.*?)```", text, flags=re.S)
    assert first is not None and "PLUGIN = CrmSyncPlugin()" in first.group(1)
    namespace: dict[str, object] = {"__name__": "example_style"}
    exec(compile(first.group(1), "docs/hooks.md", "exec"), namespace)
    plugins = Plugins()
    assert plugins.register(namespace["PLUGIN"], "crm_sync")
    assert plugins.info()[0].hooks == ("contact_created",)


def test_no_section_for_a_hook_that_does_not_exist() -> None:
    documented = sections((DOCS / "hooks.md").read_text(encoding="utf-8"))
    assert set(documented) == set(HOOK_NAMES)


@pytest.mark.parametrize(
    "cls",
    [
        CoreSettings,
        AgentSettings,
        OutboxSettings,
        TokenSettings,
        WebhookSettings,
        TemplateSettings,
        HttpSettings,
        NodeSettings,
        CallbackSettings,
        AnalyticsSettings,
    ],
)
def test_every_core_setting_is_in_the_config_doc(cls: type) -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for field in attrs.fields(cls):
        assert f"| `{field.name}` |" in text, f"docs/config.md lacks {cls.__name__}.{field.name}"


@pytest.mark.parametrize(
    ("module", "settings", "doc"),
    [
        ("switchboard_telegram", "TelegramSettings", "telegram.md"),
        ("switchboard_email", "EmailSettings", "email.md"),
        ("switchboard_mailings", "MailingSettings", "mailings.md"),
        ("switchboard_whatsapp", "WhatsAppSettings", "whatsapp.md"),
        ("switchboard_vk", "VkSettings", "vk.md"),
        ("switchboard_max", "MaxSettings", "max.md"),
        ("switchboard_meta", "MetaSettings", "meta.md"),
        ("switchboard_meta", "PageSettings", "meta.md"),
        ("switchboard_sip", "SipSettings", "sip.md"),
        ("switchboard_ivr", "IvrSettings", "ivr.md"),
        ("switchboard_amocrm", "AmoCrmSettings", "crm-amocrm.md"),
        ("switchboard_odoo", "OdooSettings", "crm-odoo.md"),
        ("switchboard_bitrix24", "Bitrix24Settings", "crm-bitrix24.md"),
        ("switchboard.crm", "CrmPush", "crm-amocrm.md"),
        ("switchboard.crm", "CrmPush", "plugins.md"),
        ("switchboard_speech", "SpeechSettings", "speech.md"),
        ("switchboard_speech", "Rule", "speech.md"),
    ],
)
def test_every_plugin_setting_is_in_its_doc(module: str, settings: str, doc: str) -> None:
    cls = getattr(importlib.import_module(module), settings)
    text = (DOCS / doc).read_text(encoding="utf-8")
    for field in attrs.fields(cls):
        if field.init:
            assert f"`{field.name}`" in text, f"docs/{doc} lacks {field.name}"


def test_the_meta_docs_examples_are_a_valid_configuration_and_payload() -> None:
    import tomllib

    from switchboard.config import structure
    from switchboard_meta import MetaSettings
    from switchboard_meta.channel import _quick_replies

    text = (DOCS / "meta.md").read_text()
    config, template = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    secrets = {"${META_APP_SECRET}": "0" * 32, "${META_VERIFY_TOKEN}": "verify-me"}
    for name, value in secrets.items():
        config = config.replace(name, value)
    settings, problems = structure(tomllib.loads(config)["plugins"]["meta"], MetaSettings, "meta")
    assert problems == [] and settings is not None
    assert settings.check_config(None, None) == []  # type: ignore[arg-type]
    assert settings.pages[0].instagram_id == "17841400000000001"
    payload = tomllib.loads(template)["switchboard"]["templates"]["pick_colour"]["channels"]
    assert [q["title"] for q in _quick_replies(payload["messenger"]["quick_replies"])] == [
        "Red",
        "Blue",
    ]


@pytest.mark.parametrize(
    ("doc", "plugin", "module", "settings"),
    [
        ("crm-amocrm.md", "amocrm", "switchboard_amocrm", "AmoCrmSettings"),
        ("crm-odoo.md", "odoo", "switchboard_odoo", "OdooSettings"),
        ("crm-bitrix24.md", "bitrix24", "switchboard_bitrix24", "Bitrix24Settings"),
    ],
)
def test_the_crm_docs_examples_are_valid_configurations(
    doc: str, plugin: str, module: str, settings: str
) -> None:
    """Each connector's example configuration passes the checks ``serve`` makes (with the
    agents it maps, and its secrets from the environment)."""
    import tomllib

    from switchboard.config import config_from_dict

    text = (DOCS / doc).read_text(encoding="utf-8")
    (example,) = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    raw = tomllib.loads(example)
    raw.setdefault("switchboard", {})["agents"] = [{"name": "anna"}, {"name": "boris"}]
    env = {name: "x" * 24 for name in re.findall(r"\$\{(\w+)\}", example)}
    cls = getattr(importlib.import_module(module), settings)
    config = config_from_dict(raw, {plugin: cls}, env=env)
    assert isinstance(config.plugin_settings(plugin), cls)
    assert set(config.plugin_settings(plugin).users) == {"anna", "boris"}


def test_every_console_setting_is_in_its_doc() -> None:
    from switchboard_console import ConsoleSettings, Rate, TariffSettings

    text = (DOCS / "console.md").read_text()
    for cls in (ConsoleSettings, TariffSettings):
        for field in attrs.fields(cls):
            assert f"| `{field.name}` |" in text, f"docs/console.md lacks {field.name}"
    for field in attrs.fields(Rate):
        assert f"`{field.name}`" in text, f"docs/console.md lacks rates' {field.name}"


def test_the_ivr_doc_shows_the_example_flow_as_it_is() -> None:
    example = (DOCS.parent / "examples" / "ivr" / "sales-support.toml").read_text()
    body = example.split("\n", 3)[3]  # the flow, after its comment header
    assert body.strip() in (DOCS / "ivr.md").read_text()


def test_the_ivr_docs_voicemail_without_a_menu_is_a_valid_flow() -> None:
    import tomllib

    from switchboard_ivr.flow import build_flow

    text = (DOCS / "ivr.md").read_text(encoding="utf-8")
    section = text.split("## Voicemail and consent without a menu", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    flow = build_flow(tomllib.loads(block), agents=["alice", "bob"])
    assert flow.start == "everyone" and flow.consent is not None
    assert flow.nodes["everyone"].data["no_answer"] == "voicemail"


def test_the_crm_connector_example_notes_messages_and_answers_pops(
    switchboard_service: Any,
) -> None:
    """writing-a-plugin.md's Acme connector, run against a stand-in Acme CRM: a known
    person's message lands on the contact Acme named, and is noted once."""
    import sys
    import types

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from switchboard import hookimpl
    from switchboard.testing import crm_rig, serve_in_thread, until

    text = (DOCS / "writing-a-plugin.md").read_text(encoding="utf-8")
    section = text.split("## A CRM connector", 1)[1]
    [example] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    module = types.ModuleType("acme_crm")  # the example's own module, as if installed
    sys.modules["acme_crm"] = module
    exec(compile(example, "docs/writing-a-plugin.md (CRM connector)", "exec"), module.__dict__)

    notes: list[dict[str, Any]] = []

    async def people(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer acme-token-0123":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if request.query_params.get("q") == "email:olga@example.com":
            return JSONResponse({"name": "Olga Petrova", "owner": 22})
        return JSONResponse({"error": "no such person"}, status_code=404)

    async def add_note(request: Request) -> Response:
        notes.append(await request.json())
        return JSONResponse({"id": len(notes)}, status_code=201)

    acme = Starlette(
        routes=[
            Route("/people", people, methods=["GET"]),
            Route("/notes", add_note, methods=["POST"]),
        ]
    )

    class TestedAcme(module.AcmePlugin):  # type: ignore[misc, name-defined]
        @hookimpl
        def register_migrations(self, register: Any) -> None:
            """No revisions folder here: the test makes the table itself below."""

    try:
        with serve_in_thread(acme) as crm:
            settings = {
                "base_url": crm.url,
                "token": "acme-token-0123",
                "users": {"anna": 11, "boris": 22},
                "push": {"calls": False},
            }
            r = crm_rig(switchboard_service, TestedAcme(), settings, core={"resolve_timeout": 5})
            # In a write transaction: a plain BEGIN that reads the schema first fails at
            # once (SQLITE_BUSY_SNAPSHOT) if the running service commits in between.
            with r.sb.store.write() as conn:
                module.metadata.create_all(conn)
            got = r.receive(r.email, "olga@example.com", "Is my order ready?")
            assert got.contact.name == "Olga Petrova"  # resolve_contact, from Acme
            assert got.contact.owner_agent_id == r.agent("boris").id
            until(lambda: notes, what="the note in Acme")
            consumer = r.consumer("acme")
            until(lambda: consumer.lag() == 0)
            for event in r.sb.events.read_since(0, 100):  # delivered again: noted once
                r.service.call(consumer.handle(event))
            assert notes == [{"person": "email:olga@example.com", "text": "Is my order ready?"}]
    finally:
        del sys.modules["acme_crm"]


def test_the_speech_docs_examples_are_valid_configurations() -> None:
    """docs/speech.md's settings and rules pass the checks ``serve`` makes (the model
    folders stood in by empty ones)."""
    import tempfile
    import tomllib

    from switchboard.config import config_from_dict
    from switchboard_speech import SpeechSettings

    text = (DOCS / "speech.md").read_text(encoding="utf-8")
    backend, rules = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    with tempfile.TemporaryDirectory() as folder:
        raw = tomllib.loads(backend)
        raw["plugins"]["speech"]["models"] = {
            lang: str(Path(folder, lang)) for lang in raw["plugins"]["speech"]["models"]
        }
        for path in raw["plugins"]["speech"]["models"].values():
            Path(path).mkdir()
        raw["plugins"]["speech"]["backend"] = "pocketsphinx"  # vosk is not installed here
        raw["switchboard"] = {"agents": [{"name": "anna"}, {"name": "boris"}]}
        config = config_from_dict(raw, {"speech": SpeechSettings})
        assert config.plugin_settings("speech").agent_languages == {"boris": "en"}
    raw = tomllib.loads(rules)
    config = config_from_dict(raw, {"speech": SpeechSettings})
    names = [r.name for r in config.plugin_settings("speech").rules]
    assert names == ["greeting", "price named", "no promises"]


def test_the_deploy_docs_examples_are_valid_configurations() -> None:
    """docs/deploy.md: the runners' shared settings and a SIP node behind the proxy load as
    ``serve`` loads them."""
    import tomllib

    from switchboard.config import config_from_dict
    from switchboard_console import ConsoleSettings
    from switchboard_sip import SipSettings

    text = (DOCS / "deploy.md").read_text(encoding="utf-8")
    shared, sip = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    raw = tomllib.loads(shared.replace('"..."', '"' + "s" * 32 + '"'))
    config = config_from_dict(raw, {"console": ConsoleSettings})
    assert config.core.nodes.takeover_seconds == 5.0
    assert config.core.database_url.startswith("postgresql://")
    raw = tomllib.loads(sip.replace('"..."', '"secret"'))
    config = config_from_dict(raw, {"sip": SipSettings})
    settings = config.plugin_settings("sip")
    assert isinstance(settings, SipSettings)
    assert (settings.register, settings.trusted_networks) == (False, ["10.0.0.10/32"])
