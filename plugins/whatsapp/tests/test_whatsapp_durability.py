"""Nothing Meta was told we have is lost: the runner is killed (SIGKILL) in the middle of
a burst of signed webhooks, started again on the same database, and every message whose
webhook was answered 200 ends up on a timeline, once."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import sqlalchemy as sa

from switchboard.store import Store, interaction_t
from switchboard_whatsapp import WEBHOOK_PATH
from switchboard_whatsapp.testing import (
    graph_api,
    signature,
    start_runner,
    text_message,
    webhook_body,
)


def stored_ids(db: str) -> list[str]:
    store = Store(db)
    try:
        with store.read() as conn:
            return list(conn.execute(sa.select(interaction_t.c.external_id)).scalars())
    finally:
        store.close()


def test_a_killed_runner_loses_no_acknowledged_message(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'wa.db'}"
    n = 400
    acknowledged: list[str] = []
    lock = threading.Lock()
    with graph_api() as graph:
        proc, url = start_runner(tmp_path, graph.url, db)

        def post(i: int) -> None:
            ident = f"wamid.K{i:05d}"
            body = webhook_body(messages=[text_message(f"1202555{i % 50:04d}", f"m{i}", ident)])
            try:
                r = httpx.post(
                    url + WEBHOOK_PATH,
                    content=body,
                    headers={"X-Hub-Signature-256": signature(body)},
                    timeout=10,
                )
            except httpx.TransportError:
                return  # the runner died first: Meta would send it again
            if r.status_code == 200:
                with lock:
                    acknowledged.append(ident)

        def kill_midway() -> None:
            deadline = time.monotonic() + 30
            while len(acknowledged) < n // 4 and time.monotonic() < deadline:
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)

        killer = threading.Thread(target=kill_midway)
        killer.start()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(post, range(n)))
        killer.join()
        proc.wait(10)
        assert n // 4 <= len(acknowledged) < n  # killed in the middle of the burst
        again, _ = start_runner(tmp_path, graph.url, db)
        try:
            deadline = time.monotonic() + 30
            while not set(acknowledged) <= set(stored_ids(db)):
                assert time.monotonic() < deadline, "acknowledged messages were lost"
                time.sleep(0.1)
            ids = stored_ids(db)
            assert len(ids) == len(set(ids))  # each stored once
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(20)
