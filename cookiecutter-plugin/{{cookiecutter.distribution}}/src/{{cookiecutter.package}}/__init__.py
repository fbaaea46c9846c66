"""{{ cookiecutter.description }}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from switchboard import hookimpl
from {{ cookiecutter.package }}.channel import {{ cookiecutter.class_name }}Channel, Settings

__all__ = ["CHANNEL", "Settings", "{{ cookiecutter.class_name }}Channel"]  # noqa: RUF022

CHANNEL = {{ cookiecutter.class_name }}Channel()


@hookimpl
def register_settings(register: Any) -> None:
    register(Settings)


@hookimpl
def register_channels(register: Any) -> None:
    register(CHANNEL)


@hookimpl
def register_routes(router: APIRouter) -> None:
    @router.post("/{{ cookiecutter.plugin_name }}/inbound", include_in_schema=False)
    async def inbound(request: Request) -> dict[str, bool]:
        if not CHANNEL.secret_matches(request.headers.get("x-inbound-secret", "")):
            raise HTTPException(403, "wrong or missing X-Inbound-Secret")
        try:
            payload = await request.json()
            await CHANNEL.accept(payload)
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(422, f"not an inbound message: {exc}") from None
        return {"ok": True}
