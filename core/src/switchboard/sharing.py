"""Signed, expiring links to a call's recording, for systems that fetch it without a
token of ours (a CRM that shows the recording on its own call card).

A link is ``{public_url}/recordings/{token}``: the token holds the call id and the time
it stops working, signed with HMAC-SHA256 over ``[switchboard.http] link_secret``; it
cannot be made for another call or stretched past its expiry without the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

__all__ = ["MAX_TOKEN", "make_token", "read_token"]

MAX_TOKEN = 1024  # a longer token is refused before any work


def _mac(secret: str, body: str) -> str:
    return hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]


def make_token(secret: str, call_id: str, ttl: float, *, now: float | None = None) -> str:
    """A token for ``call_id``'s recording, valid ``ttl`` seconds from ``now``."""
    expires = int((time.time() if now is None else now) + ttl)
    raw = json.dumps([call_id, expires], separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{body}.{_mac(secret, body)}"


def read_token(secret: str, token: str, *, now: float | None = None) -> str | None:
    """The call id a token is for, or None: malformed, forged, or expired."""
    if len(token) > MAX_TOKEN or token.count(".") != 1:
        return None
    body, mac = token.split(".")
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    try:
        call_id, expires = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(call_id, str) or not isinstance(expires, int):
        return None
    if expires < (time.time() if now is None else now):
        return None
    return call_id
