"""Plugin loading and hook calling.

Each ``switchboard`` entry point is loaded on its own: one that fails to import, or that
implements a hook under a name no spec has, is recorded in :attr:`Plugins.errors` and left
out; the others load. Hooks are called one implementation at a time (newest registered
first, as pluggy orders them), so a plugin that raises is logged with its name and the
rest still run, and an implementation that returns an awaitable is awaited.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from typing import Any

import attrs
import pluggy

from switchboard import hookspecs
from switchboard.hooks import Hooks

log = logging.getLogger("switchboard.plugins")

ENTRY_POINT_GROUP = "switchboard"
PLUGINS_ENV = "SWITCHBOARD_PLUGINS"

hookimpl = pluggy.HookimplMarker("switchboard")
"""Decorator for hook implementations: ``@hookimpl def message_received(interaction): ...``"""

HOOK_NAMES: tuple[str, ...] = tuple(
    name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "switchboard_spec")
)


@attrs.frozen
class PluginError:
    """Something a plugin did wrong: at import, at registration or inside a hook."""

    plugin: str
    stage: str
    error: str
    detail: str = ""

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.stage}): {self.error}"


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    #: The distribution's ``Project-URL: Documentation`` (``[project.urls]`` in its
    #: pyproject.toml), shown when the plugin is installed but not configured.
    docs: str | None = None


@attrs.define
class _Source:
    distribution: str | None = None
    version: str | None = None
    docs: str | None = None


def _documentation_url(dist: Any) -> str | None:
    for entry in dist.metadata.get_all("Project-URL") or ():
        label, _, url = entry.partition(",")
        if label.strip().lower() == "documentation" and url.strip():
            return str(url.strip())
    return None


async def await_me_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable (a coroutine, a task, a future)."""
    if inspect.isawaitable(value):
        return await value
    return value


