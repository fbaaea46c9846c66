"""Digest authentication (RFC 2617 / RFC 3261 §22): the answer to a 401 or 407."""

from __future__ import annotations

import hashlib
import secrets

from switchboard_sip import message as sipmsg
from switchboard_sip.transaction import SipError


def digest(challenge: str, method: str, uri: str, username: str, password: str, nc: int = 1) -> str:
    """The Authorization value answering a ``Digest`` challenge (RFC 2617, MD5, qop=auth)."""
    fields: dict[str, str] = {}
    for part in sipmsg.split_commas(challenge.split(" ", 1)[1] if " " in challenge else ""):
        key, _, value = part.partition("=")
        fields[key.strip().lower()] = value.strip().strip('"')
    realm = fields.get("realm", "")
    nonce = fields.get("nonce", "")
    algorithm = fields.get("algorithm", "MD5")
    if algorithm.upper() not in ("MD5",):
        raise SipError(0, f"unsupported digest algorithm {algorithm}")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in [q.strip() for q in fields.get("qop", "").split(",")]:
        cnonce = secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        resp = md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={nc_text}", f'cnonce="{cnonce}"']
    else:
        resp = md5(f"{ha1}:{nonce}:{ha2}")
    parts += [f'response="{resp}"', "algorithm=MD5"]
    if "opaque" in fields:
        parts.append(f'opaque="{fields["opaque"]}"')
    return "Digest " + ", ".join(parts)
