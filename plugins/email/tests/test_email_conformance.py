"""The email channel passes the channel conformance suite (aiosmtpd + Dovecot)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from email_servers import Dovecot, Recorder, dovecot_server, smtp_server
from test_email_channel import email_plugin

from switchboard import Switchboard
from switchboard.conformance import ChannelConformance
from switchboard.testing import open_switchboard


class TestEmailConformance(ChannelConformance):
    recorder: Recorder
    imap: Dovecot

    @pytest.fixture(autouse=True)
    def _servers(self) -> Iterator[None]:
        with smtp_server("starttls") as (recorder, port, ca), dovecot_server() as imap:
            self.recorder, self.port, self.ca, self.imap = recorder, port, ca, imap
            yield

    async def open(self, folder: Path) -> Switchboard:
        return await open_switchboard(
            folder,
            email_plugin(),
            config={
                "plugins": {
                    "email": {
                        "from_address": "sales@example.com",
                        "smtp_host": "127.0.0.1",
                        "smtp_port": self.port,
                        "tls_ca_file": str(self.ca),
                        "imap_host": self.imap.host,
                        "imap_port": self.imap.port,
                        "imap_security": "none",
                        "imap_username": self.imap.user,
                        "imap_password": self.imap.password,
                        "imap_poll_interval": 0.3,
                    }
                }
            },
        )

    async def deliver_inbound(self, sb: Switchboard, external_id: str, text: str) -> None:
        self.imap.append(
            f"From: c@example.net\r\nMessage-ID: <{external_id}@example.net>\r\n"
            f"Subject: conformance\r\n\r\n{text}\r\n".encode()
        )

    async def deliver_hostile(self, sb: Switchboard, external_id: str) -> None:
        # no From (nobody to attribute it to) and an attachment named "..": quarantined
        self.imap.append(
            f"Message-ID: <{external_id}@example.net>\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
            'Content-Disposition: attachment; filename=".."\r\n\r\nx\r\n--B--\r\n'.encode()
        )

    def address(self) -> str:
        return "email:c@example.net"

    async def refuse_next_send(self) -> None:
        self.recorder.refuse.append("550 5.7.1 Refused")
