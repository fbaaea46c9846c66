"""Real mail servers for the email tests: Dovecot (IMAP) and aiosmtpd (SMTP) on loopback."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from switchboard.testing import free_port, missing_tool

DOVECOT_CONF = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# imap-login refuses to run as root, and mail may not be read as uid 0:
default_login_user = dovenull
default_internal_user = dovecot
default_internal_group = dovecot
first_valid_uid = 100
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/mail/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class Dovecot:
    def __init__(self, port: int, user: str, password: str, root: Path) -> None:
        self.host, self.port, self.user, self.password, self.root = (
            "127.0.0.1",
            port,
            user,
            password,
            root,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.root / "dovecot.conf"), "-F"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = self.root / "dovecot.log"
                    raise RuntimeError(
                        "dovecot did not start: " + (log.read_text() if log.exists() else "no log")
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
            deadline = time.monotonic() + 10
            while True:  # the port is free again before a restart
                try:
                    socket.create_connection((self.host, self.port), timeout=0.2).close()
                except OSError:
                    return
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)

    def append(self, raw: bytes) -> None:
        """Drop a message into the inbox, as a delivery would."""
        imap = imaplib.IMAP4(self.host, self.port)
        try:
            imap.login(self.user, self.password)
            result = imap.append("INBOX", None, None, raw)
            assert result[0] == "OK", result
        finally:
            imap.logout()

    def flagged(self) -> int:
        imap = imaplib.IMAP4(self.host, self.port)
        try:
            imap.login(self.user, self.password)
            imap.select("INBOX")
            _, data = imap.search(None, "KEYWORD", "$SwitchboardStored")
            return len(data[0].split())
        finally:
            imap.logout()


@contextmanager
def dovecot_server() -> Iterator[Dovecot]:
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        missing_tool("Dovecot is needed: scripts/system-deps (apt-get install dovecot-imapd)")
    if os.geteuid() != 0:
        pytest.skip("Dovecot switches to its own users: run the email tests as root")
    try:
        dovecot_uid = pwd.getpwnam("dovecot")
    except KeyError:
        missing_tool("the dovecot user is needed: apt-get install dovecot-imapd")
    # pytest's tmp folders are 0700: Dovecot's users must be able to traverse this one.
    root = Path(tempfile.mkdtemp(prefix="sb-dovecot-", dir="/tmp"))
    root.chmod(0o755)
    port = free_port()
    (root / "dovecot.conf").write_text(DOVECOT_CONF.format(root=root, port=port))
    (root / "users").write_text("crm@example.com:{PLAIN}mailbox-secret::::::\n")
    (root / "mail").mkdir()
    os.chown(root / "mail", dovecot_uid.pw_uid, dovecot_uid.pw_gid)
    server = Dovecot(port, "crm@example.com", "mailbox-secret", root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class Recorder:
    """aiosmtpd handler: keeps each message; ``refuse`` answers the next RCPTs."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.refuse: list[str] = []
        self.sessions: set[int] = set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self.sessions.add(id(session))
        if self.refuse:
            return self.refuse.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted"


@contextmanager
def smtp_server(tls: str = "starttls") -> Iterator[tuple[Recorder, int, Path]]:
    """aiosmtpd on loopback with a certificate from a throwaway CA; yields the recorder,
    the port and the CA file a client must trust."""
    import ssl

    import trustme
    from aiosmtpd.controller import Controller

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    folder = Path(tempfile.mkdtemp(prefix="sb-smtp-"))
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    recorder = Recorder()
    port = free_port()
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port}
    if tls == "starttls":
        kwargs.update(tls_context=server_ctx, require_starttls=True)
    elif tls == "tls":
        kwargs.update(ssl_context=server_ctx)
    controller = Controller(recorder, **kwargs)
    controller.start()
    try:
        yield recorder, port, ca_file
    finally:
        controller.stop()
        shutil.rmtree(folder, ignore_errors=True)
