"""``[plugins.console]``: the console's settings (see docs/console.md)."""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from switchboard import CoreSettings

LANGUAGES = ("en", "ru")
PREFIX = re.compile(r"^\+[0-9]{1,15}$")


@attrs.define
class Rate:
    """One line of the tariff: calls to numbers starting with ``prefix`` cost ``price`` per
    minute, and ``reference`` per minute at the reference tariff (the usual phone line)."""

    prefix: str
    price: float
    reference: float


@attrs.define
class TariffSettings:
    """``[plugins.console.tariff]``: what calls cost (the longest matching prefix wins)."""

    currency: str = "USD"
    reference_name: str = "PSTN"
    increment_seconds: int = 60  # billed per started increment
    bill_inbound: bool = False  # most trunks bill only the calls placed
    rates: list[Rate] = attrs.Factory(list)


@attrs.define
class ConsoleSettings:
    """``[plugins.console]``."""

    enabled: bool = True
    # signs the session cookies; unset: a random one per start (everyone signs in again)
    secret: str | None = attrs.field(default=None, repr=False)
    language: str = "auto"  # auto (the browser's), en or ru
    timezone: str = "UTC"  # the times shown on the pages (an IANA name: Europe/Moscow)
    session_hours: float = 12.0
    dashboard_days: int = 7  # the dashboard's default period, up to today
    # cookies only over HTTPS: unset, they are when the page came over HTTPS (directly, or
    # from a proxy whose X-Forwarded-Proto uvicorn trusts)
    secure_cookie: bool | None = None
    tariff: TariffSettings = attrs.Factory(TariffSettings)

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        if self.secret is not None and len(self.secret) < 16:
            problems.append("secret: at least 16 characters")
        if self.language not in ("auto", *LANGUAGES):
            problems.append(f"language: auto, en or ru, got {self.language!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(
                f"timezone: an IANA time zone such as Europe/Moscow, got {self.timezone!r}"
            )
        if self.session_hours <= 0:
            problems.append("session_hours: must be positive")
        if self.dashboard_days < 1:
            problems.append("dashboard_days: at least 1")
        tariff = self.tariff
        if tariff.increment_seconds < 1:
            problems.append("tariff.increment_seconds: at least 1")
        if not re.fullmatch(r"[A-Z]{3}", tariff.currency):
            problems.append(
                f"tariff.currency: an ISO 4217 code such as USD, got {tariff.currency!r}"
            )
        seen: set[str] = set()
        for i, rate in enumerate(tariff.rates):
            where = f"tariff.rates[{i}]"
            if not PREFIX.match(rate.prefix):
                problems.append(
                    f"{where}.prefix: '+' and digits (e.g. '+7495'), got {rate.prefix!r}"
                )
            if rate.prefix in seen:
                problems.append(f"{where}.prefix: {rate.prefix!r} is listed twice")
            seen.add(rate.prefix)
            if rate.price < 0 or rate.reference < 0:
                problems.append(f"{where}: prices cannot be negative")
        return problems
