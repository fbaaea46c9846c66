"""One TOML file configures the service.

``[switchboard]`` holds the core's settings (:class:`CoreSettings`); ``[plugins.NAME]``
holds a plugin's, checked against the attrs class it registers through
``register_settings``. Strings may name environment variables: ``"${SIP_PASSWORD}"`` or
``"${SIP_PORT:-5060}"``. Every problem found is reported at once, each naming the file, the
key and what was expected (:class:`ConfigError`).
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
import phonenumbers
from cattrs.errors import ForbiddenExtraKeysError

from switchboard.models import Agent, Disposition, EventType, Ring, Role

T = TypeVar("T")

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration cannot be used; ``problems`` lists each one on its own line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the configuration:\n{lines}")


@attrs.define
class AgentSettings:
    """``[[switchboard.agents]]``: an employee who takes calls and messages."""

    name: str
    extension: str | None = None
    email: str | None = None
    role: Role = Role.AGENT
    ring: Ring = Ring.PHONE  # phone, browser (the console's softphone) or both

    def to_agent(self) -> Agent:
        return Agent(
            id=None,
            name=self.name,
            extension=self.extension,
            email=self.email,
            role=self.role,
            ring=self.ring,
        )


@attrs.define
class OutboxSettings:
    """``[switchboard.outbox]``: how outgoing messages are retried."""

    max_attempts: int = 8
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    lease_seconds: float = 60.0
    poll_interval: float = 0.5
    batch_size: int = 50


@attrs.define
class TokenSettings:
    """``[[switchboard.tokens]]``: a bearer token for the HTTP API.

    Bound to an agent (who then acts with the agent's role) or to a role alone (for an
    integration such as a CRM)."""

    token: str = attrs.field(repr=False)
    agent: str | None = None
    role: Role | None = None
    name: str | None = None


@attrs.define
class WebhookSettings:
    """``[[switchboard.webhooks]]``: a URL that receives events as signed POSTs."""

    name: str
    url: str
    secret: str = attrs.field(repr=False)
    events: list[str] = attrs.Factory(list)
    timeout: float = 10.0
    max_attempts: int = 12
    backoff_initial: float = 1.0
    backoff_max: float = 600.0


@attrs.define
class TemplateSettings:
    """``[switchboard.templates.NAME]``: a message template (Jinja2, sandboxed)."""

    text: str
    subject: str | None = None
    html: str | None = None
    #: Per channel, what a message of this template gets in its payload besides the text
    #: (WhatsApp: ``whatsapp_template``); every string in it is rendered like the text.
    channels: dict[str, dict[str, Any]] = attrs.Factory(dict)


@attrs.define
class HttpSettings:
    """``[switchboard.http]``: the runner's HTTP side."""

    max_body_bytes: int = 1_048_576
    sse_queue_size: int = 1000
    sse_keepalive: float = 15.0
    shutdown_timeout: float = 8.0
    #: Where systems outside reach the runner (a CRM fetching a recording link): the base
    #: of the links ``sb.recording_link`` makes, e.g. ``https://switchboard.example.com``.
    public_url: str | None = None
    #: Signs those links (at least 16 characters); without it no link is made.
    link_secret: str | None = attrs.field(default=None, repr=False)


@attrs.define
class EventSettings:
    """``[switchboard.events]``: how long the event log keeps events."""

    retention_days: float = 30.0
    prune_interval: float = 3600.0


@attrs.define
class NodeSettings:
    """``[switchboard.nodes]``: several runners on one PostgreSQL database."""

    #: how soon another runner takes over singleton work (event consumers, long polls,
    #: mailbox readers, the sweep of dead runners' calls) whose holder died
    takeover_seconds: float = 5.0


@attrs.define
class CallbackSettings:
    """``[switchboard.callbacks]``: missed calls become callback tasks."""

    enabled: bool = True
    due_minutes: float = 60.0
    dispositions: list[str] = attrs.Factory(lambda: ["missed", "abandoned", "voicemail"])


