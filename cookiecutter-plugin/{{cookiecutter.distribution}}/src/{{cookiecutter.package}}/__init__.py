"""{{ cookiecutter.description }}."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from switchboard import Channel, hookimpl
from {{ cookiecutter.package }} import tables
from {{ cookiecutter.package }}.channel import {{ cookiecutter.class_name }}Channel, Settings

__all__ = ["PLUGIN", "Settings", "{{ cookiecutter.class_name }}Channel", "{{ cookiecutter.class_name }}Plugin"]  # noqa: RUF022


class {{ cookiecutter.class_name }}Plugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``).
    Tests make their own instance: a fresh channel each."""

    plugin_name = "{{ cookiecutter.plugin_name }}"

    def __init__(self) -> None:
        self.channel = {{ cookiecutter.class_name }}Channel()

    @hookimpl
    def register_settings(self, register: Callable[[type[Any]], None]) -> None:
        register(Settings)

    @hookimpl
    def register_channels(self, register: Callable[[Channel], None]) -> None:
        register(self.channel)

    @hookimpl
    def register_migrations(self, register: Callable[..., None]) -> None:
        # the plugin's own tables: made and upgraded by `switchboard db upgrade` and at start
        register(files("{{ cookiecutter.package }}") / "migrations", tables.metadata)

    @hookimpl
    def register_routes(self, router: APIRouter) -> None:
        channel = self.channel

        @router.post("/{{ cookiecutter.plugin_name }}/inbound", include_in_schema=False)
        async def inbound(request: Request) -> dict[str, bool]:
            if not channel.secret_matches(request.headers.get("x-inbound-secret", "")):
                raise HTTPException(403, "wrong or missing X-Inbound-Secret")
            try:
                payload = await request.json()
                await channel.accept(payload)
            except (ValueError, KeyError, TypeError) as exc:
                raise HTTPException(422, f"not an inbound message: {exc}") from None
            return {"ok": True}


PLUGIN = {{ cookiecutter.class_name }}Plugin()
