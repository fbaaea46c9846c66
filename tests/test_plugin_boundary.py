"""The plugin boundary: bundled plugins import only what the core publishes (the names in
``switchboard.__all__``, ``switchboard.testing``, ``switchboard.conformance``).

What still reaches past it is listed below, exactly: the list may only shrink (issue #16:
the console's pages call the HTTP API's handlers and read the store; the email plugin's
mailing command reads mailings that still live in the core). A new plugin (WhatsApp,
VK...) adds nothing to it."""

from __future__ import annotations

import ast
from pathlib import Path

import switchboard

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = {"switchboard", "switchboard.testing", "switchboard.conformance"}

KNOWN_DEBT = {
    ("console/src/switchboard_console/tariff.py", "switchboard.store", "Store"),
    ("console/src/switchboard_console/tariff.py", "switchboard.store", "call_t"),
    ("console/src/switchboard_console/web.py", "switchboard", "api"),
    ("console/src/switchboard_console/web.py", "switchboard.auth", "fingerprint"),
    ("email/src/switchboard_email/commands.py", "switchboard.core", "load_plugins"),
    ("email/src/switchboard_email/commands.py", "switchboard.mailings", "mailing_stats"),
    ("email/src/switchboard_email/commands.py", "switchboard.store", "Store"),
}


def reaches_past() -> set[tuple[str, str, str]]:
    found = set()
    public = set(switchboard.__all__)
    for path in sorted((ROOT / "plugins").glob("*/src/**/*.py")):
        where = str(path.relative_to(ROOT / "plugins"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top == "switchboard" and alias.name not in PUBLIC_MODULES:
                        found.add((where, alias.name, "*"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] != "switchboard":
                    continue
                for alias in node.names:
                    if node.module == "switchboard" and alias.name in public:
                        continue
                    if node.module != "switchboard" and node.module in PUBLIC_MODULES:
                        continue
                    found.add((where, node.module, alias.name))
    return found


def test_bundled_plugins_import_only_what_the_core_publishes() -> None:
    found = reaches_past()
    new = found - KNOWN_DEBT
    assert not new, f"imports past the plugin boundary (use switchboard's public names): {new}"
    paid = KNOWN_DEBT - found
    assert not paid, f"no longer imported: take these off KNOWN_DEBT: {paid}"