class Plugins:
    """A typed facade over a pluggy ``PluginManager`` for the project ``switchboard``."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("switchboard")
        self.pm.add_hookspecs(hookspecs)
        self.errors: list[PluginError] = []
        self.hook_errors: list[PluginError] = []
        self._sources: dict[str, _Source] = {}
        self._loaded_entry_points = False
        #: The hooks as typed methods: ``await plugins.hooks.call_ringing(call=..., ...)``.
        self.hooks = Hooks(self)

    # -- loading --------------------------------------------------------------------------

    def load_entry_points(self, only: Iterable[str] | None = None) -> None:
        """Load every installed ``switchboard`` entry point, each on its own (idempotent).

        ``only`` (or the ``SWITCHBOARD_PLUGINS`` environment variable, comma-separated)
        restricts loading to the named plugins; an empty value loads none.
        """
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        if only is None and PLUGINS_ENV in os.environ:
            only = [n.strip() for n in os.environ[PLUGINS_ENV].split(",") if n.strip()]
        wanted = None if only is None else set(only)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and ep.name not in wanted:
                continue
            dist = getattr(ep, "dist", None)
            source = (
                _Source(dist.name, dist.version, _documentation_url(dist)) if dist else _Source()
            )
            if ep.name in self._sources:
                self._error(
                    ep.name,
                    "load",
                    f"a plugin named {ep.name!r} is already loaded "
                    f"(from {self._sources[ep.name].distribution}); "
                    f"{source.distribution} left out",
                )
                continue
            try:
                module = ep.load()
            except BaseException as exc:  # a broken plugin must never take the host down
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._error(
                    ep.name, "import", f"{type(exc).__name__}: {exc}", traceback.format_exc()
                )
                continue
            self.register(module, ep.name, source)
        if wanted:
            missing = sorted(wanted - set(self._sources))
            for name in missing:
                if not any(e.plugin == name for e in self.errors):
                    self._error(
                        name, "load", f"named in {PLUGINS_ENV} but no such plugin is installed"
                    )

    def register(self, plugin: object, name: str, source: _Source | None = None) -> bool:
        """Register a plugin object (module or instance); False, with an error, if refused."""
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._error(name, "register", str(exc))
            return False
        wrappers = [
            caller.name
            for caller in self.pm.get_hookcallers(plugin) or ()
            if any(i.hookwrapper or i.wrapper for i in caller.get_hookimpls() if i.plugin is plugin)
        ]
        if wrappers:  # the core calls implementations one by one: a wrapper would never run
            self.pm.unregister(plugin)
            for hook_name in wrappers:
                self._error(
                    name,
                    "register",
                    f"hook {hook_name!r} is a wrapper (wrapper=True or hookwrapper=True): "
                    "Switchboard calls each implementation on its own, so wrappers are "
                    "not supported; use tryfirst/trylast to order implementations",
                )
            return False
        unknown = [
            caller.name
            for caller in self.pm.get_hookcallers(plugin) or ()
            if not caller.has_spec()
            and not any(i.optionalhook for i in caller.get_hookimpls() if i.plugin is plugin)
        ]
        if unknown:
            self.pm.unregister(plugin)
            for hook_name in unknown:
                hint = difflib.get_close_matches(hook_name, HOOK_NAMES, n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                self._error(name, "register", f"unknown hook {hook_name!r}{suffix}")
            return False
        self._sources[name] = source or _Source()
        return True

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._sources.pop(name, None)

    def _error(self, plugin: str, stage: str, error: str, detail: str = "") -> None:
        err = PluginError(plugin, stage, error, detail)
        self.errors.append(err)
        log.error("%s", err)

    # -- introspection --------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [n for n in self._sources if self.pm.get_plugin(n) is not None]

    def info(self) -> list[PluginInfo]:
        out = []
        for name in self.names:
            plugin = self.pm.get_plugin(name)
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or ())
            source = self._sources[name]
            out.append(
                PluginInfo(name, source.distribution, source.version, tuple(hooks), source.docs)
            )
        return out

    # -- calling --------------------------------------------------------------------------

    def _impls(self, hook_name: str) -> Iterator[tuple[str, pluggy.HookImpl]]:
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            yield impl.plugin_name, impl

    async def call(self, hook_name: str, /, **kwargs: Any) -> list[Any]:
        """Call every implementation; return the non-None results (errors are logged)."""
        results = []
        for plugin_name, impl in self._impls(hook_name):
            ok, value = await self._call_one(plugin_name, impl, hook_name, kwargs)
            if ok and value is not None:
                results.append(value)
        return results

    async def call_first(self, hook_name: str, /, **kwargs: Any) -> Any:
        """Call implementations until one returns something other than None."""
        for plugin_name, impl in self._impls(hook_name):
            ok, value = await self._call_one(plugin_name, impl, hook_name, kwargs)
            if ok and value is not None:
                return value
        return None

    async def collect(self, hook_name: str) -> list[tuple[str, tuple[Any, ...]]]:
        """Call a ``register_*(register)`` hook; return ``(plugin, args)`` per registration."""
        found: list[tuple[str, tuple[Any, ...]]] = []

        def registrar(plugin_name: str) -> Callable[..., None]:
            def register(*args: Any) -> None:
                found.append((plugin_name, args))

            return register

        for plugin_name, impl in self._impls(hook_name):
            await self._call_one(plugin_name, impl, hook_name, {"register": registrar(plugin_name)})
        return found

    async def _call_one(
        self, plugin_name: str, impl: pluggy.HookImpl, hook_name: str, kwargs: dict[str, Any]
    ) -> tuple[bool, Any]:
        try:
            args = [kwargs[a] for a in impl.argnames]
        except KeyError as exc:
            self.hook_error(plugin_name, hook_name, f"asks for unknown argument {exc}")
            return False, None
        try:
            return True, await await_me_maybe(impl.function(*args))
        except Exception as exc:
            self.hook_error(
                plugin_name, hook_name, f"{type(exc).__name__}: {exc}", traceback.format_exc()
            )
            return False, None

    def hook_error(self, plugin: str, hook_name: str, error: str, detail: str = "") -> None:
        """Count and log a failure of ``plugin``'s ``hook_name`` (also for what the core
        finds wrong in what a ``register_*`` hook registered); shown in ``/api/health``."""
        err = PluginError(plugin, f"hook {hook_name}", error, detail)
        self.hook_errors.append(err)
        del self.hook_errors[:-100]  # keep the latest hundred for /api/health
        log.error("%s\n%s", err, detail.rstrip())
