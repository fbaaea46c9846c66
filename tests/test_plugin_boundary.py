"""The plugin boundary: bundled plugins import only what the core publishes (the names in
``switchboard.__all__`` and the public modules: ``switchboard.web`` for routes,
``switchboard.views`` for reading the core's tables, ``switchboard.testing``,
``switchboard.conformance``, ``switchboard.crm`` for CRM connectors). Nothing reaches past
it (issue #16 paid off the console's and the email plugin's debts)."""

from __future__ import annotations

import ast
from pathlib import Path

import switchboard

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = {
    "switchboard",
    "switchboard.testing",
    "switchboard.conformance",
    "switchboard.web",
    "switchboard.views",
    "switchboard.outside",
    "switchboard.crm",
}


def reaches_past(sources: dict[str, str]) -> set[tuple[str, str, str]]:
    """``(file, module, name)`` of each import past the boundary in ``{file: source}``."""
    found = set()
    public = set(switchboard.__all__)
    for where, source in sources.items():
        for node in ast.walk(ast.parse(source)):
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
                    if f"{node.module}.{alias.name}" in PUBLIC_MODULES:  # a public module
                        continue
                    if node.module != "switchboard" and node.module in PUBLIC_MODULES:
                        continue
                    found.add((where, node.module, alias.name))
    return found


def test_bundled_plugins_import_only_what_the_core_publishes() -> None:
    sources = {
        str(path.relative_to(ROOT / "plugins")): path.read_text(encoding="utf-8")
        for path in sorted((ROOT / "plugins").glob("*/src/**/*.py"))
    }
    assert len(sources) > 30  # every plugin's modules were read
    found = reaches_past(sources)
    assert not found, f"imports past the plugin boundary (use switchboard's public names): {found}"


def test_the_walk_finds_what_reaches_past() -> None:
    source = (
        "import switchboard.store\n"
        "from switchboard import api, Switchboard, web\n"
        "from switchboard.auth import fingerprint\n"
        "from switchboard.web import Caller\n"
        "from switchboard.views import call_record\n"
    )
    assert reaches_past({"x.py": source}) == {
        ("x.py", "switchboard.store", "*"),
        ("x.py", "switchboard", "api"),
        ("x.py", "switchboard.auth", "fingerprint"),
    }
