"""The plugin template: generate a plugin, install it with the core in a fresh
environment, run its own tests there, and find it through its entry point."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "cookiecutter-plugin"


def generate(out: Path, **context: str) -> Path:
    return Path(
        cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(out), extra_context=context)
    )


def test_generated_file_list(tmp_path: Path) -> None:
    project = generate(tmp_path, plugin_name="acme-sms", address_kind="phone")
    assert project.name == "switchboard-acme-sms"
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "src/switchboard_acme_sms/__init__.py",
        "src/switchboard_acme_sms/channel.py",
        "src/switchboard_acme_sms/migrations/p0001_gateway_reply.py",
        "src/switchboard_acme_sms/py.typed",
        "src/switchboard_acme_sms/tables.py",
        "tests/conftest.py",
        "tests/test_switchboard_acme_sms.py",
    ]
    pyproject = (project / "pyproject.toml").read_text()
    assert (
        '[project.entry-points.switchboard]\n"acme-sms" = "switchboard_acme_sms:PLUGIN"'
        in pyproject
    )
    channel = (project / "src/switchboard_acme_sms/channel.py").read_text()
    assert "class AcmeSmsChannel:" in channel
    assert 'name = "acme-sms"' in channel and 'address_kind = "phone"' in channel
    assert "${ACME_SMS_TOKEN}" in (project / "README.md").read_text()


def test_bad_plugin_name_is_refused(tmp_path: Path) -> None:
    from cookiecutter.exceptions import FailedHookException

    with pytest.raises(FailedHookException):
        generate(tmp_path, plugin_name="Bad Name!")


def find_uv() -> list[str] | None:
    """uv by the repo's one lookup, scripts/ensure-uv (the Makefile uses it too)."""
    found = subprocess.run(
        [str(ROOT / "scripts" / "ensure-uv"), "--find"], capture_output=True, text=True
    )
    return shlex.split(found.stdout) if found.returncode == 0 else None


def test_generated_plugin_installs_passes_its_tests_and_is_found(tmp_path: Path) -> None:
    uv = find_uv()
    if uv is None:
        pytest.fail("uv is needed: scripts/ensure-uv installs it")
    project = generate(tmp_path, plugin_name="acme-mail", address_kind="email")
    # Defects only (unused and undefined names, likely bugs, long lines): formatting and
    # import order depend on the plugin's name and the author's own settings.
    lint = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--no-cache",
            "--select",
            "E,F,W,B,UP",
            "--line-length",
            "110",
            str(project),
        ],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout
    venv = tmp_path / "venv"
    subprocess.run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [
            *uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            str(ROOT / "core"),
            f"{project}[test]",
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    tests = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    listed = subprocess.run(
        [str(venv / "bin" / "switchboard"), "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["acme-mail"]["distribution"] == "switchboard-acme-mail"
    assert plugins["acme-mail"]["channels"] == ["acme-mail"]
