"""The email channel against real servers: aiosmtpd (SMTP) and Dovecot (IMAP)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from email_servers import Dovecot, Recorder, dovecot_server, smtp_server

from switchboard import Address, InteractionStatus, OutboundMessage, Switchboard
from switchboard.store import interaction_t
from switchboard.testing import LoopbackPlugin, open_switchboard
from switchboard_email.channel import EmailChannel, EmailSettings
from switchboard_mailings import MailingsPlugin


def email_plugin() -> LoopbackPlugin:
    """A fresh email channel registered with its settings class."""
    return LoopbackPlugin(EmailChannel(), plugin_name="email", settings=EmailSettings)


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, int, Path]]:
    with smtp_server("starttls") as server:
        yield server


@pytest.fixture
def imap() -> Iterator[Dovecot]:
    with dovecot_server() as server:
        yield server


class Mail:
    def __init__(self, tmp_path: Path, smtp: tuple[Recorder, int, Path]) -> None:
        self.tmp_path, (self.recorder, self.port, self.ca) = tmp_path, smtp
        self.opened: list[Switchboard] = []

    async def open(
        self,
        imap: Dovecot | None = None,
        core: dict[str, Any] | None = None,
        *more_plugins: object,
        plugins_config: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Switchboard:
        settings: dict[str, Any] = {
            "from_address": "sales@example.com",
            "from_name": "Acme Sales",
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_security": "starttls",
            "tls_ca_file": str(self.ca),
            "smtp_pool_size": 2,
            "smtp_timeout": 5,
        }
        if imap is not None:
            settings.update(
                imap_host=imap.host,
                imap_port=imap.port,
                imap_security="none",
                imap_username=imap.user,
                imap_password=imap.password,
                imap_poll_interval=0.5,
            )
        settings.update(extra)
        folder = self.tmp_path / f"sb{len(self.opened)}"
        folder.mkdir(exist_ok=True)
        sb = await open_switchboard(
            folder,
            email_plugin(),
            *more_plugins,
            config={
                "switchboard": {
                    "database_url": f"sqlite:///{self.tmp_path / 'store.db'}",
                    "outbox": {"backoff_initial": 0.05, "max_attempts": 3},
                    **(core or {}),
                },
                "plugins": {"email": settings, **(plugins_config or {})},
            },
        )
        self.opened.append(sb)
        return sb


@pytest.fixture
async def mail(tmp_path: Path, smtp: tuple[Recorder, int, Path]) -> AsyncIterator[Mail]:
    m = Mail(tmp_path, smtp)
    yield m
    for sb in m.opened:
        await sb.close()


async def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return value


async def drain(sb: Switchboard) -> None:
    deadline = time.monotonic() + 15
    while sb.outbox.depth():
        assert time.monotonic() < deadline
        if not await sb.outbox.process_due():
            await asyncio.sleep(0.05)


def reply_to(
    message_id: str, sender: str = "olga@romashka.ru", body: str = "Yes, please!", extra: str = ""
) -> bytes:
    return (
        f"From: Olga <{sender}>\r\nTo: sales@example.com\r\nSubject: Re: Offer\r\n"
        f"Message-ID: <reply-{abs(hash(message_id))}@romashka.ru>\r\n"
        f"In-Reply-To: {message_id}\r\nReferences: {message_id}\r\n{extra}"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


async def test_send_over_starttls_with_a_message_id(mail: Mail) -> None:
    sb = await mail.open()
    queued = await sb.outbox.enqueue(
        "email",
        address="Olga@Romashka.RU",
        subject="Offer",
        text="Here is our offer.",
        payload={"html": "<p>Offer</p>"},
    )
    await drain(sb)
    [envelope] = mail.recorder.messages
    assert envelope.mail_from == "sales@example.com"
    assert envelope.rcpt_tos == ["olga@romashka.ru"]
    msg = message_from_bytes(envelope.content, policy=default_policy)
    assert msg["From"] == "Acme Sales <sales@example.com>"
    assert msg["Subject"] == "Offer"
    assert msg.get_body(("plain",)).get_content().strip() == "Here is our offer."
    assert msg.get_body(("html",)).get_content().strip() == "<p>Offer</p>"
    stored = sb.store.get_interaction(queued.id)
    assert stored is not None and stored.status is InteractionStatus.SENT
    assert stored.external_id == msg["Message-ID"]
    assert stored.external_id.endswith("@example.com>")


async def test_certificates_are_checked_by_default(mail: Mail) -> None:
    sb = await mail.open(tls_ca_file=None)  # the system CAs do not know the test CA
    queued = await sb.outbox.enqueue("email", address="olga@romashka.ru", subject="x", text="x")
    await drain(sb)
    failed = sb.store.get_interaction(queued.id)
    assert failed is not None and failed.status is InteractionStatus.FAILED
    assert "CERTIFICATE_VERIFY_FAILED" in (failed.error or "")
    assert mail.recorder.messages == []


async def test_4xx_is_retried_and_5xx_fails_with_the_reply(mail: Mail) -> None:
    sb = await mail.open()
    mail.recorder.refuse = ["450 4.2.1 Mailbox busy, try later"]
    later = await sb.outbox.enqueue("email", address="busy@example.org", subject="a", text="a")
    await drain(sb)
    stored = sb.store.get_interaction(later.id)
    assert stored is not None and stored.status is InteractionStatus.SENT
    mail.recorder.refuse = ["550 5.1.1 No such user here"]
    never = await sb.outbox.enqueue("email", address="nobody@example.org", subject="b", text="b")
    await drain(sb)
    failed = sb.store.get_interaction(never.id)
    assert failed is not None and failed.status is InteractionStatus.FAILED
    assert failed.error == "SMTP refused the recipient: 550 5.1.1 No such user here"


async def test_a_pool_of_connections(mail: Mail) -> None:
    sb = await mail.open(smtp_pool_size=2)
    channel = sb.channels["email"].channel
    messages = [
        OutboundMessage(
            interaction_id=i,
            channel="email",
            address=Address("email", f"c{i}@example.org"),
            text="t",
            subject="s",
            payload={},
            attempt=1,
            contact_id=0,
        )
        for i in range(12)
    ]
    receipts = await asyncio.gather(*(channel.send(m) for m in messages))
    assert len({r.external_id for r in receipts}) == 12  # a Message-ID each
    assert len(mail.recorder.messages) == 12
    assert len(mail.recorder.sessions) == 2  # 12 sends at once over 2 connections


async def test_inbound_replies_bounces_and_bad_mail(mail: Mail, imap: Dovecot, caplog: Any) -> None:
    sb = await mail.open(imap, max_attachment_bytes=100)
    offer = await sb.outbox.enqueue(
        "email", address="olga@romashka.ru", subject="Offer", text="Our offer"
    )
    lost = await sb.outbox.enqueue(
        "email", address="gone@romashka.ru", subject="Offer", text="Our offer"
    )
    await drain(sb)
    offer_id = sb.store.get_interaction(offer.id).external_id
    lost_id = sb.store.get_interaction(lost.id).external_id

    imap.append(reply_to(offer_id))
    imap.append(reply_to(offer_id))  # the same message twice: stored once
    imap.append(
        b"From: Ivan <ivan@example.net>\r\nSubject: =?koi8-r?B?8NLJ18XU?=\r\n"
        b"Message-ID: <koi@example.net>\r\nContent-Type: text/plain; charset=x-unknown-8bit\r\n"
        b"\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n"
    )
    imap.append(b"Subject: who am I\r\nMessage-ID: <nofrom@example.net>\r\n\r\nno sender\r\n")
    imap.append(
        b"From: Petr <petr@example.net>\r\nSubject: files\r\nMessage-ID: <att@example.net>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        b"filename=small.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        b"filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"QUFB" * 100
        + b"\r\n--B--\r\n"
    )
    imap.append(
        b"From: MAILER-DAEMON@romashka.ru\r\nSubject: Undelivered Mail\r\n"
        b"Message-ID: <dsn-1@romashka.ru>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
        b"--R\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; romashka.ru"
        b"\r\n\r\nFinal-Recipient: rfc822; gone@romashka.ru\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <gone@romashka.ru>:\r\n"
        b"    Recipient address rejected:\r\n\tUser unknown\r\n"  # folded, as Postfix does
        b"--R\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: "
        + lost_id.encode()
        + b"\r\nSubject: Offer\r\n--R--\r\n"
    )

    await until(lambda: imap.flagged() == 6, timeout=20)
    olga = sb.store.find_contact(Address("email", "olga@romashka.ru"))
    assert olga is not None
    items = sb.store.timeline(olga.id or 0)
    replies = [i for i in items if i.direction.value == "inbound"]
    assert len(replies) == 1
    assert replies[0].text == "Yes, please!"
    assert replies[0].meta["in_reply_to_interaction"] == offer.id

    ivan = sb.store.find_contact(Address("email", "ivan@example.net"))
    assert ivan is not None
    [koi] = sb.store.timeline(ivan.id or 0)
    assert koi.subject == "Привет"
    assert koi.text  # read with replacements rather than lost
    assert any("charset" in p for p in koi.meta["problems"])

    petr = sb.store.find_contact(Address("email", "petr@example.net"))
    assert petr is not None
    [att] = sb.store.timeline(petr.id or 0)
    small, big = att.meta["attachments"]
    assert Path(small["path"]).read_bytes() == b"%PDF-1.4"
    assert big["skipped"].startswith("larger than") and "path" not in big

    bounced = sb.store.get_interaction(lost.id)
    assert bounced is not None and bounced.status is InteractionStatus.FAILED
    assert bounced.error == (
        "bounced: status 5.1.1 smtp; 550 5.1.1 <gone@romashka.ru>: Recipient address "
        "rejected: User unknown"
    )
    assert "<nofrom@example.net> quarantined: no From address" in caplog.text
    assert sb.store.find_interaction("email", "<nofrom@example.net>") is None
    assert [q.external_id for q in sb.quarantine.list("email")] == ["<nofrom@example.net>"]

    count = sb.store.count(interaction_t)
    await sb.stop_channels()  # a restart does not read the mailbox again
    imap.append(
        reply_to(offer_id, body="One more thing", extra="X-Test: new\r\n").replace(
            b"<reply-", b"<reply2-"
        )
    )
    sb2 = await mail.open(imap)
    await until(lambda: imap.flagged() == 7, timeout=20)
    assert sb2.store.count(interaction_t) == count + 1


async def test_imap_server_restart_is_survived(mail: Mail, imap: Dovecot) -> None:
    sb = await mail.open(imap)
    imap.append(reply_to("<none@x>", sender="a@example.net"))
    await until(lambda: sb.store.count(interaction_t) == 1, timeout=20)
    imap.stop()
    await asyncio.sleep(1)
    imap.start()
    imap.append(reply_to("<none2@x>", sender="b@example.net", body="after the restart"))
    await until(lambda: sb.store.count(interaction_t) == 2, timeout=30)
    assert sb.channels["email"].state.value == "running"


async def test_the_outbox_sends_over_the_whole_pool(mail: Mail) -> None:
    """The outbox runs as many sends at once as the channel's SMTP pool has connections."""
    sb = await mail.open(smtp_pool_size=3)
    assert sb.channels["email"].channel.max_concurrency == 3
    queued = [
        await sb.outbox.enqueue("email", address=f"p{i}@example.org", subject="s", text="t")
        for i in range(12)
    ]
    await drain(sb)
    assert all(
        sb.store.get_interaction(q.id).status is InteractionStatus.SENT  # type: ignore[union-attr]
        for q in queued
    )
    assert len(mail.recorder.messages) == 12
    assert len(mail.recorder.sessions) == 3  # one by one would have used one connection


