"""SIP registration (RFC 3261 §10): one binding of our Contact at the registrar, refreshed
before it expires, with digest auth; or none, for a trunk that authenticates by address."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from switchboard_sip import message as sipmsg
from switchboard_sip.dialog import ALLOW
from switchboard_sip.transaction import T1, SipError

if TYPE_CHECKING:
    from switchboard_sip.ua import UserAgent

log = logging.getLogger("switchboard.sip")

REGISTER_HINTS = {
    # our credentials were refused after a challenge
    401: ": wrong username or password?",
    407: ": wrong username or password?",
    # refused outright: Kamailio says 403 when the AOR's domain is not its own, too
    403: ": check username, password and domain (registering {aor})",
}


class RegistrationError(SipError):
    pass


class Registration:
    """Our binding at the registrar: one Call-ID and From tag for its whole life, the
    CSeq counting up (RFC 3261 §10.2)."""

    def __init__(self, ua: UserAgent, expires: int) -> None:
        self.ua = ua
        self.expires = expires
        self.registered = asyncio.Event()
        self.error: str | None = "not registered yet"
        self._call_id = sipmsg.new_call_id(ua.ip)
        self._tag = sipmsg.new_tag()
        self._cseq = 0

    async def register(self, expires: int | None = None, *, drop: str | None = None) -> int:
        """One REGISTER (with digest auth); returns the expiry the registrar granted.
        Behind NAT the answer tells our public address: then we register again with it
        (and ``drop`` the Contact that named the private one)."""
        ua = self.ua
        expires = self.expires if expires is None else expires
        uri = f"{ua.scheme}:{ua.domain}"
        contacts = [("Contact", ua.contact)]
        if drop is not None:
            contacts.append(("Contact", f"{drop};expires=0"))

        def build(auth: list[tuple[str, str]]) -> tuple[bytes, str]:
            self._cseq += 1
            return ua.build_request(
                "REGISTER",
                uri,
                call_id=self._call_id,
                from_=f"<{ua.aor}>;tag={self._tag}",
                to=f"<{ua.aor}>",
                cseq=self._cseq,
                extra=[
                    *contacts,
                    ("Expires", str(expires)),
                    ("Allow", ALLOW),
                    *auth,
                ],
            )

        try:
            resp = await ua.authenticated("REGISTER", uri, build, timeout=8 * T1)
        except SipError as exc:
            raise RegistrationError(exc.status, exc.reason) from None
        if resp.status != 200:
            hint = REGISTER_HINTS.get(resp.status or 0, "").format(aor=ua.aor)
            raise RegistrationError(resp.status or 0, f"{resp.reason}{hint}")
        old_contact = ua.contact
        if expires and drop is None and ua.learn_address(resp.get_all("Via")[0]):
            return await self.register(expires, drop=old_contact)
        granted = expires
        for c in resp.get_all("Contact"):
            if f":{ua.contact_port}" in sipmsg.uri_of(c):
                value = sipmsg.param(c, "expires")
                if value and value.isdigit():
                    granted = int(value)
        expires_header = resp.get("Expires")
        if expires and expires_header and expires_header.isdigit() and not granted:
            granted = int(expires_header)
        if expires:
            self.registered.set()
            self.error = None
        else:
            self.registered.clear()
        return granted

    async def keep(self, granted: int, on_lost: Callable[[str], None]) -> None:
        """Re-register before expiry (at 80 % of the granted time) for as long as running;
        calls ``on_lost`` with the reason when a refresh fails."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(1.0, granted * 0.8))
            started = loop.time()
            try:
                granted = await self.register()
            except (SipError, OSError) as exc:
                self.registered.clear()
                self.error = str(exc)
                on_lost(f"registration refresh failed: {exc}")
                return
            log.debug("re-registered in %.3f s for %d s", loop.time() - started, granted)
