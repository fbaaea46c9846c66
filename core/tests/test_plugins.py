"""Plugin loading through real entry points (a dist-info folder on sys.path) and hook calls."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from switchboard import hookimpl
from switchboard.plugins import HOOK_NAMES, Plugins
from switchboard.testing import registered, write_distribution


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``site(dist, {ep_name: source})`` installs a distribution with those plugins."""
    root = tmp_path / "site"
    suffix = uuid.uuid4().hex[:8]
    installed: list[str] = []

    def install(dist: str, plugins: dict[str, str]) -> None:
        # Load only what the test installs, not the plugins of this environment.
        installed.extend(plugins)
        monkeypatch.setenv("SWITCHBOARD_PLUGINS", ",".join(installed))
        modules = {f"sbtest_{n.replace('-', '_')}_{suffix}": src for n, src in plugins.items()}
        eps = dict(zip(plugins, modules, strict=True))
        write_distribution(root, dist, modules, version="1.2.3", entry_points=eps)
        monkeypatch.syspath_prepend(str(root))  # also invalidates importlib's caches

    return install


GOOD = """
from switchboard import hookimpl

@hookimpl
def message_received(interaction, contact):
    pass
"""


def test_entry_points_load_and_report_their_distribution(site) -> None:  # type: ignore[no-untyped-def]
    site("switchboard-good", {"good": GOOD})
    plugins = Plugins()
    plugins.load_entry_points()
    info = {p.name: p for p in plugins.info()}
    assert info["good"].distribution == "switchboard-good"
    assert info["good"].version == "1.2.3"
    assert info["good"].hooks == ("message_received",)
    assert plugins.errors == []


def test_broken_import_is_recorded_and_others_load(site, caplog) -> None:  # type: ignore[no-untyped-def]
    site(
        "switchboard-mixed",
        {
            "broken": "import no_such_module_anywhere\n",
            "crashes": "raise RuntimeError('boom at import')\n",
            "good": GOOD,
        },
    )
    plugins = Plugins()
    with caplog.at_level(logging.ERROR):
        plugins.load_entry_points()
    assert plugins.names == ["good"]
    errors = {e.plugin: e for e in plugins.errors}
    assert errors["broken"].stage == "import"
    assert "ModuleNotFoundError" in errors["broken"].error
    assert "no_such_module_anywhere" in errors["broken"].error
    assert errors["crashes"].error == "RuntimeError: boom at import"
    assert "boom at import" in caplog.text


def test_misspelled_hook_is_refused_with_a_hint(site) -> None:  # type: ignore[no-untyped-def]
    site(
        "switchboard-typo",
        {
            "typo": """
        from switchboard import hookimpl

        @hookimpl
        def mesage_received(interaction):
            pass
        """,
            "good": GOOD,
        },
    )
    plugins = Plugins()
    plugins.load_entry_points()
    assert plugins.names == ["good"]
    [err] = plugins.errors
    assert err.plugin == "typo"
    assert err.error == "unknown hook 'mesage_received' (did you mean 'message_received'?)"


def test_hook_argument_not_in_spec_is_refused(site) -> None:  # type: ignore[no-untyped-def]
    site(
        "switchboard-args",
        {
            "args": """
        from switchboard import hookimpl

        @hookimpl
        def message_received(interaction, sender):
            pass
        """
        },
    )
    plugins = Plugins()
    plugins.load_entry_points()
    assert plugins.names == []
    assert "sender" in plugins.errors[0].error


