"""``switchboard email ...``: a mailing's progress on the command line."""

from __future__ import annotations

import asyncio
import time

import click

from switchboard import ConfigError, SwitchboardError, load_config
from switchboard.core import load_plugins
from switchboard.mailings import mailing_stats
from switchboard.store import Store

COUNTS = ("sent", "failed", "bounced", "opened", "clicked", "replied", "unsubscribed")


@click.group("email")
def email_commands() -> None:
    """Email: mailings."""


@email_commands.group("mailing")
def mailing_group() -> None:
    """Mailings (created with POST /api/mailings)."""


@mailing_group.command("status")
@click.argument("mailing_id", type=int)
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    required=True,
    envvar="SWITCHBOARD_CONFIG",
    help="TOML configuration file.",
)
@click.option("--watch/--once", default=True, show_default=True, help="Follow until done.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between looks.")
def status_command(mailing_id: int, config_path: str, watch: bool, interval: float) -> None:
    """Show MAILING_ID's progress with a bar, then its results."""

    async def config_of() -> object:
        plugins, classes = await load_plugins()
        return load_config(
            config_path, classes, plugin_errors={e.plugin: e.error for e in plugins.errors}
        )

    try:
        config = asyncio.run(config_of())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    store = Store(config.core.database_url)  # type: ignore[attr-defined]
    try:
        try:
            stats = mailing_stats(store, mailing_id)
        except SwitchboardError as exc:
            raise click.ClickException(str(exc)) from None
        label = f"{stats['name']} ({stats['total']} recipients)"
        with click.progressbar(length=max(stats["total"], 1), label=label, show_pos=True) as bar:
            shown = 0
            while True:
                stats = mailing_stats(store, mailing_id)
                bar.update(stats["done"] - shown)
                shown = stats["done"]
                if stats["finished"] or not watch:
                    break
                time.sleep(interval)
        click.echo(", ".join(f"{k} {stats[k]}" for k in ("total", "skipped", "queued", *COUNTS)))
    finally:
        store.close()
