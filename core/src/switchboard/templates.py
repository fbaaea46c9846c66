"""Message templates (``[switchboard.templates.NAME]``), rendered with Jinja2 in a sandbox.

Variables are the request's ``variables``, plus ``contact`` (id, name, company, addresses
and ``address``, the one the message goes to), ``agent`` (who sends) and ``call``; the one
context is built by :func:`template_values` for previews, single sends and mailings alike.
A variable the template uses but nobody gave is an error before
anything is queued, so no customer gets "Dear ,".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import jinja2
from jinja2.sandbox import SandboxedEnvironment

from switchboard.config import TemplateSettings
from switchboard.errors import Invalid


def template_values(
    variables: Mapping[str, Any],
    *,
    contact: Any = None,
    address: str | None = None,
    agent: Any = None,
    call: Any = None,
) -> dict[str, Any]:
    """The variables every template sees, whoever renders it (API preview and send, a
    mailing): the caller's own variables, then ``contact`` (its card plus ``address``),
    ``agent`` and ``call`` (None when not given)."""
    from switchboard.events import to_json

    card = to_json(contact) if contact is not None else {}
    return {
        **variables,
        "contact": {**card, "address": address},
        "agent": to_json(agent) if agent is not None else None,
        "call": to_json(call) if call is not None else None,
    }


class TemplateError(Invalid, ValueError):
    """A template that does not exist or cannot be rendered with the given variables."""


@attrs.frozen
class Rendered:
    text: str
    subject: str | None
    html: str | None
    #: Per channel, the template's payload additions, rendered (``channels`` in the config).
    payloads: Mapping[str, dict[str, Any]] = attrs.field(factory=dict)


class Templates:
    def __init__(self, templates: Mapping[str, TemplateSettings]) -> None:
        self._env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        self._html_env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)
        self._templates = dict(templates)
        self.errors: dict[str, str] = {}
        # compiled once: a mailing renders the same template for every recipient
        self._compiled: dict[tuple[str, str], jinja2.Template] = {}
        for name, t in self._templates.items():  # syntax errors show at start-up
            for part, source, env in (
                ("text", t.text, self._env),
                ("subject", t.subject, self._env),
                ("html", t.html, self._html_env),
            ):
                if source is None:
                    continue
                try:
                    self._compiled[(name, part)] = env.from_string(source)
                except jinja2.TemplateSyntaxError as exc:
                    self.errors[f"{name}.{part}"] = f"line {exc.lineno}: {exc.message}"
            for channel, extra in t.channels.items():
                for where, source in _strings(extra, f"channels.{channel}"):
                    try:
                        self._compiled[(name, where)] = self._env.from_string(source)
                    except jinja2.TemplateSyntaxError as exc:
                        self.errors[f"{name}.{where}"] = f"line {exc.lineno}: {exc.message}"

    @property
    def names(self) -> list[str]:
        return sorted(self._templates)

    def for_channel(self, channel: str) -> list[str]:
        """The templates with a payload of their own for ``channel`` (``channels.NAME`` in
        the config): on WhatsApp, the ones that send an approved message template, which
        is all a closed customer-service window allows."""
        return sorted(n for n, t in self._templates.items() if channel in t.channels)

    def render(self, name: str, variables: Mapping[str, Any]) -> Rendered:
        t = self._templates.get(name)
        if t is None:
            known = ", ".join(self.names) or "none"
            raise TemplateError(f"unknown template {name!r} (templates: {known})")

        def one(source: str | None, env: SandboxedEnvironment, part: str) -> str | None:
            if source is None:
                return None
            compiled = self._compiled.get((name, part))
            if compiled is None:  # a syntax error (reported at start-up): say it again
                raise TemplateError(
                    f"template {name!r} ({part}): {self.errors.get(f'{name}.{part}')}"
                )
            try:
                return compiled.render(variables)
            except jinja2.UndefinedError as exc:
                raise TemplateError(f"template {name!r} ({part}): {exc.message}") from None
            except jinja2.TemplateError as exc:
                raise TemplateError(f"template {name!r} ({part}): {exc}") from None

        def tree(value: Any, where: str) -> Any:
            """A channel's payload additions with every string rendered."""
            if isinstance(value, str):
                return one(value, self._env, where)
            if isinstance(value, Mapping):
                return {k: tree(v, f"{where}.{k}") for k, v in value.items()}
            if isinstance(value, list):
                return [tree(v, f"{where}.{i}") for i, v in enumerate(value)]
            return value

        text = one(t.text, self._env, "text")
        assert text is not None
        return Rendered(
            text,
            one(t.subject, self._env, "subject"),
            one(t.html, self._html_env, "html"),
            {ch: tree(extra, f"channels.{ch}") for ch, extra in t.channels.items()},
        )


def _strings(value: Any, where: str) -> list[tuple[str, str]]:
    """Every string in a nested payload, with where it is (``channels.whatsapp.name``)."""
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in _strings(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, f"{where}.{i}")]
    return []
