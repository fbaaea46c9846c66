"""``switchboard speech backfill --since DATE``: analyse older recordings, with a progress
bar; ``switchboard speech status``: the jobs by state."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import click

from switchboard import ConfigError, Switchboard
from switchboard_speech.jobs import FINAL

CONFIG = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    required=True,
    envvar="SWITCHBOARD_CONFIG",
    help="TOML configuration file.",
)


def _day(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        day = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a date (2026-11-01) or a time") from None
    return day if day.tzinfo else day.replace(tzinfo=UTC)


async def _open(config_path: str) -> Switchboard:
    try:
        return await Switchboard.open(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("speech")
def speech_commands() -> None:
    """Speech analytics (docs/speech.md)."""


@speech_commands.command("backfill")
@CONFIG
@click.option("--since", required=True, help="Recordings of calls from this date (UTC).")
@click.option("--until", default=None, help="... up to this date (UTC, not included).")
@click.option("--again", is_flag=True, help="Analyse calls analysed before anew.")
@click.option(
    "--queue-only", is_flag=True, help="Only queue the jobs: the running service does them."
)
def backfill(
    config_path: str, since: str, until: str | None, again: bool, queue_only: bool
) -> None:
    """Queue a job for every recording of the period and do them here, with a progress
    bar (a running service shares the work: jobs are claimed with leases)."""
    from switchboard_speech import PLUGIN

    start, end = _day(since), _day(until)
    assert start is not None

    async def run() -> None:
        sb = await _open(config_path)
        try:
            speech = PLUGIN.speech
            if speech is None or not speech.settings.enabled:
                raise click.ClickException("speech analytics is off ([plugins.speech] enabled)")
            calls = await speech.recorded_calls(start, end)
            queued = await speech.queue(calls, again=again)
            click.echo(f"{len(calls)} recordings, {queued} queued")
            if queue_only or not calls:
                return
            work = asyncio.create_task(speech.run(until_idle=True))
            with click.progressbar(length=len(calls), label="analysing", show_pos=True) as bar:
                shown = 0
                while True:
                    counts = await speech.job_counts(calls)
                    ended = sum(counts.get(s, 0) for s in FINAL)
                    bar.update(ended - shown)
                    shown = ended
                    if work.done():
                        break
                    await asyncio.sleep(0.5)
            await work
            counts = await speech.job_counts(calls)
            click.echo(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        finally:
            with contextlib.suppress(Exception):
                await sb.close()

    asyncio.run(run())


@speech_commands.command("status")
@CONFIG
def status(config_path: str) -> None:
    """How many jobs are in each state."""
    from switchboard_speech import PLUGIN

    async def run() -> None:
        sb = await _open(config_path)
        try:
            assert PLUGIN.speech is not None
            counts = await PLUGIN.speech.job_counts()
            click.echo(", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no jobs")
        finally:
            await sb.close()

    asyncio.run(run())
