"""Domain errors: what the core (and a plugin through it) raises when a request cannot be
done as asked. The HTTP API answers each kind with one status, in one exception handler
(``NotFound`` 404, ``Conflict`` 409, ``Invalid`` 422, ``Forbidden`` 403,
``Unavailable`` 503), the message
as ``detail``; a plugin's own routes get the same mapping."""

from __future__ import annotations

__all__ = ["Conflict", "Forbidden", "Invalid", "NotFound", "SwitchboardError", "Unavailable"]


class SwitchboardError(Exception):
    """Base of the domain errors; the message says what and why, for the caller."""


class NotFound(SwitchboardError):
    """No such contact, message, call, task, mailing..."""


class Conflict(SwitchboardError):
    """The request clashes with what is stored (an address of another contact...)."""


class Invalid(SwitchboardError):
    """The request cannot be done as given (an unknown channel, an empty list...)."""


class Forbidden(SwitchboardError):
    """The caller may not do this."""


class Unavailable(SwitchboardError):
    """What the request needs is not running now (no voice channel to place a call...)."""
