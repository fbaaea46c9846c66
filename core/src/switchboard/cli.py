"""``switchboard`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from switchboard import __version__
from switchboard.config import ConfigError, load_config
from switchboard.core import Switchboard, load_plugins, plugin_schemas
from switchboard.runnerlock import RunnerLock, RunnerLocked
from switchboard.schema import PluginSchema, SchemaError
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


class PluginGroup(click.Group):
    """The ``switchboard`` group: plugins add subcommands through ``register_commands``
    (loaded only when a command is not a built-in one, or for ``--help``)."""

    _loaded = False

    def _load_plugins(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        import asyncio

        from switchboard.plugins import Plugins

        plugins = Plugins()
        plugins.load_entry_points()
        asyncio.run(plugins.hooks.register_commands(group=self))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load_plugins()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugins()
        return super().list_commands(ctx)


@click.group(cls=PluginGroup)
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
        for plugin, args in await plugins.hooks.register_channels():
            channels.setdefault(plugin, []).append(getattr(args[0], "name", repr(args[0])))
        return {
            "plugins": [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "hooks": list(p.hooks),
                    "channels": channels.get(p.name, []),
                    "docs": p.docs,
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
        if p["docs"]:
            click.echo(f"  docs:     {p['docs']}")
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
@click.option(
    "--revision",
    default="head",
    show_default=True,
    help="the core's; plugins' migrations run only when the core goes to its head",
)
def db_upgrade(config_path: str | None, revision: str) -> None:
    """Apply the core's and every installed plugin's migrations to the configured database."""
    try:
        config = load_config(config_path) if config_path else load_config(None)
    except ConfigError as exc:
        _fail(str(exc))
    store = Store(config.core.database_url)
    try:
        # the plugins' migrations build on the core's newest tables: only with the head
        schemas = asyncio.run(_schemas()) if revision == "head" else []
        store.upgrade(revision, plugins=schemas)
        click.echo(f"{store!r}: at revision {store.current_revision()}")
        for plugin, rev in store.plugin_revisions(schemas).items():
            click.echo(f"plugin {plugin!r}: at revision {rev}")
    except SchemaError as exc:
        _fail(str(exc))
    finally:
        store.close()


async def _schemas() -> list[PluginSchema]:
    plugins, _ = await load_plugins()
    return await plugin_schemas(plugins)


@main.group("contacts")
def contacts_group() -> None:
    """Import and export contacts."""


@contacts_group.command("import")
@_config_option()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="Write the rejected rows and why to this CSV file.",
)
def contacts_import(config_path: str | None, path: str, report_path: str | None) -> None:
    """Import contacts from a .csv or .vcf file (run it again: nothing is duplicated)."""
    from switchboard import contacts_io

    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    if path.lower().endswith((".vcf", ".vcard")):
        rows = list(contacts_io.read_vcards(text))
    else:
        import io

        rows = list(contacts_io.read_csv(io.StringIO(text, newline="")))

    async def run() -> contacts_io.ImportReport:
        sb = await _open_or_fail(config_path)
        try:
            with click.progressbar(length=len(rows), label="Importing", file=sys.stderr) as bar:
                report = await asyncio.to_thread(
                    contacts_io.import_rows, sb.store, sb.addresses, rows, progress=bar.update
                )
            for contact in report.new_contacts:
                await sb.plugins.hooks.contact_created(contact=contact)
            return report
        finally:
            await sb.close()

    report = asyncio.run(run())
    click.echo(
        f"{path}: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.rejected)} rejected"
    )
    for source, reason in report.rejected:
        click.echo(f"  rejected {source}: {reason}", err=True)
    if report_path:
        import csv

        with open(report_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "reason"])
            writer.writerows(report.rejected)
    if report.rejected:
        sys.exit(1)


@contacts_group.command("export")
@_config_option()
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "vcf"]), default="csv", show_default=True
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Default: stdout.")
def contacts_export(config_path: str | None, fmt: str, output: str | None) -> None:
    """Export every contact as CSV (the import format) or vCard."""
    from switchboard import contacts_io

    async def run() -> str:
        sb = await _open_or_fail(config_path)
        try:
            contacts = []
            offset = 0
            while True:
                page, _ = sb.store.search_contacts(None, None, limit=500, offset=offset)
                contacts += page
                offset += len(page)
                if len(page) < 500:
                    break
            names = {a.id: a.name for a in sb.store.list_agents() if a.id is not None}
            if fmt == "vcf":
                return contacts_io.export_vcards(contacts)
            return contacts_io.export_csv(contacts, names)
        finally:
            await sb.close()

    text = asyncio.run(run())
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


async def _open_or_fail(config_path: str | None) -> Switchboard:
    try:
        return await Switchboard.open(Path(config_path) if config_path else None)
    except ConfigError as exc:
        _fail(str(exc))
        raise


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
    names = [c.strip() for c in channels.split(",") if c.strip()] if channels else None
    # Check before binding the port, so a bad config is one clear message.
    try:
        timeout = asyncio.run(_check_only(path, names))
    except (ConfigError, SchemaError, ValueError, RunnerLocked) as exc:
        _fail(str(exc))
    # uvicorn shuts down cleanly on SIGTERM/SIGINT, then raises the signal again for the
    # handler that was there before it: ours makes that a plain exit with status 0 (what
    # process managers take for a clean stop), not 143 or a KeyboardInterrupt traceback.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    uvicorn.run(
        create_app(path, names),
        host=host,
        port=port,
        log_config=None,
        timeout_graceful_shutdown=max(1, math.ceil(timeout)),
    )


def _stopped(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _check_only(path: Path | None, channels: list[str] | None) -> float:
    sb = await Switchboard.open(path)
    try:
        sb._wanted(channels)  # unknown --channels names fail here
        probe = RunnerLock(sb.store.engine.url)  # a second runner on a SQLite file: say so
        probe.acquire()
        probe.release()
        return sb.config.core.http.shutdown_timeout
    finally:
        await sb.close()
