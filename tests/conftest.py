"""Fixtures of the cross-package tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sbservice import Service, start_service

from switchboard.testing import serve_in_thread


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A running service: real uvicorn on a loopback port, loopback channels."""
    app, channels = start_service(tmp_path)
    with serve_in_thread(app) as running:
        yield Service(running, channels)