async def test_a_mailing_carries_one_click_unsubscribe_and_counts_replies_and_bounces(
    mail: Mail, imap: Dovecot
) -> None:
    mailings = MailingsPlugin()
    sb = await mail.open(
        imap,
        {
            "templates": {
                "news": {
                    "subject": "News for {{ contact.name }}",
                    "text": "Hello {{ contact.name }}",
                    "html": '<p>Hello</p><a href="https://example.com/a">a</a>',
                }
            }
        },
        mailings,
        plugins_config={
            "mailings": {
                "public_url": "https://crm.example.com",
                "link_secret": "a-secret-of-twenty-chars",
            }
        },
    )
    service = mailings.mailings
    assert service is not None
    olga = await sb.create_contact("Olga", [Address("email", "olga@romashka.ru")])
    gone = await sb.create_contact("Gone", [Address("email", "gone@romashka.ru")])
    await service.change_list("news", [olga.id or 0, gone.id or 0], [])
    created = await service.create(name="N1", channel="email", template="news", audience="news")
    await drain(sb)
    assert len(mail.recorder.messages) == 2
    raw = mail.recorder.messages[0].content.decode()
    assert "List-Unsubscribe: <https://crm.example.com/t/" in raw
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    assert "/open.gif" in raw  # the open pixel in the HTML part
    sent = {str(i.address): i for c in (olga, gone) for i in sb.store.timeline(c.id or 0)}
    imap.append(reply_to(sent["email:olga@romashka.ru"].external_id or ""))
    imap.append(
        b"From: MAILER-DAEMON@romashka.ru\r\nSubject: Undelivered Mail\r\n"
        b"Message-ID: <dsn-9@romashka.ru>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
        b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; gone@romashka.ru\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"--R\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: "
        + (sent["email:gone@romashka.ru"].external_id or "").encode()
        + b"\r\n--R--\r\n"
    )
    for _ in range(400):
        stats = await service.stats(created["id"])
        if stats["replied"] == 1 and stats["bounced"] == 1:
            break
        await asyncio.sleep(0.05)
    assert (stats["sent"], stats["failed"], stats["total"]) == (1, 1, 2)
    config = mail.tmp_path / "cli.toml"
    config.write_text(f'[switchboard]\ndatabase_url = "sqlite:///{mail.tmp_path / "store.db"}"\n')
    exe = Path(sys.executable).with_name("switchboard")
    out = await asyncio.to_thread(
        subprocess.run,
        [exe, "mailings", "status", str(created["id"]), "-c", config, "--once"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "N1 (2 recipients)" in out.stdout
    assert "total 2, skipped 0, queued 0, sent 1, failed 1, bounced 1" in out.stdout
    assert "replied 1" in out.stdout


def _attachment(name_header: str, body: bytes = b"PAYLOAD") -> bytes:
    import base64

    return (
        b"--B\r\nContent-Type: application/octet-stream\r\n"
        + name_header.encode()
        + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(body)
        + b"\r\n"
    )


def _hostile_mail(message_id: str, sender: str, *parts: bytes) -> bytes:
    return (
        (
            f"From: <{sender}>\r\nTo: sales@example.com\r\nSubject: hostile\r\n"
            f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=B\r\n\r\n"
            "--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        ).encode()
        + b"".join(parts)
        + b"--B--\r\n"
    )


async def test_hostile_mail_writes_only_inside_its_folder_and_never_stops_the_reader(
    mail: Mail, imap: Dovecot
) -> None:
    """Found by an outside review: Message-ID ``<..>`` made the attachment folder the
    config folder, a file named ``switchboard.toml`` replaced the config, and a name the
    file system refuses (``..``, over 255 bytes, a NUL) made the reader re-read one
    message forever, so nobody's mail arrived."""
    (mail.tmp_path / "sb0").mkdir()  # the folder of the service's config and files
    config = mail.tmp_path / "sb0" / "switchboard.toml"
    config.write_text("# the operator's config\n")
    long_name = "Коммерческое предложение " * 12 + ".pdf"  # ~600 bytes in UTF-8
    imap.append(
        _hostile_mail(
            "<..>",
            "eve@evil.example",
            _attachment('Content-Disposition: attachment; filename="switchboard.toml"', b"x=1"),
            _attachment('Content-Disposition: attachment; filename=".."'),
            _attachment("Content-Disposition: attachment; filename*=utf-8''" + "a%00b.txt"),
            _attachment(
                "Content-Disposition: attachment; filename*=utf-8''"
                + "".join(f"%{b:02X}" for b in long_name.encode())
            ),
            _attachment('Content-Disposition: attachment; filename="../../../etc/passwd"'),
        )
    )
    imap.append(_hostile_mail("<no-from@x>", "", _attachment("X-None: 1")))
    imap.append(reply_to("<unrelated@x>", sender="olga@romashka.ru", body="after the hostile"))
    sb = await mail.open(imap, attachments_dir="files")
    await until(lambda: imap.flagged() == 3, timeout=20)
    assert sb.channels["email"].state.value == "running"

    assert config.read_text() == "# the operator's config\n"
    eve = sb.store.find_contact(Address("email", "eve@evil.example"))
    assert eve is not None
    [hostile] = sb.store.timeline(eve.id or 0)
    files_root = (mail.tmp_path / "sb0" / "files").resolve()
    saved = hostile.meta["attachments"]
    assert len(saved) == 5
    for info in saved:
        path = Path(info["path"]).resolve()
        assert path.is_relative_to(files_root), path
        assert len(path.name.encode()) <= 150 and "\x00" not in path.name
        assert path.read_bytes() in (b"x=1", b"PAYLOAD")
    assert {Path(i["path"]).name for i in saved} >= {"switchboard.toml", "attachment", "passwd"}
    # everything written lies under the files folder (nothing new beside the config)
    beside = {p.name for p in (mail.tmp_path / "sb0").iterdir()}
    assert beside <= {"files", "recordings", "switchboard.toml"}, beside

    [quarantined] = sb.quarantine.list("email")
    assert quarantined.external_id == "<no-from@x>"
    assert "no From address" in quarantined.reason and "see attached" in (quarantined.raw or "")

    olga = sb.store.find_contact(Address("email", "olga@romashka.ru"))
    assert olga is not None
    assert [i.text for i in sb.store.timeline(olga.id or 0)] == ["after the hostile"]