@attrs.define
class AnalyticsSettings:
    """``[switchboard.analytics]``: how call statistics are counted."""

    service_level_seconds: float = 20.0


@attrs.define
class CoreSettings:
    """``[switchboard]``: the core's own settings."""

    database_url: str = "sqlite:///switchboard.db"
    default_region: str = "US"
    recordings_dir: str = "recordings"
    # seconds a plugin's resolve_contact (a CRM lookup) may take before the store decides:
    # within the 100 ms screen-pop budget (a connector fills the CRM's name in later)
    resolve_timeout: float = 0.08
    agents: list[AgentSettings] = attrs.Factory(list)
    outbox: OutboxSettings = attrs.Factory(OutboxSettings)
    tokens: list[TokenSettings] = attrs.Factory(list)
    webhooks: list[WebhookSettings] = attrs.Factory(list)
    templates: dict[str, TemplateSettings] = attrs.Factory(dict)
    http: HttpSettings = attrs.Factory(HttpSettings)
    events: EventSettings = attrs.Factory(EventSettings)
    nodes: NodeSettings = attrs.Factory(NodeSettings)
    callbacks: CallbackSettings = attrs.Factory(CallbackSettings)
    analytics: AnalyticsSettings = attrs.Factory(AnalyticsSettings)


@attrs.frozen
class Config:
    """A loaded, checked configuration."""

    core: CoreSettings
    plugins: Mapping[str, Any]
    source: str = "<defaults>"
    unconfigured: tuple[str, ...] = ()
    """Plugins with required settings and no ``[plugins.NAME]`` table: their channels
    are not started."""

    def plugin_settings(self, name: str) -> Any:
        return self.plugins.get(name)


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _Expected(ValueError):
    pass


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)

    def s_str(v: Any, cls: Any) -> str:
        if isinstance(cls, type) and issubclass(cls, enum.Enum):  # StrEnum is a str too
            return s_enum(v, cls)  # type: ignore[return-value]
        if not isinstance(v, str):
            raise _Expected(f"expected a string, got {_type_name(v)} {v!r}")
        return v

    def s_int(v: Any, _: Any) -> int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
            return int(v)
        raise _Expected(f"expected an integer, got {_type_name(v)} {v!r}")

    def s_float(v: Any, _: Any) -> float:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
        raise _Expected(f"expected a number, got {_type_name(v)} {v!r}")

    def s_bool(v: Any, _: Any) -> bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in {"true", "false", "1", "0", "yes", "no"}:
            return v.strip().lower() in {"true", "1", "yes"}
        raise _Expected(f"expected true or false, got {_type_name(v)} {v!r}")

    def s_enum(v: Any, cls: type[enum.Enum]) -> enum.Enum:
        try:
            return cls(v)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise _Expected(f"expected one of {choices}, got {v!r}") from None

    conv.register_structure_hook(str, s_str)
    conv.register_structure_hook(int, s_int)
    conv.register_structure_hook(float, s_float)
    conv.register_structure_hook(bool, s_bool)
    conv.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), s_enum
    )
    return conv


_converter = _make_converter()


def _format_exception(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, _Expected):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required, but missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        known = ", ".join(f.name for f in attrs.fields(exc.cl)) if attrs.has(exc.cl) else ""
        extra = ", ".join(sorted(exc.extra_fields))
        return f"unknown key(s) {extra}" + (f"; expected one of: {known}" if known else "")
    if isinstance(exc, TypeError | ValueError):
        return f"invalid value ({exc})"
    return f"{type(exc).__name__}: {exc}"


def structure(data: Any, cls: type[T], section: str) -> tuple[T | None, list[str]]:
    """Build ``cls`` from ``data``; on failure return the problems, each with its key path."""
    try:
        return _converter.structure(data, cls), []
    except Exception as exc:
        problems = []
        for msg in cattrs.transform_error(exc, path="$", format_exception=_format_exception):
            text, _, path = msg.rpartition(" @ ")
            key = path.removeprefix("$").lstrip(".")
            problems.append(f"[{section}]{' ' + key if key else ''}: {text}")
        return None, problems


