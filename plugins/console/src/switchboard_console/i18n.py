"""English and Russian: gettext catalogs (``locale/LANG/LC_MESSAGES/messages.po``, read with
Babel at start) and Babel's number, money and date formats for the chosen language."""

from __future__ import annotations

import gettext
import io
from datetime import datetime
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent
from babel.support import Translations

from switchboard_console.settings import LANGUAGES


def catalog_path(lang: str) -> Any:
    return files("switchboard_console") / "locale" / lang / "LC_MESSAGES" / "messages.po"


def translations(lang: str) -> gettext.NullTranslations:
    """The language's messages (English is the source language: no catalog)."""
    if lang == "en":
        return gettext.NullTranslations()
    with catalog_path(lang).open("rb") as fp:
        catalog = read_po(fp, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def choose(accept_language: str | None, setting: str = "auto", override: str | None = None) -> str:
    """The page's language: the user's pick (``override``), else the configured one, else
    the browser's preference (``Accept-Language``), else English."""
    if override in LANGUAGES:
        return override
    if setting in LANGUAGES:
        return setting
    preferred = []
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag and q > 0:
            preferred.append((q, tag.strip().replace("-", "_")))
    ordered = [tag for _, tag in sorted(preferred, key=lambda p: -p[0])]
    found = negotiate_locale(ordered, list(LANGUAGES), sep="_")
    if found is None:  # "ru_RU" against "ru": compare the language parts
        found = next((t.split("_")[0] for t in ordered if t.split("_")[0] in LANGUAGES), None)
    return found or "en"


class Formats:
    """Numbers, money, shares and times as the language writes them."""

    def __init__(self, lang: str, timezone: str = "UTC") -> None:
        self.locale = Locale.parse(lang)
        self.timezone = ZoneInfo(timezone)

    def number(self, value: float | None, digits: int = 0) -> str:
        if value is None:
            return "—"
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def percent(self, value: float | None) -> str:
        return "—" if value is None else format_percent(value, "#,##0.#%", locale=self.locale)

    def money(self, value: float, currency: str) -> str:
        return format_currency(value, currency, locale=self.locale)

    def when(self, value: datetime | str | None) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return format_datetime(value, "short", tzinfo=self.timezone, locale=self.locale)
