"""IVR flows: read a TOML flow file, check it, draw it.

A flow is named nodes (see docs/ivr.md and ``flow.schema.json``). :func:`load_flow` reads
and checks one and raises :class:`FlowError` with *every* problem, each with its key
path (``nodes.greeting.options.1: unknown node 'sales'``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import wave
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import jsonschema

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SPAN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
# node types whose visit can end the call (so a loop through one of them has a way out)
CAN_END = {"hangup", "voicemail", "agent", "group"}


class FlowError(ValueError):
    """A flow that cannot run; ``problems`` lists each with its key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n  ".join(problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the IVR flow:\n  {lines}")


@attrs.frozen
class Prompt:
    """A WAV file (``file``), or text spoken by espeak-ng (``text`` in ``voice``)."""

    file: str | None = None
    text: str | None = None
    voice: str = "en"

    def describe(self) -> str:
        return self.file or f'"{self.text}"'


@attrs.frozen
class Node:
    name: str
    type: str
    data: dict[str, Any]
    voice: str = "en"  # the flow's default voice for text prompts

    def prompt(self, key: str = "prompt") -> Prompt | None:
        value = self.data.get(key)
        return as_prompt(value, self.voice) if value is not None else None

    def required_prompt(self, key: str = "prompt") -> Prompt:
        prompt = self.prompt(key)
        if prompt is None:  # the schema requires it on these node types
            raise FlowError(self.name, [f"nodes.{self.name}.{key}: missing"])
        return prompt

    def edges(self) -> list[tuple[str, str]]:
        """(key path, target) of every node this one can go to."""
        out: list[tuple[str, str]] = []
        for key in ("next", "default", "no_answer", "open", "closed"):
            if isinstance(self.data.get(key), str):
                out.append((key, self.data[key]))
        for digit, target in (self.data.get("options") or {}).items():
            out.append((f"options.{digit}", target))
        return out

    def can_end(self) -> bool:
        if self.type in CAN_END:
            return True
        if self.type == "play":
            return "next" not in self.data
        if self.type == "menu":
            return "default" not in self.data
        if self.type == "caller":
            return bool(self.data.get("owner_first", True))
        return False


@attrs.frozen
class Group:
    name: str
    agents: tuple[str, ...]
    strategy: str = "ring_all"
    ring_timeout: float = 20.0


@attrs.frozen
class Flow:
    source: str
    start: str
    nodes: dict[str, Node]
    groups: dict[str, Group]
    timezone: str = "UTC"
    consent: Prompt | None = None
    folder: Path = Path(".")

    def prompts(self) -> Iterable[tuple[str, Prompt]]:
        """(key path, prompt) of every prompt in the flow."""
        if self.consent is not None:
            yield "consent", self.consent
        for node in self.nodes.values():
            for key in ("prompt", "invalid"):
                p = node.prompt(key)
                if p is not None:
                    yield f"nodes.{node.name}.{key}", p

    def is_open(self, node: Node, now: datetime) -> bool:
        """A ``hours`` node: is ``now`` inside the weekly hours, outside the holidays?"""
        local = now.astimezone(ZoneInfo(self.timezone))
        if local.date().isoformat() in set(node.data.get("holidays", [])):
            return False
        spans = node.data.get("weekly", {}).get(DAYS[local.weekday()], "")
        for span in _spans(spans):
            start, end = span
            if start <= local.time() < end:
                return True
        return False


def as_prompt(value: Any, default_voice: str = "en") -> Prompt:
    if isinstance(value, str):
        return Prompt(file=value)
    return Prompt(
        file=value.get("file"), text=value.get("text"), voice=value.get("voice", default_voice)
    )


def _spans(text: str) -> list[tuple[time, time]]:
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        m = SPAN.match(part)
        if not m:
            raise ValueError(f"expected HH:MM-HH:MM, got {part!r}")
        start = time(int(m[1]), int(m[2]))
        end = time.max if m[3] == "24" else time(int(m[3]), int(m[4]))
        if end <= start:
            raise ValueError(f"{part!r} ends before it starts")
        out.append((start, end))
    return out


