"""Test fixtures: a loopback stand-in for the gateway, following the contract in README.md."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator
from typing import Any

import pytest

# switchboard.testing's fixtures (switchboard_store, db_url, open_sb...) are opt-in.
pytest_plugins = ["switchboard.testing"]


class Gateway:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refuse: list[tuple[int, dict[str, str]]] = []
        ids = itertools.count(1)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if outer.refuse:
                    status, headers = outer.refuse.pop(0)
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                outer.sent.append({**body, "auth": self.headers["authorization"]})
                data = json.dumps({"id": f"gw-{next(ids)}"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    yield gw
    gw.close()
