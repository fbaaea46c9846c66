"""Browser softphones: where a voice channel meets an agent's browser.

A front end (the console) connects one softphone per agent: a ``SoftphoneLink`` that
carries signalling to the browser (WebSocket). A voice channel that rings an agent in the
browser opens a *browser leg* (its media side, a ``BrowserLeg``), registers it here and
sends the browser an offer; what the browser answers comes back through
:meth:`Softphones.received` to that leg, and only from the agent the leg rings. Neither
side knows the other: the console knows no SIP, the channel no sessions or sockets.

Messages are JSON objects with a ``type``; those about a leg carry its id as ``leg``.
docs/softphone.md lists them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

MAX_LEGS_PER_AGENT = 8  # ringing and talking at once: a bound on what a browser holds


@runtime_checkable
class SoftphoneLink(Protocol):
    """One connected softphone (a browser tab), as its front end carries it."""

    async def send(self, message: Mapping[str, Any]) -> None:
        """Deliver ``message`` to the browser; may raise if the connection is gone."""
        ...


@runtime_checkable
class BrowserLeg(Protocol):
    """A voice channel's side of one call leg to a browser."""

    async def signal(self, message: Mapping[str, Any]) -> None:
        """A message from the agent's browser about this leg (``answer``, ``decline``,
        ``hangup``, ``dtmf``, ``mute``...). Raise ``ValueError`` for one it refuses."""
        ...

    def link_lost(self) -> None:
        """The agent's softphone went away (tab closed, network gone)."""
        ...

    def link_restored(self) -> None:
        """The agent's softphone connected again (a signalling blip)."""
        ...


class Softphones:
    """Connected softphones by agent id, and the browser legs ringing or talking to them.

    One softphone per agent is active: a second tab is told the softphone is in use
    elsewhere (``connect`` returns False) until it ``take``s over."""

    def __init__(self) -> None:
        self._links: dict[int, SoftphoneLink] = {}
        self._legs: dict[str, tuple[int, BrowserLeg]] = {}

    # -- the front end's side ----------------------------------------------------------------

    def connect(self, agent_id: int, link: SoftphoneLink) -> bool:
        """Make ``link`` the agent's softphone unless another one is; True if it is now."""
        current = self._links.get(agent_id)
        if current is not None and current is not link:
            return False
        self._links[agent_id] = link
        if current is None:  # back after a blip: calls whose media survived go on
            for leg in self.legs_of(agent_id):
                leg.link_restored()
        return True

    async def take(self, agent_id: int, link: SoftphoneLink) -> None:
        """Make ``link`` the agent's softphone; the one before is told (``replaced``) and
        the legs it held are lost to it (they end as a closed browser's would)."""
        before = self._links.get(agent_id)
        self._links[agent_id] = link
        if before is None:
            for leg in self.legs_of(agent_id):
                leg.link_restored()
        elif before is not link:
            for leg in self.legs_of(agent_id):
                leg.link_lost()
            try:
                await before.send({"type": "replaced"})
            except Exception:  # the other tab may be gone already
                log.debug("softphone of agent %s: the tab before is gone", agent_id)

    def disconnect(self, agent_id: int, link: SoftphoneLink) -> None:
        """The connection closed: its legs are told (a browser leg ends after a grace)."""
        if self._links.get(agent_id) is not link:
            return
        del self._links[agent_id]
        for leg in self.legs_of(agent_id):
            leg.link_lost()

    async def received(self, agent_id: int, message: Mapping[str, Any]) -> None:
        """A message from agent ``agent_id``'s browser about leg ``message["leg"]``.
        ``PermissionError`` if that leg does not ring or talk to this agent (a session
        signalling about someone else's call), ``LookupError`` if it is gone."""
        leg_id = message.get("leg")
        entry = self._legs.get(leg_id) if isinstance(leg_id, str) else None
        if entry is None:
            raise LookupError("no such call in this softphone")
        owner, leg = entry
        if owner != agent_id:
            raise PermissionError("this call does not ring this agent")
        await leg.signal(message)

    # -- the voice channel's side ---------------------------------------------------------

    def online(self, agent_id: int | None) -> bool:
        return agent_id is not None and agent_id in self._links

    def open(self, agent_id: int, leg: BrowserLeg) -> str:
        """Register ``leg`` as ringing agent ``agent_id``; its id for messages. ``LookupError``
        if the agent has no softphone, ``OverflowError`` past the per-agent bound."""
        if agent_id not in self._links:
            raise LookupError("the agent's softphone is not connected")
        if len(self.legs_of(agent_id)) >= MAX_LEGS_PER_AGENT:
            raise OverflowError("too many calls in this softphone")
        leg_id = secrets.token_urlsafe(12)
        self._legs[leg_id] = (agent_id, leg)
        return leg_id

    def close(self, leg_id: str) -> None:
        self._legs.pop(leg_id, None)

    async def send(self, agent_id: int, message: Mapping[str, Any]) -> bool:
        """Send ``message`` to the agent's softphone; False if none is connected or it failed."""
        link = self._links.get(agent_id)
        if link is None:
            return False
        try:
            await link.send(message)
        except Exception as exc:
            log.info("softphone of agent %s: cannot send: %s", agent_id, exc)
            return False
        return True

    def legs_of(self, agent_id: int) -> list[BrowserLeg]:
        return [leg for owner, leg in self._legs.values() if owner == agent_id]

    def status(self) -> dict[str, int]:
        """For /api/health: connected softphones and open browser legs."""
        return {"connected": len(self._links), "legs": len(self._legs)}
