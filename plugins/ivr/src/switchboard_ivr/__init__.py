"""Switchboard's IVR: menus defined as config that route callers to the right employee.

See docs/ivr.md. The plugin answers ``route_call`` with a handler that drives the call
through the voice channel's ``CallSession``, so it works with any voice channel.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import click

from switchboard import CallRecord, Contact, CoreSettings, Switchboard, hookimpl
from switchboard_ivr.engine import Engine
from switchboard_ivr.flow import Flow, FlowError, draw, load_flow
from switchboard_ivr.tts import Speaker

__all__ = ["PLUGIN", "Flow", "FlowError", "IvrPlugin", "IvrSettings", "load_flow"]


@attrs.define
class IvrSettings:
    """``[plugins.ivr]``."""

    flow: str
    tts_cache_dir: str = "ivr-prompts"
    enabled: bool = True
    _flow: Flow | None = attrs.field(default=None, init=False, repr=False)

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        """Read and check the flow against the configured agents; render text prompts.
        Called when the config is loaded: a bad flow stops ``switchboard serve``."""
        base = base_dir or Path.cwd()
        if not Path(self.flow).is_absolute():
            self.flow = str((base / self.flow).resolve())
        if not Path(self.tts_cache_dir).is_absolute():
            self.tts_cache_dir = str((base / self.tts_cache_dir).resolve())
        try:
            self._flow = load_flow(
                self.flow, agents=[a.name for a in core.agents], render=Speaker(self.tts_cache_dir)
            )
        except FlowError as exc:
            return [f"flow {exc.source}: {p}" for p in exc.problems]
        return []

    @property
    def loaded(self) -> Flow:
        if self._flow is None:
            raise RuntimeError("the IVR flow was not loaded (check_config was not called)")
        return self._flow


class IvrPlugin:
    """The plugin's hooks; the entry point registers one instance of it (``PLUGIN``)."""

    plugin_name = "ivr"

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self.engine: Engine | None = None
        self.switchboard: Switchboard | None = None
        self.now = now  # the clock of business hours (tests fix it)

    @hookimpl
    def register_settings(self, register: Any) -> None:
        register(IvrSettings)

    @hookimpl
    async def configure(self, switchboard: Switchboard) -> None:
        settings = switchboard.config.plugin_settings(self.plugin_name)
        if not isinstance(settings, IvrSettings) or not settings.enabled:
            self.engine = None
            return
        self.switchboard = switchboard
        agents = await switchboard.agents()  # they come from the config: read once
        self.engine = Engine(
            settings.loaded,
            Speaker(settings.tts_cache_dir),
            agents=lambda: agents,
            idle_since=self._idle_since,
            **({"now": self.now} if self.now is not None else {}),
        )

    async def _idle_since(self, agent_id: int) -> datetime | None:
        assert self.switchboard is not None  # configured before any call is routed
        calls = await self.switchboard.find_calls(agent_id=agent_id, limit=1)
        return calls[0].ended_at if calls else None

    @hookimpl
    def route_call(self, call: CallRecord, contact: Contact) -> Any:
        if self.engine is None or call.direction.value != "inbound":
            return None
        return self.engine.run

    @hookimpl
    def register_commands(self, group: click.Group) -> None:
        group.add_command(ivr_commands)


@click.group("ivr")
def ivr_commands() -> None:
    """IVR flows: check them, draw them."""


def _agents_from(config: str | None) -> list[str] | None:
    if config is None:
        return None
    import tomllib

    try:
        raw = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"cannot read {config}: {exc}") from None
    return [a.get("name", "") for a in raw.get("switchboard", {}).get("agents", [])]


@ivr_commands.command("check")
@click.argument("flow", type=click.Path(dir_okay=False))
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    help="The Switchboard config whose agents the flow may name (else agents are not checked).",
)
@click.option(
    "--tts-cache", default="ivr-prompts", show_default=True, help="Where spoken prompts go."
)
def check_command(flow: str, config: str | None, tts_cache: str) -> None:
    """Check FLOW: every problem with its key path; exit status 1 if there is one."""
    started = time.perf_counter()
    agents = _agents_from(config)
    try:
        loaded = load_flow(flow, agents=agents, render=Speaker(tts_cache))
    except FlowError as exc:
        for problem in exc.problems:
            click.echo(f"{exc.source}: {problem}", err=True)
        click.echo(f"{len(exc.problems)} problem(s)", err=True)
        sys.exit(1)
    took = time.perf_counter() - started
    note = "" if agents is not None else " (agents not checked: give --config)"
    click.echo(f"{flow}: OK, {len(loaded.nodes)} nodes, checked in {took * 1000:.0f} ms{note}")


@ivr_commands.command("diagram")
@click.argument("flow", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="flow.svg, .png..."
)
def diagram_command(flow: str, output: str) -> None:
    """Draw FLOW with Graphviz."""
    try:
        loaded = load_flow(flow)
        draw(loaded, Path(output))
    except FlowError as exc:
        raise click.ClickException(str(exc)) from None
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {output}")


PLUGIN = IvrPlugin()
