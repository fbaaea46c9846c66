from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from switchboard import ConfigError, Role, load_config


@attrs.define
class SipSettings:
    server: str
    password: str
    port: int = 5060
    register: bool = True


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchboard.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[switchboard]\ndefault_region = 'RU'\n"))
    assert cfg.core.default_region == "RU"
    assert cfg.core.database_url == f"sqlite:///{tmp_path / 'switchboard.db'}"
    assert cfg.core.recordings_dir == str(tmp_path / "recordings")
    assert cfg.core.outbox.max_attempts == 8


def test_plugin_settings_and_env_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [switchboard]
        database_url = "postgresql://postgres@127.0.0.1/crm"
        [[switchboard.agents]]
        name = "anna"
        extension = "101"
        role = "supervisor"
        [plugins.sip]
        server = "pbx.local"
        password = "${SIP_PASSWORD}"
        port = "${SIP_PORT:-5070}"
        register = "${SIP_REGISTER:-false}"
    """.replace("\n        ", "\n"),
    )
    cfg = load_config(path, {"sip": SipSettings}, env={"SIP_PASSWORD": "s3cret"})
    assert cfg.plugins["sip"] == SipSettings("pbx.local", "s3cret", 5070, False)
    assert cfg.core.agents[0].role is Role.SUPERVISOR
    assert cfg.core.database_url == "postgresql://postgres@127.0.0.1/crm"


def test_every_problem_is_reported_with_file_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        colour = "blue"
        [switchboard]
        default_region = "XX"
        databse_url = "sqlite:///x.db"
        [switchboard.outbox]
        max_attempts = "many"
        [[switchboard.agents]]
        extension = "101"
        [[switchboard.agents]]
        name = "bob"
        role = "boss"
        [plugins.sip]
        port = true
        password = "${NOT_SET_ANYWHERE}"
        [plugins.smtp]
        host = "x"
    """.replace("\n        ", "\n"),
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {"sip": SipSettings}, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    expected = [
        "unknown top-level table(s) colour; expected [switchboard] and [plugins.NAME]",
        "plugins.sip.password: environment variable NOT_SET_ANYWHERE is not set",
        "[switchboard] outbox.max_attempts: expected an integer, got a string 'many'",
        "[switchboard] agents[0].name: required, but missing",
        "[switchboard] agents[1].role: expected one of 'admin', 'supervisor', 'agent', got 'boss'",
        "[switchboard]: unknown key(s) databse_url; expected one of: database_url, "
        "default_region, recordings_dir, resolve_timeout, agents, outbox, tokens, webhooks, "
        "templates, http, events, nodes, callbacks, analytics",
        "[plugins.sip] server: required, but missing",
        "[plugins.sip] port: expected an integer, got a boolean True",
        "[plugins.smtp]: no plugin named 'smtp' is loaded (loaded: sip)",
    ]
    for line in expected:
        assert line in info.value.problems, (line, info.value.problems)
    assert len(info.value.problems) == len(expected)


def test_bad_region_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"default_region: expected an ISO 3166 region"):
        load_config(write(tmp_path, "[switchboard]\ndefault_region = 'XX'\n"))


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"(?s)switchboard.toml: .*not valid TOML.*line 1"):
        load_config(write(tmp_path, "[switchboard\n"))
    with pytest.raises(ConfigError, match="the file does not exist"):
        load_config(tmp_path / "nope.toml")


def test_failed_plugin_section_says_why(tmp_path: Path) -> None:
    path = write(tmp_path, "[plugins.sip]\nserver = 'x'\n")
    with pytest.raises(
        ConfigError,
        match=r"\[plugins.sip\]: the plugin failed to load: "
        r"ModuleNotFoundError",
    ):
        load_config(path, {}, plugin_errors={"sip": "ModuleNotFoundError: pyVoIP"})


def test_unconfigured_plugin_with_required_settings_is_not_an_error(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), {"sip": SipSettings, "other": None})
    assert cfg.unconfigured == ("sip",)
    assert "sip" not in cfg.plugins


def test_duplicate_agents(tmp_path: Path) -> None:
    path = write(tmp_path, "[[switchboard.agents]]\nname='a'\n[[switchboard.agents]]\nname='a'\n")
    with pytest.raises(ConfigError, match="agent name 'a' appears more than once"):
        load_config(path)
