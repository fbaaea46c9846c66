"""Switchboard's agent console: the pages agents and sales managers use every day.

Served by the runner under ``/console`` through the ``register_routes`` hook: sign-in with
an agent's token, contacts and their timelines, click-to-call, messages and templated
emails, the screen pop, recordings, and the call analytics dashboard. See docs/console.md.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from switchboard import hookimpl
from switchboard_console import tables
from switchboard_console.settings import ConsoleSettings, Rate, TariffSettings
from switchboard_console.tariff import call_costs
from switchboard_console.web import Console, build_api_router, build_router

__all__ = ["Console", "ConsolePlugin", "ConsoleSettings", "Rate", "TariffSettings", "call_costs"]


class ConsolePlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "console"

    def __init__(self) -> None:
        self.console: Console | None = None

    @hookimpl
    def register_settings(self, register: Any) -> None:
        register(ConsoleSettings)

    @hookimpl
    def register_migrations(self, register: Any) -> None:
        register(files("switchboard_console") / "migrations", tables.metadata)

    @hookimpl
    def configure(self, switchboard: Any) -> None:
        settings = switchboard.config.plugin_settings(self.plugin_name)
        if not isinstance(settings, ConsoleSettings):
            settings = ConsoleSettings()
        self.console = Console(settings, switchboard) if settings.enabled else None

    @hookimpl
    def register_routes(self, router: Any) -> None:
        if self.console is not None:
            router.include_router(build_router(self.console))
            router.include_router(build_api_router(self.console))


PLUGIN = ConsolePlugin()
