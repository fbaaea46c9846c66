"""The assembled core: plugins, config, address book, store, inbox, outbox, calls, channels.

``await Switchboard.open(config_path)`` loads the plugins, checks the configuration against
their settings classes, opens and upgrades the store and syncs the configured agents.
``await sb.start_channels()`` starts the channels of configured plugins, each on its own:
one that fails to start is recorded as ``failing`` and the others run.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from switchboard.address import AddressBook
from switchboard.calls import CallLog
from switchboard.channels import Channel, ChannelContext
from switchboard.config import Config, load_config
from switchboard.inbox import Inbox
from switchboard.outbox import Outbox
from switchboard.plugins import Plugins
from switchboard.store import Store

log = logging.getLogger("switchboard")


class ChannelState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    FAILING = "failing"
    NOT_CONFIGURED = "not configured"


@attrs.define
class ChannelHandle:
    plugin: str
    channel: Channel
    state: ChannelState = ChannelState.STOPPED
    last_error: str | None = None


async def load_plugins(only: Iterable[str] | None = None) -> tuple[Plugins, dict[str, Any]]:
    """Load the installed plugins and collect their settings classes."""
    plugins = Plugins()
    plugins.load_entry_points(only)
    return plugins, await settings_classes(plugins)


async def settings_classes(plugins: Plugins) -> dict[str, Any]:
    classes: dict[str, Any] = dict.fromkeys(plugins.names)
    for plugin, args in await plugins.collect("register_settings"):
        if len(args) != 1 or not attrs.has(args[0]):
            plugins._hook_error(plugin, "register_settings", "register() takes one attrs class")
            continue
        classes[plugin] = args[0]
    return classes


class Switchboard:
    def __init__(self, config: Config, plugins: Plugins, store: Store) -> None:
        self.config = config
        self.plugins = plugins
        self.store = store
        self.addresses = AddressBook(config.core.default_region)
        self.inbox = Inbox(self)
        self.outbox = Outbox(self)
        self.calls = CallLog(self)
        self.channels: dict[str, ChannelHandle] = {}

    @classmethod
    async def open(
        cls,
        config: Config | str | Path | None = None,
        *,
        plugins: Plugins | None = None,
        upgrade: bool = True,
    ) -> Switchboard:
        """Load plugins (unless given), read the config, open the store, register channels."""
        if plugins is None:
            plugins, classes = await load_plugins()
        else:
            classes = await settings_classes(plugins)
        if not isinstance(config, Config):
            errors = {e.plugin: e.error for e in plugins.errors}
            config = load_config(config, classes, plugin_errors=errors)
        store = Store(config.core.database_url)
        if upgrade:
            store.upgrade()
        sb = cls(config, plugins, store)
        await sb._register_plugins_parts()
        store.sync_agents([a.to_agent() for a in config.core.agents])
        return sb

    async def _register_plugins_parts(self) -> None:
        for plugin, args in await self.plugins.collect("register_address_kinds"):
            try:
                self.addresses.register(*args)
            except (TypeError, ValueError) as exc:
                self.plugins._hook_error(plugin, "register_address_kinds", str(exc))
        for plugin, args in await self.plugins.collect("register_channels"):
            channel = args[0] if len(args) == 1 else None
            if not isinstance(channel, Channel):
                self.plugins._hook_error(
                    plugin,
                    "register_channels",
                    f"register() takes one Channel object, got {args!r}",
                )
                continue
            if channel.name in self.channels:
                other = self.channels[channel.name].plugin
                self.plugins._hook_error(
                    plugin,
                    "register_channels",
                    f"channel name {channel.name!r} is already taken by plugin {other!r}",
                )
                continue
            state = (
                ChannelState.NOT_CONFIGURED
                if plugin in self.config.unconfigured
                else ChannelState.STOPPED
            )
            self.channels[channel.name] = ChannelHandle(plugin, channel, state)

    @property
    def channel_objects(self) -> dict[str, Channel]:
        return {name: h.channel for name, h in self.channels.items()}

    def running_channels(self) -> list[str]:
        return [n for n, h in self.channels.items() if h.state == ChannelState.RUNNING]

    async def start_channels(self, names: Iterable[str] | None = None) -> None:
        wanted = set(names) if names is not None else None
        for name, handle in self.channels.items():
            if wanted is not None and name not in wanted:
                continue
            if handle.state in (ChannelState.NOT_CONFIGURED, ChannelState.RUNNING):
                continue
            await self.start_channel(name)

    async def start_channel(self, name: str) -> bool:
        handle = self.channels[name]
        handle.state = ChannelState.STARTING
        ctx = ChannelContext(self, name, handle.plugin, self.config.plugin_settings(handle.plugin))
        try:
            await handle.channel.start(ctx)
        except Exception as exc:
            handle.state = ChannelState.FAILING
            handle.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("channel %s (plugin %s) failed to start", name, handle.plugin)
            return False
        handle.state = ChannelState.RUNNING
        handle.last_error = None
        return True

    async def stop_channels(self) -> None:
        for name, handle in self.channels.items():
            if handle.state not in (ChannelState.RUNNING, ChannelState.FAILING):
                continue
            try:
                await handle.channel.stop()
            except Exception as exc:
                log.exception("channel %s failed to stop", name)
                handle.last_error = f"{type(exc).__name__}: {exc}"
            handle.state = ChannelState.STOPPED

    async def close(self) -> None:
        self.outbox.stop()
        await self.stop_channels()
        await self.inbox.close()
        self.store.close()
