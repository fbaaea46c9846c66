"""Callers over TLS for bench/sip_bridge_bench.py: our own SIP user agent (its TLS
transport), in a process of its own, places calls at a rate through Kamailio's TLS port to
Switchboard's account, waits for each answer, holds it briefly and hangs up. Prints one
JSON line: attempts, answered, failures (their reasons counted), setup times.

    python bench/_tls_caller.py HOST TLS_PORT CA_FILE SERVICE RATE SECONDS HOLD RTP_LOW
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time

from switchboard_sip.testing import free_udp_port
from switchboard_sip.transport import client_context
from switchboard_sip.ua import SipError, UserAgent


async def main() -> None:
    host, port, ca_file, service = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    rate, seconds, hold = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
    rtp_low = int(sys.argv[8])
    ua = UserAgent(
        server=host,
        port=port,
        username="12025550143",
        password="",
        ip="127.0.0.1",
        local_port=free_udp_port(),
        rtp_ports=(rtp_low, rtp_low + 4000),
        codecs=["PCMU", "PCMA"],
        max_calls=0,
        transport="tls",
        client_ssl=client_context(ca_file=ca_file),
        session_expires=0,
    )
    await ua.start()
    setups: list[float] = []
    failures: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        started = time.monotonic()
        try:
            leg = await ua.call(service, timeout=15)
        except SipError as exc:
            failures[str(exc)[:60]] += 1
            return
        setups.append((time.monotonic() - started) * 1000)
        await asyncio.sleep(hold)
        await leg.hangup()

    calls = []
    begun = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        await asyncio.sleep(max(0.0, begun + i / rate - time.monotonic()))
        calls.append(asyncio.ensure_future(one()))
    await asyncio.gather(*calls)
    await ua.stop()
    print(json.dumps({"attempts": n, "answered": len(setups), "setups_ms": setups,
                      "failures": dict(failures)}))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
