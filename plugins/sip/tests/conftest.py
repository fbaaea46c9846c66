"""Fixtures of the SIP tests: Kamailio on a loopback port, SIPp phones stopped at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sip_peers import need_sip_tools

from switchboard_sip.testing import Kamailio, Sipp


@pytest.fixture
def kam(tmp_path: Path) -> Iterator[Kamailio]:
    need_sip_tools()
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
