"""``switchboard`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from switchboard import __version__
from switchboard.config import ConfigError, load_config
from switchboard.core import Switchboard, load_plugins
from switchboard.store import Store

CONFIG_HELP = "TOML configuration file (see docs/config.md)."


F = TypeVar("F", bound=Callable[..., Any])


def _config_option(required: bool = False) -> Callable[[F], F]:
    return click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=False),
        required=required,
        envvar="SWITCHBOARD_CONFIG",
        help=CONFIG_HELP,
    )


def _fail(message: str, code: int = 2) -> None:
    click.echo(message, err=True)
    sys.exit(code)


@click.group()
@click.version_option(__version__, prog_name="switchboard")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_level: str) -> None:
    """Switchboard: telephony, email and messengers on one CRM timeline."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json: bool) -> None:
    """List installed plugins: version, hooks, channels and load errors."""

    async def collect() -> dict[str, Any]:
        plugins, _ = await load_plugins()
        channels: dict[str, list[str]] = {}
        for plugin, args in await plugins.collect("register_channels"):
            channels.setdefault(plugin, []).append(getattr(args[0], "name", repr(args[0])))
        return {
            "plugins": [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "hooks": list(p.hooks),
                    "channels": channels.get(p.name, []),
                }
                for p in plugins.info()
            ],
            "errors": [
                {"plugin": e.plugin, "stage": e.stage, "error": e.error}
                for e in [*plugins.errors, *plugins.hook_errors]
            ],
        }

    data = asyncio.run(collect())
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["plugins"]:
        click.echo("No plugins installed.")
    for p in data["plugins"]:
        click.echo(f"{p['name']}  ({p['distribution']} {p['version']})")
        click.echo(f"  hooks:    {', '.join(p['hooks']) or '-'}")
        click.echo(f"  channels: {', '.join(p['channels']) or '-'}")
    for e in data["errors"]:
        click.echo(f"ERROR {e['plugin']} ({e['stage']}): {e['error']}", err=True)


@main.command("check")
@_config_option(required=True)
def check_cmd(config_path: str) -> None:
    """Check a configuration file the way start-up does."""

    async def check() -> None:
        plugins, classes = await load_plugins()
        errors = {e.plugin: e.error for e in plugins.errors}
        load_config(config_path, classes, plugin_errors=errors)

    try:
        asyncio.run(check())
    except ConfigError as exc:
        _fail(str(exc))
    click.echo(f"{config_path}: OK")


@main.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
@_config_option()
@click.option("--revision", default="head", show_default=True)
def db_upgrade(config_path: str | None, revision: str) -> None:
    """Apply the schema migrations to the configured database."""
    try:
        config = load_config(config_path) if config_path else load_config(None)
    except ConfigError as exc:
        _fail(str(exc))
    store = Store(config.core.database_url)
    try:
        store.upgrade(revision)
        click.echo(f"{store!r}: at revision {store.current_revision()}")
    finally:
        store.close()


@main.command("serve")
@_config_option()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--channels", default=None, help="Comma-separated channels to run (default all).")
def serve_cmd(config_path: str | None, host: str, port: int, channels: str | None) -> None:
    """Run the service: channels, outbox worker and HTTP API."""
    import uvicorn

    from switchboard.app import create_app

    path = Path(config_path) if config_path else None
    # Check before binding the port, so a bad config is one clear message.
    try:
        asyncio.run(_check_only(path))
    except ConfigError as exc:
        _fail(str(exc))
    names = [c.strip() for c in channels.split(",") if c.strip()] if channels else None
    uvicorn.run(create_app(path, names), host=host, port=port, log_config=None)


async def _check_only(path: Path | None) -> None:
    sb = await Switchboard.open(path)
    await sb.close()