def schema() -> dict[str, Any]:
    text = resources.files("switchboard_ivr").joinpath("flow.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def read_flow(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The TOML document, or the problems that prevent reading it."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8")), []
    except FileNotFoundError:
        return {}, [f"flow file {p} does not exist"]
    except UnicodeDecodeError as exc:
        return {}, [f"flow file {p} is not UTF-8: {exc.reason}"]
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if any(w in message.lower() for w in ("overwrite", "twice", "duplicate")):
            message += " (a key given twice: a duplicate digit or node?)"
        return {}, [f"{p}: {message}"]


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def build_flow(
    raw: dict[str, Any],
    *,
    source: str = "<flow>",
    folder: Path = Path("."),
    agents: Iterable[str] | None = None,
    render: Callable[[Prompt], Path] | None = None,
) -> Flow:
    """Check a flow document and build it. ``agents``: the names that exist (None: not
    checked); ``render``: turns a text prompt into a WAV (None: text prompts unchecked)."""
    problems: list[str] = []
    validator = jsonschema.Draft202012Validator(schema())
    for error in sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path)):
        problems.append(f"{_path(error)}: {error.message}")
    if problems:  # the structure is wrong: deeper checks would only repeat it
        raise FlowError(source, problems)
    default_voice = raw.get("voice", "en")
    nodes = {
        name: Node(name, data["type"], data, default_voice) for name, data in raw["nodes"].items()
    }
    groups = {
        name: Group(
            name,
            tuple(g["agents"]),
            g.get("strategy", "ring_all"),
            float(g.get("ring_timeout", 20.0)),
        )
        for name, g in raw.get("groups", {}).items()
    }
    timezone = raw.get("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"timezone: unknown time zone {timezone!r}")
        timezone = "UTC"
    consent = as_prompt(raw["consent"], default_voice) if "consent" in raw else None
    flow = Flow(source, raw["start"], nodes, groups, timezone, consent, folder)
    if flow.start not in nodes:
        problems.append(f"start: unknown node {flow.start!r}")
    # references
    for node in nodes.values():
        for key, target in node.edges():
            if target not in nodes:
                problems.append(f"nodes.{node.name}.{key}: unknown node {target!r}")
        if node.type == "group" and node.data["group"] not in groups:
            problems.append(f"nodes.{node.name}.group: unknown group {node.data['group']!r}")
        if node.type == "hours":
            for day, spans in node.data.get("weekly", {}).items():
                try:
                    _spans(spans)
                except ValueError as exc:
                    problems.append(f"nodes.{node.name}.weekly.{day}: {exc}")
            for i, day in enumerate(node.data.get("holidays", [])):
                try:
                    date.fromisoformat(day)
                except ValueError:
                    problems.append(f"nodes.{node.name}.holidays.{i}: not a date (YYYY-MM-DD)")
        if node.type == "menu":
            timeout = node.data.get("timeout", 5)
            if timeout <= 0:
                problems.append(f"nodes.{node.name}.timeout: must be above 0")
    # agents
    if agents is not None:
        known = set(agents)
        for node in nodes.values():
            if node.type == "agent" and node.data["agent"] not in known:
                problems.append(f"nodes.{node.name}.agent: unknown agent {node.data['agent']!r}")
        for group in groups.values():
            for i, agent in enumerate(group.agents):
                if agent not in known:
                    problems.append(f"groups.{group.name}.agents.{i}: unknown agent {agent!r}")
    # reachability and loops
    if flow.start in nodes:
        reachable = _reachable(flow)
        for name in nodes:
            if name not in reachable:
                problems.append(f"nodes.{name}: unreachable from start {flow.start!r}")
        problems += _closed_loops(flow)
    # prompts
    for key, prompt in flow.prompts():
        problems += _check_prompt(key, prompt, folder, render)
    if problems:
        raise FlowError(source, problems)
    return flow


def _reachable(flow: Flow) -> set[str]:
    seen = {flow.start}
    todo = [flow.start]
    while todo:
        node = flow.nodes[todo.pop()]
        for _, target in node.edges():
            if target in flow.nodes and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _closed_loops(flow: Flow) -> list[str]:
    """Loops a caller can never leave: a strongly connected set of nodes with no edge out
    and no node that can end the call (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    def succ(name: str) -> list[str]:
        return [t for _, t in flow.nodes[name].edges() if t in flow.nodes]

    for root in flow.nodes:
        if root in index:
            continue
        work = [(root, iter(succ(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            name, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[name])
                if low[name] == index[name]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == name:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(succ(child))))
            elif child in on_stack:
                low[name] = min(low[name], index[child])
    problems = []
    for component in components:
        members = set(component)
        looped = len(component) > 1 or component[0] in succ(component[0])
        if not looped:
            continue
        leaves = any(t not in members for m in component for t in succ(m))
        ends = any(flow.nodes[m].can_end() for m in component)
        if not leaves and not ends:
            names = " → ".join(sorted(component))
            problems.append(f"nodes.{sorted(component)[0]}: a loop with no way out ({names})")
    return problems


def _check_prompt(
    key: str, prompt: Prompt, folder: Path, render: Callable[[Prompt], Path] | None
) -> list[str]:
    if prompt.file:
        path = Path(prompt.file)
        if not path.is_absolute():
            path = folder / path
        if not path.is_file():
            return [f"{key}: prompt file {path} does not exist"]
        try:
            with wave.open(str(path), "rb") as w:
                w.getnframes()
        except (wave.Error, EOFError) as exc:
            return [f"{key}: prompt file {path} is not a readable WAV file: {exc}"]
        return []
    if render is not None:
        try:
            render(prompt)
        except (OSError, RuntimeError) as exc:
            return [f"{key}: {exc}"]
    return []


def prompt_path(prompt: Prompt, folder: Path, render: Callable[[Prompt], Path]) -> Path:
    if prompt.file:
        path = Path(prompt.file)
        return path if path.is_absolute() else folder / path
    return render(prompt)


def load_flow(
    path: str | Path,
    *,
    agents: Iterable[str] | None = None,
    render: Callable[[Prompt], Path] | None = None,
) -> Flow:
    p = Path(path)
    raw, problems = read_flow(p)
    if problems:
        raise FlowError(str(p), problems)
    return build_flow(raw, source=str(p), folder=p.resolve().parent, agents=agents, render=render)


# -- drawing ------------------------------------------------------------------------------

SHAPES = {
    "menu": "box",
    "hours": "diamond",
    "caller": "diamond",
    "agent": "ellipse",
    "group": "ellipse",
    "voicemail": "cylinder",
    "play": "note",
    "hangup": "doublecircle",
}


def to_dot(flow: Flow) -> str:
    def q(text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return '"' + escaped + '"'

    lines = [
        "digraph ivr {",
        '  rankdir=LR; node [fontname="Helvetica", fontsize=11]; edge [fontsize=10];',
        f"  __start [shape=point]; __start -> {q(flow.start)};",
    ]
    for node in flow.nodes.values():
        label = f"{node.name}\n({node.type})"
        if node.type == "agent":
            label += f"\n{node.data['agent']}"
        elif node.type == "group":
            group = flow.groups.get(node.data["group"])
            if group is not None:
                label += f"\n{group.name}: {group.strategy}"
        lines.append(f"  {q(node.name)} [shape={SHAPES.get(node.type, 'box')}, label={q(label)}];")
        for key, target in node.edges():
            edge = key.replace("options.", "press ")
            edge = {"no_answer": "no answer", "default": "timeout"}.get(edge, edge)
            lines.append(f"  {q(node.name)} -> {q(target)} [label={q(edge)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(flow: Flow, output: Path) -> None:
    """Draw the flow with Graphviz (``dot``), in the format of ``output``'s suffix."""
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError("Graphviz is not installed (apt-get install graphviz)")
    fmt = output.suffix.lstrip(".") or "svg"
    result = subprocess.run(
        [dot, f"-T{fmt}", "-o", str(output)],
        input=to_dot(flow),
        text=True,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dot failed: {result.stderr.strip()}")