def test_env_var_loads_only_named_plugins(site, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    site("switchboard-two", {"one": GOOD, "two": GOOD})
    monkeypatch.setenv("SWITCHBOARD_PLUGINS", "two,three")
    plugins = Plugins()
    plugins.load_entry_points()
    assert plugins.names == ["two"]
    assert [(e.plugin, e.stage) for e in plugins.errors] == [("three", "load")]
    monkeypatch.setenv("SWITCHBOARD_PLUGINS", "")
    none = Plugins()
    none.load_entry_points()
    assert none.names == []


def test_loading_is_idempotent(site) -> None:  # type: ignore[no-untyped-def]
    site("switchboard-good", {"good": GOOD})
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.load_entry_points()
    assert plugins.names == ["good"]


async def test_a_raising_hook_is_logged_and_the_others_run(caplog) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    class Raises:
        @hookimpl
        def contact_created(self, contact):  # type: ignore[no-untyped-def]
            raise ValueError("bad plugin")

    class Sync:
        @hookimpl
        def contact_created(self, contact):  # type: ignore[no-untyped-def]
            calls.append(f"sync:{contact}")
            return "s"

    class Async:
        @hookimpl
        async def contact_created(self):  # type: ignore[no-untyped-def]
            calls.append("async")
            return "a"

    plugins = Plugins()
    with (
        registered(plugins, Sync(), "sync"),
        registered(plugins, Raises(), "raises"),
        registered(plugins, Async(), "async"),
        caplog.at_level(logging.ERROR),
    ):
        results = await plugins.call("contact_created", contact="C")
    assert sorted(results) == ["a", "s"]
    assert sorted(calls) == ["async", "sync:C"]
    [err] = plugins.hook_errors
    assert (err.plugin, err.stage, err.error) == (
        "raises",
        "hook contact_created",
        "ValueError: bad plugin",
    )
    assert "plugin 'raises' (hook contact_created): ValueError: bad plugin" in caplog.text
    assert plugins.names == []  # unregistered after the with block


async def test_call_first_awaits_before_deciding() -> None:
    class Declines:
        @hookimpl(tryfirst=True)
        async def resolve_contact(self, address):  # type: ignore[no-untyped-def]
            return None

    class Answers:
        @hookimpl
        async def resolve_contact(self, address):  # type: ignore[no-untyped-def]
            return f"contact for {address}"

    plugins = Plugins()
    with registered(plugins, Answers(), "answers"), registered(plugins, Declines(), "declines"):
        assert await plugins.call_first("resolve_contact", address="x") == "contact for x"


async def test_collect_records_which_plugin_registered_what() -> None:
    class A:
        @hookimpl
        def register_channels(self, register):  # type: ignore[no-untyped-def]
            register("a1")
            register("a2")

    plugins = Plugins()
    with registered(plugins, A(), "a"):
        assert await plugins.collect("register_channels") == [("a", ("a1",)), ("a", ("a2",))]


def test_hook_names_cover_the_four_families() -> None:
    assert set(HOOK_NAMES) == {
        "register_channels",
        "message_received",
        "message_sent",
        "message_failed",
        "refuse_outbound",
        "register_address_kinds",
        "resolve_contact",
        "contact_created",
        "call_ringing",
        "route_call",
        "call_answered",
        "call_ended",
        "recording_saved",
        "register_settings",
        "register_migrations",
        "register_routes",
        "register_commands",
        "configure",
        "startup",
        "shutdown",
    }


def test_every_hook_has_a_typed_call_with_the_same_arguments() -> None:
    """The core calls hooks only through ``plugins.hooks`` (mypy checks those calls); each
    method takes the hookspec's arguments by name (register_* hooks: none, it collects)."""
    import inspect

    from switchboard import hookspecs
    from switchboard.hooks import Hooks

    for name in HOOK_NAMES:
        spec = list(inspect.signature(getattr(hookspecs, name)).parameters)
        method = getattr(Hooks, name, None)
        assert method is not None, f"Hooks has no method for {name}"
        params = list(inspect.signature(method).parameters)[1:]
        assert params == ([] if spec == ["register"] else spec), name
    extra = {n for n in vars(Hooks) if not n.startswith("_")} - set(HOOK_NAMES)
    assert extra == set()


async def test_hook_wrappers_are_refused_at_registration() -> None:
    class Wrapping:
        @hookimpl(wrapper=True)
        def call_ringing(self, call, contact):  # type: ignore[no-untyped-def]
            return (yield)

    class OldStyle:
        @hookimpl(hookwrapper=True)
        def message_received(self, interaction):  # type: ignore[no-untyped-def]
            yield

    plugins = Plugins()
    assert not plugins.register(Wrapping(), "wrapping")
    assert not plugins.register(OldStyle(), "old-style")
    assert plugins.names == []
    messages = [str(e) for e in plugins.errors]
    assert any("'call_ringing' is a wrapper" in m and "wrapping" in m for m in messages)
    assert any("'message_received' is a wrapper" in m for m in messages)
