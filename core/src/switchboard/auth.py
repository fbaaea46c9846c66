"""Bearer tokens for the HTTP API, from ``[[switchboard.tokens]]``.

A token is bound to an agent (who acts with the agent's role unless the token names
another) or to a role alone (an integration). Tokens are compared in constant time, and
every configured token is compared, so the time taken says nothing about which matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import attrs

from switchboard.config import TokenSettings
from switchboard.models import Agent, Role


@attrs.frozen
class Principal:
    """Who is calling: an agent (possibly) and the role that decides what they may do."""

    name: str
    role: Role
    agent: Agent | None = None

    @property
    def agent_id(self) -> int | None:
        return self.agent.id if self.agent else None

    @property
    def sees_all(self) -> bool:
        """Supervisors and admins see every call, recording and screen pop."""
        return self.role in (Role.ADMIN, Role.SUPERVISOR)


def fingerprint(token: str) -> str:
    """A token's SHA-256 (hex, 128 bits): names it (e.g. in a signed session cookie)
    without holding it."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class TokenBook:
    def __init__(self, tokens: Sequence[TokenSettings], agents: Sequence[Agent]) -> None:
        by_name = {a.name: a for a in agents}
        self._entries: list[tuple[bytes, Principal]] = []
        self._by_fingerprint: dict[str, Principal] = {}
        for i, t in enumerate(tokens):
            agent = by_name.get(t.agent) if t.agent else None
            role = t.role or (agent.role if agent else Role.AGENT)
            name = t.name or (agent.name if agent else f"token-{i}")
            self._entries.append((t.token.encode(), Principal(name, role, agent)))
            self._by_fingerprint[fingerprint(t.token)] = self._entries[-1][1]

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, presented: str) -> Principal | None:
        given = presented.encode()
        found = None
        for secret, principal in self._entries:
            if hmac.compare_digest(secret, given) and found is None:
                found = principal
        return found

    def by_fingerprint(self, value: str) -> Principal | None:
        """Who holds the token with this :func:`fingerprint` (None once it is removed from
        the config)."""
        return self._by_fingerprint.get(value)
