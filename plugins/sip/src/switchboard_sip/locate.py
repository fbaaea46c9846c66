"""Locating the SIP server (RFC 3263) with dnspython: NAPTR picks the transport, SRV the
host and port, then the host's address; a server given as an address, or with a port,
is used as it is.

- ``transport = "auto"``: the server's NAPTR records (``SIPS+D2T`` TLS, ``SIP+D2T`` TCP,
  ``SIP+D2U`` UDP) in order and preference, each followed to its SRV name; without NAPTR,
  the SRV names ``_sips._tcp``, ``_sip._tcp``, ``_sip._udp`` in that order; without any,
  UDP to the server on 5060.
- a transport set: its SRV name (``_sip._udp``...), else the server on the transport's
  default port.

Among SRV records the lowest priority wins, chosen by weight (RFC 2782). A DNS answer
that is missing, empty or late counts as no record. The AOR's domain stays the server's
name, and a TLS certificate is checked against it (RFC 5922), whichever host serves it.
"""

from __future__ import annotations

import ipaddress
import logging
import random

import attrs
import dns.asyncresolver
import dns.exception

from switchboard_sip.transport import DEFAULT_PORTS

log = logging.getLogger("switchboard.sip")

NAPTR_SERVICES = {"SIPS+D2T": "tls", "SIP+D2T": "tcp", "SIP+D2U": "udp"}
SRV_PREFIX = {"tls": "_sips._tcp", "tcp": "_sip._tcp", "udp": "_sip._udp"}
LOOKUP_ERRORS = (dns.exception.DNSException,)  # no such name, no answer, timeouts, bad names


@attrs.frozen
class Target:
    """Where requests go: an address, a port, a transport; ``how`` says how it was found."""

    host: str
    port: int
    transport: str
    how: str


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def resolver(nameservers: list[str]) -> dns.asyncresolver.Resolver:
    """The system's resolver, or one asking ``nameservers`` (``"ip"`` or ``"ip:port"``)."""
    if not nameservers:
        return dns.asyncresolver.Resolver()
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = []
    for entry in nameservers:
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        r.nameservers.append(host)
        if port:
            r.nameserver_ports[host] = int(port)
    r.lifetime = 3.0
    return r


async def locate(
    server: str, *, transport: str, port: int = 0, nameservers: list[str] | None = None
) -> Target:
    """Where to send requests for ``server`` (RFC 3263 §4)."""
    fixed = "udp" if transport == "auto" else transport
    if is_address(server) or port:
        return Target(server, port or DEFAULT_PORTS[fixed], fixed, "as configured")
    res = resolver(nameservers or [])
    candidates: list[tuple[str, str]] = []  # (SRV name, transport)
    if transport == "auto":
        candidates = await _naptr(res, server)
        if not candidates:
            candidates = [(f"{SRV_PREFIX[t]}.{server}", t) for t in ("tls", "tcp", "udp")]
    else:
        candidates = [(f"{SRV_PREFIX[transport]}.{server}", transport)]
    for name, kind in candidates:
        found = await _srv(res, name)
        if found is not None:
            host, srv_port = found
            address = await _address(res, host)
            if address is not None:
                log.info(
                    "SIP server %s: %s:%s over %s (SRV %s)", server, host, srv_port, kind, name
                )
                return Target(address, srv_port, kind, f"SRV {name} -> {host}")
    address = await _address(res, server) if nameservers else server
    return Target(address or server, DEFAULT_PORTS[fixed], fixed, "no NAPTR/SRV records")


async def _naptr(res: dns.asyncresolver.Resolver, domain: str) -> list[tuple[str, str]]:
    try:
        answer = await res.resolve(domain, "NAPTR")
    except LOOKUP_ERRORS:
        return []
    records = sorted(answer, key=lambda r: (r.order, r.preference))
    out = []
    for r in records:
        service = r.service.decode("ascii", "replace").upper()
        if service in NAPTR_SERVICES and r.flags.decode("ascii", "replace").lower() == "s":
            out.append((r.replacement.to_text(omit_final_dot=True), NAPTR_SERVICES[service]))
    return out[:8]


async def _srv(res: dns.asyncresolver.Resolver, name: str) -> tuple[str, int] | None:
    try:
        answer = await res.resolve(name, "SRV")
    except LOOKUP_ERRORS:
        return None
    records = [r for r in answer if r.port and r.target.to_text() != "."]
    if not records:
        return None
    best = min(r.priority for r in records)
    pool = [r for r in records if r.priority == best]
    chosen = random.choices(pool, weights=[r.weight + 1 for r in pool])[0]
    return chosen.target.to_text(omit_final_dot=True), int(chosen.port)


async def _address(res: dns.asyncresolver.Resolver, host: str) -> str | None:
    if is_address(host):
        return host
    try:
        answer = await res.resolve(host, "A")
    except LOOKUP_ERRORS:
        return None
    return next((r.address for r in answer), None)
