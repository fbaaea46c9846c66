"""CRM connectors: events pushed per second, and the screen pop with a slow CRM.

Throughput: each connector (Bitrix24, amoCRM, Odoo) against its loopback stand-in, which
runs in a process of its own (the CRM is another machine: its work must not slow ours),
with its request pacing raised out of the way (the real CRMs' limits, 2 to 20 requests a
second, would be the bound otherwise). A runner (SQLite or PostgreSQL) has the connector's
consumer cursor made, then takes N inbound emails from 100 people the CRM knows (by
email), then starts the consumer: events/s = N / the time from the consumer's start to
the CRM holding the N-th note or comment (each one request; the people's lookups are
cached after their first). Then N/3 whole calls (ringing, answered, ended: three events,
Bitrix24's five requests: register, show, hide, finish...) the same way. Target (issue
#20): >= 200 events/s, bounded by the CRM, not by us.

Screen pop: a runner with the amoCRM connector whose every answer takes 2 s, and one
event-stream subscriber; calls from numbers never seen ring one after another, and each
``calls.ringing`` is timed (it returns once the pop reached the live streams). Beside it
the same without a connector. Budget: p99 <= 100 ms. Then how long until every contact
had amoCRM's name filled in.

Usage: python bench/crm_bench.py [--messages 3000] [--pops 100] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import database, machine, percentile

from switchboard import Direction, InboundMessage, InteractionKind
from switchboard.testing import (
    CRM_AGENTS,
    LINK_SECRET,
    LoopbackChannel,
    LoopbackPlugin,
    LoopbackVoiceChannel,
    open_switchboard,
)

PEOPLE = 100


def email(i: int) -> str:
    return f"person{i % PEOPLE}@example.com"


# -- the stand-ins, each in its own process ------------------------------------------------


def _serve(kind: str, delay: float, pipe: Any) -> None:
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from switchboard.testing import serve_in_thread

    if kind == "amocrm":
        from switchboard_amocrm.testing import AmoCrm

        crm: Any = AmoCrm()
        for i in range(PEOPLE):
            crm.add_contact(f"Person {i}", [f"+7495100{i:04d}"], [email(i)], 7001)

        def count() -> int:
            return len(crm.notes) + len(crm.calls) + len(crm.unsorted)
    elif kind == "odoo":
        from switchboard_odoo.testing import Odoo

        crm = Odoo()
        for i in range(PEOPLE):
            crm.add_partner(f"Person {i}", f"+7495100{i:04d}", email(i), 6)

        def count() -> int:
            return len(crm.messages)
    else:
        from switchboard_bitrix24.testing import Bitrix24

        crm = Bitrix24()
        for i in range(PEOPLE):
            crm.add_contact(f"Person {i}", phones=(f"+7495100{i:04d}",), emails=(email(i),))

        def count() -> int:
            return len(crm.comments) + sum(1 for c in crm.calls.values() if c["finished"])

    async def counted(request: Any) -> JSONResponse:
        return JSONResponse({"count": count(), "requests": len(crm.requests)})

    crm.app.router.routes.append(Route("/__count", counted))
    crm.delay = delay
    with serve_in_thread(crm.app) as running:
        crm.url = running.url
        form = crm.install_form() if kind == "bitrix24" else b""
        pipe.send((running.url, form))
        pipe.recv()  # until the bench is done


@contextlib.contextmanager
def stand_in(kind: str, delay: float = 0.0) -> Iterator[tuple[str, bytes]]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(kind, delay, theirs), daemon=True)
    proc.start()
    try:
        yield ours.recv()
    finally:
        ours.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def crm_count(url: str) -> int:
    return int(httpx.get(f"{url}/__count").json()["count"])


def settings(kind: str, url: str) -> dict[str, Any]:
    if kind == "amocrm":
        from switchboard_amocrm import testing as amo

        return amo.settings(url, oauth=False, requests_per_second=5000.0)
    if kind == "odoo":
        from switchboard_odoo import testing as odoo

        return odoo.settings(url, requests_per_second=5000.0)
    from switchboard_bitrix24.testing import CLIENT_ID, CLIENT_SECRET

    return {
        "portal_url": url,
        "oauth_url": url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "users": {"anna": 1, "boris": 2},
        "requests_per_second": 5000.0,
        "click_to_call": False,
    }


def plugin(kind: str) -> Any:
    if kind == "amocrm":
        from switchboard_amocrm import AmoCrmPlugin

        return AmoCrmPlugin()
    if kind == "odoo":
        from switchboard_odoo import OdooPlugin

        return OdooPlugin()
    from switchboard_bitrix24 import Bitrix24Plugin

    return Bitrix24Plugin()


async def _install_bitrix24(sb: Any, connector: Any, form: bytes) -> None:
    from switchboard_bitrix24 import form_parts
    from switchboard_bitrix24.client import Installation

    await connector.api.install(Installation.from_auth(form_parts(form)["auth"]))


# -- throughput ----------------------------------------------------------------------------


async def drain(kind: str, backend: str, n: int, calls: bool) -> tuple[float, int]:
    """Events/s of one connector draining ``n`` messages (or ``n`` / 3 calls)."""
    with (
        stand_in(kind) as (url, form),
        database(backend) as db,
        tempfile.TemporaryDirectory() as folder,
    ):
        voice = LoopbackVoiceChannel("voice")
        mail = LoopbackChannel("email", "email")
        connector_plugin = plugin(kind)
        sb = await open_switchboard(
            folder,
            LoopbackPlugin(voice, mail),
            connector_plugin,
            config={
                "switchboard": {"database_url": db, "agents": [dict(a) for a in CRM_AGENTS]},
                "plugins": {kind: settings(kind, url)},
            },
        )
        try:
            connector = connector_plugin.connector
            if kind == "bitrix24":
                await _install_bitrix24(sb, connector, form)
            consumer = sb.consumers.all[f"consumer:{kind}"][1]
            await asyncio.to_thread(consumer.cursor)  # made now: it gets what follows
            events = 0
            if calls:
                assert voice.ctx is not None
                anna = await sb.agent("anna")
                for i in range(n // 3):
                    call_id = f"bench-{i}"
                    await voice.ctx.calls.ringing(
                        "voice",
                        call_id,
                        direction=Direction.INBOUND,
                        from_address=f"+7495100{i % PEOPLE:04d}",
                        to_address="+74950000000",
                        agents=[anna.id or 0],
                    )
                    await voice.ctx.calls.answered("voice", call_id, anna)
                    await voice.ctx.calls.ended("voice", call_id)
                    events += 3
                expected = n // 3
            else:
                assert mail.ctx is not None
                await asyncio.gather(
                    *(
                        mail.ctx.receive(
                            InboundMessage(
                                external_id=f"m{i}",
                                sender=email(i),
                                text=f"message {i}",
                                subject="bench",
                                kind=InteractionKind.EMAIL,
                            )
                        )
                        for i in range(n)
                    )
                )
                events = expected = n
            sb.loops.start("events", sb.events.run)
            started = time.perf_counter()
            await sb.consumers.start()
            while await asyncio.to_thread(crm_count, url) < expected:
                await asyncio.sleep(0.05)
            took = time.perf_counter() - started
            assert consumer.failed == 0, consumer.health()
            return events / took, expected
        finally:
            await sb.consumers.stop()
            await sb.close()


# -- the screen pop with a slow CRM --------------------------------------------------------


async def pops(n: int, delay: float, with_crm: bool) -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        url = ""
        if with_crm:
            url, _ = stack.enter_context(stand_in("amocrm", delay))
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        voice = LoopbackVoiceChannel("voice")
        parts: list[Any] = [LoopbackPlugin(voice)]
        config: dict[str, Any] = {
            "switchboard": {
                "agents": [dict(a) for a in CRM_AGENTS],
                "http": {"public_url": "http://bench.test", "link_secret": LINK_SECRET},
            }
        }
        if with_crm:
            parts.append(plugin("amocrm"))
            config["plugins"] = {"amocrm": settings("amocrm", url)}
        sb = await open_switchboard(folder, *parts, config=config)
        sb.loops.start("events", sb.events.run)  # the hub: pops reach live streams
        stream = sb.events.subscribe(lambda e: True)  # one live stream, an agent's console

        async def read() -> None:
            while True:
                await stream.get()

        reader = asyncio.ensure_future(read())
        try:
            if with_crm:  # the connector's cursor made now: it gets these calls' events
                consumer = sb.consumers.all["consumer:amocrm"][1]
                await asyncio.to_thread(consumer.cursor)
            assert voice.ctx is not None
            anna = await sb.agent("anna")
            times = []
            contacts = []
            for i in range(n):
                started = time.perf_counter()
                record, _ = await voice.ctx.calls.ringing(
                    "voice",
                    f"pop-{i}",
                    direction=Direction.INBOUND,
                    from_address=f"+7495100{i % PEOPLE:04d}",
                    to_address="+74950000000",
                    agents=[anna.id or 0],
                )
                times.append((time.perf_counter() - started) * 1000)
                contacts.append(record.contact_id)
                await asyncio.sleep(0.05)
            result = {
                "p50": statistics.median(times),
                "p95": percentile(times, 95),
                "p99": percentile(times, 99),
                "max": max(times),
            }
            if with_crm:  # every lookup goes on: the names come when amoCRM answers
                await sb.consumers.start()
                started = time.perf_counter()
                while True:
                    named = await sb.contacts(contacts)
                    if all(c.name.startswith("Person ") for c in named.values()):
                        break
                    await asyncio.sleep(0.1)
                result["named_after_s"] = time.perf_counter() - started
                await sb.consumers.stop()
            return result
        finally:
            reader.cancel()
            sb.events.unsubscribe(stream)
            await sb.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--pops", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--kinds", default="bitrix24,amocrm,odoo")
    args = parser.parse_args()
    print(f"# {machine()}; {time.strftime('%Y-%m-%d %H:%M')}")
    print("| connector | store | events | what | events/s |")
    print("| --- | --- | ---: | --- | ---: |")
    for kind in args.kinds.split(","):
        for backend in args.backends.split(","):
            for calls in (False, True):
                rate, items = asyncio.run(drain(kind, backend, args.messages, calls))
                what = f"{items} calls (3 events each)" if calls else f"{items} emails"
                print(
                    f"| {kind} | {backend} | {args.messages if not calls else items * 3} "
                    f"| {what} | {rate:,.0f} |",
                    flush=True,
                )
    for with_crm in (False, True):
        r = asyncio.run(pops(args.pops, 2.0, with_crm))
        label = "amoCRM answering in 2 s" if with_crm else "no CRM connector"
        extra = f"; names filled in {r['named_after_s']:.1f} s later" if with_crm else ""
        print(
            f"pop, {label}: p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, "
            f"p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms{extra}",
            flush=True,
        )


if __name__ == "__main__":
    main()
