"""The ``switchboard`` command, run as a user runs it (a subprocess), with a plugin
distribution found through its entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from switchboard.store import Store
from switchboard.testing import write_distribution

SWITCHBOARD = shutil.which("switchboard")

PLUGIN = """
from switchboard import hookimpl


class EchoChannel:
    name = "echo"
    address_kind = "phone"

    async def start(self, ctx):
        pass

    async def stop(self):
        pass

    async def send(self, message):
        raise NotImplementedError


@hookimpl
def register_channels(register):
    register(EchoChannel())


@hookimpl
def message_received(interaction):
    pass
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    site = write_distribution(
        tmp_path / "site",
        "switchboard-echo",
        {"sb_cli_echo": PLUGIN, "sb_cli_broken": "import not_installed_anywhere\n"},
        version="0.3.1",
        entry_points={"echo": "sb_cli_echo", "broken": "sb_cli_broken"},
        docs="https://docs.example.com/echo",
    )
    clean = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_PLUGINS"}
    return {**clean, "PYTHONPATH": str(site)}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    assert SWITCHBOARD, "the switchboard command is not installed (uv sync --all-packages)"
    return subprocess.run([SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=60)


def test_plugins_json_lists_plugins_channels_and_errors(env: dict[str, str]) -> None:
    result = run(env, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    [echo] = [p for p in data["plugins"] if p["name"] == "echo"]
    assert echo == {
        "name": "echo",
        "distribution": "switchboard-echo",
        "version": "0.3.1",
        "hooks": ["message_received", "register_channels"],
        "channels": ["echo"],
        "docs": "https://docs.example.com/echo",
    }
    [error] = data["errors"]
    assert error["plugin"] == "broken" and error["stage"] == "import"
    assert "No module named 'not_installed_anywhere'" in error["error"]


def test_plugins_text_output(env: dict[str, str]) -> None:
    result = run(env, "plugins")
    assert result.returncode == 0
    assert "echo  (switchboard-echo 0.3.1)" in result.stdout
    assert "channels: echo" in result.stdout
    assert "docs:     https://docs.example.com/echo" in result.stdout
    assert "ERROR broken (import): ModuleNotFoundError" in result.stderr


def test_check_accepts_a_good_config_and_names_each_problem(
    env: dict[str, str], tmp_path: Path
) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[switchboard]\ndefault_region = 'RU'\n")
    ok = run(env, "check", "--config", str(good))
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{good}: OK")

    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[switchboard]\ndefault_region = 7\n[plugins.broken]\nx = 1\n[plugins.echo]\nx = 1\n"
    )
    result = run(env, "check", "--config", str(bad))
    assert result.returncode == 2
    assert f"{bad}: 3 problem(s)" in result.stderr
    assert "[switchboard] default_region: expected a string, got an integer 7" in result.stderr
    assert "[plugins.broken]: the plugin failed to load: ModuleNotFoundError" in result.stderr
    assert "[plugins.echo]: this plugin takes no settings" in result.stderr


def test_db_upgrade_creates_the_schema(env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "sb.toml"
    cfg.write_text("[switchboard]\ndatabase_url = 'sqlite:///data/crm.db'\n")
    result = run(env, "db", "upgrade", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert f"at revision {Store.head_revision()}" in result.stdout
    # every installed plugin's own migrations too (the console has some)
    assert "plugin 'console': at revision console_0001" in result.stdout
    assert (tmp_path / "data" / "crm.db").exists()
