"""Bring the Russian catalog up to date with the templates' strings.

    uv run python plugins/console/scripts/catalog.py

New strings are added untranslated (fill in their ``msgstr``), strings no longer used are
dropped, translations are kept. The test ``test_every_template_string_has_a_russian_
translation`` fails until every string is translated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "switchboard_console"
PO = PACKAGE / "locale" / "ru" / "LC_MESSAGES" / "messages.po"


def main() -> int:
    template = Catalog(project="switchboard-console", charset="utf-8")
    for filename, lineno, message, _comments, context in extract_from_dir(
        str(PACKAGE / "templates"),
        method_map=[("**.html", "jinja2.ext:babel_extract")],
        options_map={"**.html": {"extensions": "jinja2.ext.i18n"}},
    ):
        template.add(message, locations=[(filename, lineno)], context=context)
    with PO.open("rb") as fp:
        catalog = read_po(fp, locale="ru")
    catalog.update(template, no_fuzzy_matching=True)
    catalog.obsolete.clear()
    catalog.msgid_bugs_address = "the project's issue tracker"
    catalog.last_translator = catalog.language_team = "Switchboard developers"
    with PO.open("wb") as fp:
        write_po(fp, catalog, width=100, omit_header=False)
    todo = [m.id for m in catalog if m.id and not m.string]
    for message in todo:
        print(f"untranslated: {message!r}")
    print(f"{PO}: {len(catalog)} strings, {len(todo)} to translate")
    return 1 if todo else 0


if __name__ == "__main__":
    sys.exit(main())
