"""``switchboard mailings status ID``: a mailing's progress on the command line."""

from __future__ import annotations

import asyncio

import click

from switchboard import ConfigError, Switchboard, SwitchboardError

COUNTS = ("sent", "failed", "bounced", "opened", "clicked", "replied", "unsubscribed")


@click.group("mailings")
def mailings_commands() -> None:
    """Mailings (created with POST /api/mailings)."""


@mailings_commands.command("status")
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
    from switchboard_mailings import PLUGIN

    async def look() -> None:
        try:
            sb = await Switchboard.open(config_path, upgrade=False)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            mailings = PLUGIN.mailings
            assert mailings is not None  # configure ran in open
            try:
                stats = await mailings.stats(mailing_id)
            except SwitchboardError as exc:
                raise click.ClickException(str(exc)) from None
            label = f"{stats['name']} ({stats['total']} recipients)"
            with click.progressbar(
                length=max(stats["total"], 1), label=label, show_pos=True
            ) as bar:
                shown = 0
                while True:
                    stats = await mailings.stats(mailing_id)
                    bar.update(stats["done"] - shown)
                    shown = stats["done"]
                    if stats["finished"] or not watch:
                        break
                    await asyncio.sleep(interval)
            line = ", ".join(f"{k} {stats[k]}" for k in ("total", "skipped", "queued", *COUNTS))
            click.echo(line)
        finally:
            await sb.close()

    asyncio.run(look())