def expand_env(
    data: Any, path: str, problems: list[str], env: Mapping[str, str] | None = None
) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of ``data``."""
    env = os.environ if env is None else env
    if isinstance(data, dict):
        return {
            k: expand_env(v, f"{path}.{k}" if path else k, problems, env) for k, v in data.items()
        }
    if isinstance(data, list):
        return [expand_env(v, f"{path}[{i}]", problems, env) for i, v in enumerate(data)]
    if isinstance(data, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_RE.sub(sub, data)
    return data


EVENT_TYPES = tuple(EventType)


def _check_core(core: CoreSettings, plugins: Iterable[str] = ()) -> list[str]:
    """Checks across keys that a type alone cannot express."""
    problems = []
    names = [a.name for a in core.agents]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"[switchboard] agents: agent name {dup!r} appears more than once")
    for i, t in enumerate(core.tokens):
        where = f"[switchboard] tokens[{i}]"
        if t.agent is None and t.role is None:
            problems.append(f"{where}: give agent or role (or both)")
        if t.agent is not None and t.agent not in names:
            problems.append(f"{where}.agent: no agent named {t.agent!r} in [[switchboard.agents]]")
        if len(t.token) < 16:
            problems.append(f"{where}.token: too short (at least 16 characters)")
    tokens = [t.token for t in core.tokens]
    if len(set(tokens)) != len(tokens):
        problems.append("[switchboard] tokens: the same token appears more than once")
    http = core.http
    if http.public_url is not None and not http.public_url.startswith(("http://", "https://")):
        problems.append(
            f"[switchboard.http] public_url: expected an http(s) URL, got {http.public_url!r}"
        )
    if http.link_secret is not None and len(http.link_secret) < 16:
        problems.append("[switchboard.http] link_secret: too short (at least 16 characters)")
    loaded = set(plugins)
    hooks = [w.name for w in core.webhooks]
    for dup in sorted({n for n in hooks if hooks.count(n) > 1}):
        problems.append(f"[switchboard] webhooks: webhook name {dup!r} appears more than once")
    for i, w in enumerate(core.webhooks):
        where = f"[switchboard] webhooks[{i}]"
        if not w.url.startswith(("http://", "https://")):
            problems.append(f"{where}.url: expected an http:// or https:// URL, got {w.url!r}")
        # the core's types, or a loaded plugin's own (``<plugin>.<name>``, its docs say which)
        unknown = sorted(
            e for e in set(w.events) - set(EVENT_TYPES) if e.partition(".")[0] not in loaded
        )
        if unknown:
            problems.append(
                f"{where}.events: unknown event type(s) {', '.join(unknown)}; "
                f"known: {', '.join(EVENT_TYPES)}, or PLUGIN.NAME of a loaded plugin"
            )
    known = {d.value for d in Disposition} - {Disposition.ANSWERED.value}
    wrong = sorted(set(core.callbacks.dispositions) - known)
    if wrong:
        problems.append(
            f"[switchboard.callbacks] dispositions: unknown {', '.join(wrong)}; "
            f"expected some of {', '.join(sorted(known))}"
        )
    from switchboard.templates import Templates

    for where, error in Templates(core.templates).errors.items():
        problems.append(f"[switchboard] templates.{where}: {error}")
    return problems


def _resolve_relative(core: CoreSettings, base: Path) -> None:
    prefix = "sqlite:///"
    if core.database_url.startswith(prefix):
        db_path = core.database_url[len(prefix) :]
        if db_path and db_path != ":memory:" and not Path(db_path).is_absolute():
            core.database_url = prefix + str((base / db_path).resolve())
    if not Path(core.recordings_dir).is_absolute():
        core.recordings_dir = str((base / core.recordings_dir).resolve())


def load_config(
    path: str | Path | None,
    plugin_settings: Mapping[str, type[Any] | None] | None = None,
    *,
    plugin_errors: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read and check a config file (``None``: defaults only).

    ``plugin_settings`` maps each loaded plugin to its settings class (or None when it takes
    none); ``plugin_errors`` maps plugins that failed to load to their error. Relative paths
    (a SQLite file, ``recordings_dir``) are taken from the config file's folder.
    """
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(source, ["the file does not exist"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    base = Path(path).resolve().parent if path is not None else None
    return config_from_dict(
        raw, plugin_settings, source=source, base_dir=base, plugin_errors=plugin_errors, env=env
    )


def config_from_dict(
    raw: Mapping[str, Any],
    plugin_settings: Mapping[str, type[Any] | None] | None = None,
    *,
    source: str = "<dict>",
    base_dir: Path | None = None,
    plugin_errors: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Check a configuration shaped like the TOML file; see :func:`load_config`."""
    plugin_settings = dict(plugin_settings or {})
    plugin_errors = dict(plugin_errors or {})
    problems: list[str] = []
    unknown = sorted(set(raw) - {"switchboard", "plugins"})
    if unknown:
        problems.append(
            f"unknown top-level table(s) {', '.join(unknown)}; "
            "expected [switchboard] and [plugins.NAME]"
        )
    raw = expand_env(dict(raw), "", problems, env)

    core_raw = raw.get("switchboard", {})
    if isinstance(core_raw, Mapping) and "mailings" in core_raw:  # before 0.2: in the core
        core_raw = {k: v for k, v in core_raw.items() if k != "mailings"}
        problems.append(
            "[switchboard.mailings] moved to [plugins.mailings] (the switchboard-mailings "
            "plugin): same keys, public_url and link_secret"
        )
    core, core_problems = structure(core_raw, CoreSettings, "switchboard")
    problems += core_problems
    if core is not None:
        if core.default_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            problems.append(
                f"[switchboard] default_region: expected an ISO 3166 region "
                f"code such as 'RU' or 'US', got {core.default_region!r}"
            )
        problems += _check_core(core, (plugin_settings or {}).keys())
        if base_dir is not None:
            _resolve_relative(core, base_dir)
    plugins_raw = raw.get("plugins", {})
    plugins: dict[str, Any] = {}
    if not isinstance(plugins_raw, dict):
        problems.append("[plugins]: expected a table of [plugins.NAME] tables")
        plugins_raw = {}
    for name, section in plugins_raw.items():
        where = f"plugins.{name}"
        if name in plugin_errors:
            problems.append(f"[{where}]: the plugin failed to load: {plugin_errors[name]}")
            continue
        if name not in plugin_settings:
            installed = ", ".join(sorted(plugin_settings)) or "none"
            problems.append(f"[{where}]: no plugin named {name!r} is loaded (loaded: {installed})")
            continue
        cls = plugin_settings[name]
        if cls is None:
            if section:
                problems.append(f"[{where}]: this plugin takes no settings")
            continue
        value, section_problems = structure(section, cls, where)
        problems += section_problems
        plugins[name] = value
    unconfigured = []
    for name, cls in plugin_settings.items():
        if cls is not None and name not in plugins_raw:
            value, section_problems = structure({}, cls, f"plugins.{name}")
            if section_problems:  # required settings and no table: installed, not enabled
                unconfigured.append(name)
            else:
                plugins[name] = value
    if core is not None:
        for name, value in plugins.items():
            # a settings class may check itself against the rest of the config (agents
            # named in an IVR flow, files relative to the config's folder...)
            check = getattr(value, "check_config", None)
            if callable(check):
                try:
                    found = check(core, base_dir)
                except Exception as exc:
                    found = [f"{type(exc).__name__}: {exc}"]
                problems += [f"[plugins.{name}] {p}" for p in found]
    if problems:
        raise ConfigError(source, problems)
    assert core is not None
    return Config(core=core, plugins=plugins, source=source, unconfigured=tuple(unconfigured))
