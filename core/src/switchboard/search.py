"""Searching what calls contain (their transcripts): the core's ``GET /api/calls?q=`` and
``sb.search_calls`` ask the one provider a plugin installed (``sb.call_search``); the core
keeps only the calls the asker may hear. See docs/plugins.md ("Searching calls")."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs


@attrs.frozen
class CallMatch:
    """Where in a call the words were found: the passage's ``text`` (plain), the same as
    ``highlighted`` (HTML: the text escaped, the words found in ``<mark>``), its
    ``speaker`` (``agent``, ``customer``...) and ``start``/``end`` (seconds into the
    recording)."""

    text: str
    highlighted: str
    speaker: str
    start: float
    end: float


@attrs.frozen
class CallHit:
    """One call that matches, its best passages first."""

    call_id: str
    matches: list[CallMatch]


@runtime_checkable
class CallSearch(Protocol):
    """What a plugin that indexes calls' content provides (``sb.call_search = ...``)."""

    async def search(
        self,
        q: str,
        *,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
        agent_id: int | None = None,
        contact_id: int | None = None,
    ) -> list[CallHit]:
        """The calls whose content matches ``q`` (words, "a phrase", -not, or), best
        first, at most ``limit``; ``Invalid`` for a query it cannot read."""
        ...
