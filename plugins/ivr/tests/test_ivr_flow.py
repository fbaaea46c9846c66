"""Flow files: every kind of mistake reported with its key path; the example flow; the
command line; the service refuses an invalid flow."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import pytest
from test_ivr_engine import flow_doc

from switchboard.config import ConfigError
from switchboard.testing import make_config, missing_tool
from switchboard_ivr import IvrSettings
from switchboard_ivr.flow import FlowError, build_flow, load_flow, to_dot
from switchboard_ivr.tts import Speaker

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "ivr" / "sales-support.toml"
AGENTS = ["anna", "boris", "carl"]


def problems(doc: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(FlowError) as info:
        build_flow(doc, agents=kwargs.pop("agents", AGENTS), **kwargs)
    return info.value.problems


def test_the_sample_flow_is_valid() -> None:
    flow = build_flow(flow_doc(), agents=AGENTS)
    assert flow.start == "hours" and len(flow.nodes) == 8


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["nodes"]["greeting"]["options"].update({"3": "billing"}),
            "nodes.greeting.options.3: unknown node 'billing'",
        ),
        (lambda d: d.update(start="nope"), "start: unknown node 'nope'"),
        (
            lambda d: d["nodes"].update(lost={"type": "hangup"}),
            "nodes.lost: unreachable from start 'hours'",
        ),
        (
            lambda d: d["nodes"]["operator"].update(agent="zoe"),
            "nodes.operator.agent: unknown agent 'zoe'",
        ),
        (
            lambda d: d["groups"]["sales"]["agents"].append("zoe"),
            "groups.sales.agents.3: unknown agent 'zoe'",
        ),
        (
            lambda d: d["nodes"]["sales"].update(group="salez"),
            "nodes.sales.group: unknown group 'salez'",
        ),
        (
            lambda d: d["nodes"]["greeting"]["options"].update({"x": "sales"}),
            "nodes.greeting.options: 'x' does not match",
        ),
        (
            lambda d: d["nodes"]["greeting"].update(color="red"),
            "nodes.greeting: Additional properties are not allowed ('color' was unexpected)",
        ),
        (
            lambda d: d["nodes"]["hours"]["weekly"].update(mon="9-18"),
            "nodes.hours.weekly.mon: expected HH:MM-HH:MM, got '9-18'",
        ),
        (
            lambda d: d["nodes"]["hours"]["holidays"].append("31.12.2026"),
            "nodes.hours.holidays.1: not a date",
        ),
        (lambda d: d.update(timezone="Mars/Base"), "timezone: unknown time zone 'Mars/Base'"),
        (
            lambda d: d["nodes"]["closed"].update(prompt="nowhere.wav"),
            "nodes.closed.prompt: prompt file",
        ),
    ],
)
def test_each_mistake_is_reported_with_its_key_path(change: Any, expected: str) -> None:
    doc = copy.deepcopy(flow_doc())
    change(doc)
    found = problems(doc)
    assert any(p.startswith(expected) for p in found), found


def test_a_loop_with_no_way_out_is_found_but_a_menu_loop_is_fine() -> None:
    doc = flow_doc()
    doc["nodes"]["closed"] = {"type": "play", "prompt": {"text": "a"}, "next": "again"}
    doc["nodes"]["again"] = {"type": "play", "prompt": {"text": "b"}, "next": "closed"}
    found = problems(doc)
    assert any("a loop with no way out (again → closed)" in p for p in found), found
    # a menu that returns to itself through another menu still has exits (its options)
    ok = flow_doc()
    ok["nodes"]["greeting"]["options"]["9"] = "more"
    ok["nodes"]["more"] = {"type": "menu", "prompt": {"text": "m"}, "options": {"*": "greeting"}}
    build_flow(ok, agents=AGENTS)


def test_every_problem_is_reported_at_once() -> None:
    doc = flow_doc()
    doc["nodes"]["operator"]["agent"] = "zoe"
    doc["nodes"]["greeting"]["options"]["3"] = "billing"
    doc["nodes"]["lost"] = {"type": "hangup"}
    assert len(problems(doc)) == 3


def test_a_duplicate_digit_in_the_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text(
        'start = "m"\n[nodes.m]\ntype = "menu"\nprompt = "a.wav"\n'
        'options = { "1" = "m", "1" = "m" }\n'
    )
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert "duplicate digit" in info.value.problems[0] and "line 5" in info.value.problems[0]


def test_a_wav_that_is_not_a_wav_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    doc = flow_doc()
    doc["nodes"]["closed"]["prompt"] = "bad.wav"
    found = problems(doc, folder=tmp_path)
    assert any("not a readable WAV file" in p for p in found)


def test_text_prompts_are_spoken_by_espeak_ng_and_cached(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        missing_tool("needs espeak-ng: scripts/system-deps (apt-get install espeak-ng)")
    speak = Speaker(tmp_path / "cache")
    from switchboard_ivr.flow import Prompt

    english = speak(Prompt(text="Hello", voice="en"))
    russian = speak(Prompt(text="Здравствуйте", voice="ru"))
    with wave.open(str(russian)) as w:
        assert w.getnframes() > 1000
    mtime = english.stat().st_mtime_ns
    assert (
        speak(Prompt(text="Hello", voice="en")) == english and english.stat().st_mtime_ns == mtime
    )
    with pytest.raises(RuntimeError, match="voice 'xx-nope'"):
        speak(Prompt(text="Hello", voice="xx-nope"))


def test_missing_espeak_ng_is_a_check_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without espeak-ng
    found = problems(flow_doc(), render=Speaker(tmp_path / "cache"))
    assert any("espeak-ng, which is not installed (apt-get install espeak-ng)" in p for p in found)


def test_the_service_refuses_an_invalid_flow(tmp_path: Path) -> None:
    (tmp_path / "flow.toml").write_text('start = "x"\n[nodes.a]\ntype = "hangup"\n')
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, {"plugins": {"ivr": {"flow": "flow.toml"}}}, {"ivr": IvrSettings})
    text = str(info.value)
    assert "[plugins.ivr] flow" in text and "start: unknown node 'x'" in text


def test_a_200_node_flow_is_checked(tmp_path: Path) -> None:
    doc = big_flow(200)
    started = time.perf_counter()
    flow = build_flow(doc, agents=AGENTS)
    assert len(flow.nodes) == 200
    assert time.perf_counter() - started < 5  # generous: the figure is in bench/ivr_check.py


def big_flow(n: int) -> dict[str, Any]:
    """Menus chained ten deep with agent leaves: n nodes in all."""
    nodes: dict[str, Any] = {}
    menus = n // 2
    for i in range(menus):
        options = {"0": f"agent{i}"}
        if i + 1 < menus:
            options["1"] = f"menu{i + 1}"
        if i > 0:
            options["*"] = f"menu{i - 1}"
        nodes[f"menu{i}"] = {"type": "menu", "prompt": {"text": f"menu {i}"}, "options": options}
        nodes[f"agent{i}"] = {"type": "agent", "agent": AGENTS[i % 3]}
    return {"start": "menu0", "nodes": nodes}


def test_the_example_flow_checks_and_draws(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None or shutil.which("dot") is None:
        missing_tool(
            "needs espeak-ng and dot: scripts/system-deps (apt-get install espeak-ng graphviz)"
        )
    exe = Path(sys.executable).with_name("switchboard")
    config = ROOT / "switchboard.example.toml"
    out = subprocess.run(
        [exe, "ivr", "check", EXAMPLE, "--config", config, "--tts-cache", tmp_path / "tts"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "OK, 8 nodes" in out.stdout
    svg = tmp_path / "flow.svg"
    out = subprocess.run(
        [exe, "ivr", "diagram", EXAMPLE, "-o", svg], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "<svg" in svg.read_text() and "greeting" in svg.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'start = "a"\n[nodes.a]\ntype = "hangup"\n[nodes.b]\ntype = "agent"\nagent = "zoe"\n'
    )
    out = subprocess.run(
        [exe, "ivr", "check", bad, "--config", config], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    assert "nodes.b.agent: unknown agent 'zoe'" in out.stderr
    assert "nodes.b: unreachable" in out.stderr and "2 problem(s)" in out.stderr


def test_the_diagram_has_every_node_and_edge() -> None:
    dot = to_dot(load_flow(EXAMPLE))
    for name in ("hours", "greeting", "sales", "support", "operator", "voicemail", "closed"):
        assert f'"{name}" [' in dot
    assert '"greeting" -> "sales" [label="press 1"]' in dot
    assert '"greeting" -> "operator" [label="timeout"]' in dot


def test_the_flows_voice_is_the_default_of_its_text_prompts() -> None:
    doc = flow_doc(voice="ru")
    doc["nodes"]["closed"]["prompt"] = {"text": "Мы закрыты", "voice": "en"}
    flow = build_flow(doc, agents=AGENTS)
    assert flow.nodes["greeting"].required_prompt().voice == "ru"
    assert flow.nodes["closed"].required_prompt().voice == "en"  # its own voice wins
    assert flow.consent is not None and flow.consent.voice == "ru"
