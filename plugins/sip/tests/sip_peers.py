"""Shared fixtures for the SIP tests: Kamailio, SIPp phones, a Switchboard with the channel."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard import InteractionStatus, Switchboard
from switchboard.testing import LoopbackPlugin, open_switchboard
from switchboard_sip import SipChannel, SipSettings
from switchboard_sip.testing import (
    Baresip,
    Kamailio,
    Sipp,
    agent_scenario,
    free_udp_port,
    pcm_rms,
)

AGENTS = [
    {"name": "alice", "extension": "101", "email": "alice@example.com"},
    {"name": "bob", "extension": "102", "email": "bob@example.com"},
]
CALLER = "12025550143"


def sip_plugin() -> LoopbackPlugin:
    return LoopbackPlugin(SipChannel(), plugin_name="sip", settings=SipSettings)


def sip_settings(kam: Kamailio, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "server": kam.host,
        "port": kam.port,
        "username": kam.user,
        "password": kam.password,
        "local_port": free_udp_port(),
        "rtp_port_low": 30000 + (os.getpid() % 500) * 40,
        "rtp_port_high": 30000 + (os.getpid() % 500) * 40 + 38,
        "ring_timeout": 5.0,
        "dial_timeout": 5.0,
        "expires": 60,
    }
    settings.update(overrides)
    assert SipSettings(**{k: v for k, v in settings.items() if k != "trunks"})
    return settings


@pytest.fixture
def kam(tmp_path: Path) -> Iterator[Kamailio]:
    k = Kamailio(tmp_path / "kamailio").start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
async def phones(tmp_path: Path) -> AsyncIterator[list[Sipp]]:
    """SIPp processes started by a test; stopped at its end."""
    started: list[Sipp] = []
    yield started
    await asyncio.gather(*(p.stop() for p in started))


async def open_sip(folder: Path, kam: Kamailio, **overrides: Any) -> Switchboard:
    return await open_switchboard(
        folder,
        sip_plugin(),
        config={
            "switchboard": {"agents": AGENTS},
            "plugins": {"sip": sip_settings(kam, **overrides)},
        },
    )


async def phone(phones: list[Sipp], folder: Path, name: str, scenario: str, *extra: str) -> Sipp:
    p = await Sipp(folder / "sipp", name, scenario).start(None, *extra)
    phones.append(p)
    return p


async def answering_phone(phones: list[Sipp], folder: Path, name: str, **scenario: Any) -> Sipp:
    """An agent's (or customer's) phone that answers one call (``agent_scenario`` options)."""
    return await phone(phones, folder, name, agent_scenario(**scenario), "-m", "1")


async def place_call(folder: Path, kam: Kamailio, scenario: str, timeout: float = 60) -> None:
    """One SIPp call, scripted by ``scenario``, to Switchboard's account through Kamailio;
    fails the test unless it went as scripted."""
    caller = Sipp(folder / "sipp", "caller", scenario)
    result = await caller.run(f"{kam.host}:{kam.port}", "-s", kam.user, "-m", "1", timeout=timeout)
    assert result.ok, result.errors


async def until(check: Any, within: float = 10.0, step: float = 0.05) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not true within {within} s: {check}")
        await asyncio.sleep(step)


def ended_call(sb: Switchboard) -> Any:
    """The newest call record once it has ended, else None (for ``until``)."""
    calls = sb.store.list_calls()
    if calls and calls[0].status is InteractionStatus.ENDED:
        return calls[0]
    return None


@pytest.fixture
def kam_tls(tmp_path: Path) -> Iterator[Kamailio]:
    """Kamailio with a TLS port too (its certificate signed by a CA of the test's)."""
    k = Kamailio(tmp_path / "kamailio", tls=True).start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def softphones(tmp_path: Path) -> Iterator[list[Baresip]]:
    """baresip phones started by a test; stopped at its end."""
    started: list[Baresip] = []
    yield started
    for p in started:
        p.stop()


async def baresip(
    phones: list[Baresip], tmp_path: Path, kam: Kamailio, user: str, transport: str, **kw: Any
) -> Baresip:
    """A baresip phone registered as ``user`` over ``transport`` (``Baresip`` options).

    A phone that has not registered within 10 s is started once more, on fresh ports, in a
    fresh folder: one CI run in many saw baresip never register (a port taken between our
    probe and its bind is the likely cause; its log is printed for the next reader). A
    second failure fails the test with both logs."""
    logs = []
    for attempt in (1, 2):
        folder = tmp_path / (f"baresip-{user}" if attempt == 1 else f"baresip-{user}-{attempt}")
        phone = Baresip(folder, kam, user, transport=transport, **kw).start()
        phones.append(phone)
        with contextlib.suppress(AssertionError):
            await until(phone.registered, within=10)
            return phone
        logs.append(phone.output()[-3000:])
        print(f"baresip {user} did not register (attempt {attempt}):\n{logs[-1]}")
        phone.stop()
        phones.remove(phone)
    raise AssertionError(f"baresip {user} did not register twice:\n" + "\n---\n".join(logs))


def heard(phone: Baresip) -> int:
    """How loud what ``phone`` heard in its last call was."""
    files = phone.recordings("dec")
    assert files, phone.output()[-2000:]
    return pcm_rms(files[-1], 0)
