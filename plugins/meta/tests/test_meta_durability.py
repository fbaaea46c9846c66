"""Nothing Meta was told we have is lost: the runner is killed (SIGKILL) in the middle of
a burst of signed Messenger webhooks, started again on the same database, and every
message whose webhook was answered 200 ends up on a timeline, once."""

from __future__ import annotations

from pathlib import Path

import httpx

from switchboard.testing import kill_during_burst
from switchboard_meta import WEBHOOK_PATH
from switchboard_meta.testing import meta_graph, signature, start_runner, text_event, webhook_body


def test_a_killed_runner_loses_no_acknowledged_message(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'meta.db'}"

    def deliver(url: str, i: int) -> str | None:
        ident = f"m_K{i:05d}"
        body = webhook_body([text_event(f"60000000000{i % 50:04d}", f"m{i}", mid=ident)])
        answer = httpx.post(
            url + WEBHOOK_PATH,
            content=body,
            headers={"X-Hub-Signature-256": signature(body)},
            timeout=10,
        )
        return ident if answer.status_code == 200 else None

    with meta_graph() as graph:
        kill_during_burst(lambda: start_runner(tmp_path, graph.url, db), deliver, db)
