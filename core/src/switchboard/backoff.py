"""Exponential backoff: the one rule for every retry in Switchboard (the outbox, webhooks,
the channel and loop supervisors) and for plugins that reconnect (IMAP, long polling).

``Backoff(initial, cap, jitter)``: retry *n* waits ``initial * 2**(n-1)`` seconds, at
most ``cap``, spread by ``±jitter`` (a fraction) so that several runners (or several
channels after one outage) do not all retry in the same instant.
"""

from __future__ import annotations

import random

import attrs

__all__ = ["Backoff"]

# 2**64 times any initial delay is past any cap: no float overflow for a huge attempt
_MAX_DOUBLINGS = 64


@attrs.define
class Backoff:
    """Delays for retries after consecutive failures.

    Use :meth:`delay` for a stored attempt count (the outbox, webhooks), or let the object
    count: :meth:`failed` after each failure (returns the delay to wait), :meth:`succeeded`
    when it works again.
    """

    initial: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    cap: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    jitter: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0), attrs.validators.lt(1)]
    )
    failures: int = 0  # consecutive failures so far
    rng: random.Random | None = attrs.field(default=None, repr=False, eq=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        base = min(self.cap, self.initial * 2.0**doublings)
        if not self.jitter:
            return base
        spread = (self.rng or random).random()
        return base * (1 - self.jitter + 2 * self.jitter * spread)

    def failed(self) -> float:
        """Count a failure; the delay before the next try."""
        self.failures += 1
        return self.delay(self.failures)

    def succeeded(self) -> None:
        """It works again: the next failure waits ``initial`` again."""
        self.failures = 0
