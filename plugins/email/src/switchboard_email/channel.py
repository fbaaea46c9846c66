"""The email channel: SMTP out through a pool of aiosmtplib connections, IMAP in.

Outbound: each message gets its own Message-ID, which becomes the interaction's external
id, so a reply (In-Reply-To / References) finds the message it answers. An SMTP 4xx reply
is retried by the outbox, a 5xx fails the message with the server's reply.

Inbound: the mailbox is read over IMAP (IDLE where the server has it, polling otherwise).
A message that was stored gets the IMAP keyword ``$SwitchboardStored``, so the mailbox is
never read again from scratch and a person reading the mail (``\\Seen``) changes nothing.
A message that cannot be stored at all (no From) is logged with the reason and flagged,
so one bad message never stops the others. A delivery-status notification marks the
original message ``failed`` (bounced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

import aioimaplib
import aiosmtplib
import attrs

from switchboard import (
    AddressError,
    Backoff,
    ChannelContext,
    InboundMessage,
    InteractionKind,
    InvalidInbound,
    OutboundMessage,
    PermanentSendError,
    Receipt,
    TransientSendError,
    new_file_path,
)
from switchboard_email.mime import parse

log = logging.getLogger("switchboard.channel.email")

STORED_FLAG = "$SwitchboardStored"


@attrs.define
class EmailSettings:
    """``[plugins.email]``."""

    from_address: str
    smtp_host: str
    from_name: str | None = None
    smtp_port: int = 587
    smtp_security: str = attrs.field(default="starttls")
    smtp_username: str | None = None
    smtp_password: str | None = attrs.field(default=None, repr=False)
    smtp_timeout: float = 30.0
    smtp_pool_size: int = 4
    tls_verify: bool = True
    tls_ca_file: str | None = None
    imap_host: str | None = None
    imap_port: int = 993
    imap_security: str = attrs.field(default="tls")
    imap_username: str | None = None
    imap_password: str | None = attrs.field(default=None, repr=False)
    imap_mailbox: str = "INBOX"
    imap_poll_interval: float = 30.0
    attachments_dir: str = "email-files"
    max_attachment_bytes: int = 10 * 1024 * 1024

    @smtp_security.validator
    def _smtp(self, _: Any, value: str) -> None:
        if value not in ("starttls", "tls", "none"):
            raise ValueError(f"smtp_security must be 'starttls', 'tls' or 'none', got {value!r}")

    @imap_security.validator
    def _imap(self, _: Any, value: str) -> None:
        if value not in ("tls", "none"):
            raise ValueError(f"imap_security must be 'tls' or 'none', got {value!r}")

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if not self.tls_verify:  # explicitly asked for: a lab server with a private cert
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class SmtpPool:
    """Up to ``size`` open SMTP connections, each used by one send at a time."""

    def __init__(self, s: EmailSettings) -> None:
        self.s = s
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(s.smtp_pool_size)
        self._all: set[aiosmtplib.SMTP] = set()

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.s
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout,
            use_tls=s.smtp_security == "tls",
            start_tls=s.smtp_security == "starttls",
            tls_context=s.tls_context() if s.smtp_security != "none" else None,
            validate_certs=s.tls_verify,
        )
        await client.connect()
        if s.smtp_username:
            await client.login(s.smtp_username, s.smtp_password or "")
        self._all.add(client)
        return client

    async def send(self, message: EmailMessage) -> None:
        async with self._slots:
            try:
                client = self._idle.get_nowait()
            except asyncio.QueueEmpty:
                client = await self._connect()
            try:
                if not client.is_connected:
                    raise aiosmtplib.SMTPServerDisconnected("closed while idle")
                await client.send_message(message)
            except aiosmtplib.SMTPServerDisconnected:
                self._all.discard(client)
                client = await self._connect()  # one fresh try on a new connection
                await client.send_message(message)
            except BaseException:
                self._all.discard(client)
                with contextlib.suppress(Exception):
                    client.close()
                raise
            self._idle.put_nowait(client)

    async def close(self) -> None:
        for client in list(self._all):
            with contextlib.suppress(Exception):
                await client.quit()
        self._all.clear()


class EmailChannel:
    name = "email"
    address_kind = "email"

    @property
    def max_concurrency(self) -> int:
        """The outbox sends as many messages at once as the SMTP pool has connections."""
        return self.s.smtp_pool_size if self.s is not None else 1

    def __init__(self) -> None:
        self.ctx: ChannelContext | None = None
        self.s: EmailSettings | None = None
        self.pool: SmtpPool | None = None
        self._imap: aioimaplib.IMAP4 | None = None
        self._first: aioimaplib.IMAP4 | None = None  # start()'s login, for the reader
        # bumped by start() and stop(): a reader reads while it is the one it began with
        self._run = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, ctx: ChannelContext) -> None:
        self._run += 1
        self.ctx, self.s = ctx, ctx.settings
        assert self.s is not None
        ctx.files_dir(self.s.attachments_dir)  # the runner serves the attachments kept there
        try:
            ctx.address(self.s.from_address)
        except AddressError as exc:
            raise ValueError(f"from_address: {exc}") from None
        self.pool = SmtpPool(self.s)
        if self.s.imap_host:
            # a wrong password fails start-up, not later; the reader runs on one runner of
            # several (the mailbox's flags say what was read) and takes this connection
            self._first = await self._imap_login()
            ctx.supervise("imap", self._read_mailbox, one_runner=True)

    async def stop(self) -> None:
        # The reader ends on this too: a cancellation can be lost inside wait_for (CPython
        # 3.11), and it must not go on reading a mailbox after stop(), even once the
        # channel has started again.
        self._run += 1
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        self._drop_imap()

    def _drop_imap(self) -> None:
        """Close the IMAP connection at once (its reader task is cancelled by then)."""
        imap, self._imap = self._imap, None
        transport = getattr(getattr(imap, "protocol", None), "transport", None)
        if transport is not None:
            transport.close()

    # -- outbound -------------------------------------------------------------------------

    def build(self, message: OutboundMessage) -> EmailMessage:
        assert self.s is not None
        domain = self.s.from_address.rpartition("@")[2]
        mail = EmailMessage()
        mail["From"] = formataddr((self.s.from_name or "", self.s.from_address))
        mail["To"] = message.address.value
        mail["Subject"] = message.subject or ""
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = make_msgid(domain=domain)
        replying_to = message.payload.get("in_reply_to")
        if replying_to:
            mail["In-Reply-To"] = replying_to
            refs = str(message.payload.get("references") or "").split()
            mail["References"] = " ".join([*refs, replying_to] if replying_to not in refs else refs)
        unsubscribe = message.payload.get("list_unsubscribe")
        if unsubscribe:  # a mailing: RFC 2369 and RFC 8058 one-click
            mail["List-Unsubscribe"] = f"<{unsubscribe}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(message.text or "")
        html = message.payload.get("html")
        if html:
            mail.add_alternative(str(html), subtype="html")
        return mail

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.pool is None:
            raise TransientSendError("the email channel is not running")
        mail = self.build(message)
        try:
            await self.pool.send(mail)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            text = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
            if all(400 <= c < 500 for c in codes):
                raise TransientSendError(f"SMTP: {text}") from None
            raise PermanentSendError(f"SMTP refused the recipient: {text}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise TransientSendError(f"SMTP {exc.code} {exc.message}") from None
            raise PermanentSendError(f"SMTP {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientSendError(f"SMTP server unreachable: {exc}") from None
        return Receipt(external_id=str(mail["Message-ID"]))

    # -- inbound --------------------------------------------------------------------------

    async def _imap_login(self) -> aioimaplib.IMAP4:
        s = self.s
        assert s is not None
        assert s.imap_host
        if s.imap_security == "tls":
            imap: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
                host=s.imap_host, port=s.imap_port, ssl_context=s.tls_context()
            )
        else:
            imap = aioimaplib.IMAP4(host=s.imap_host, port=s.imap_port)
        self._imap = imap
        await imap.wait_hello_from_server()
        response = await imap.login(s.imap_username or s.from_address, s.imap_password or "")
        if response.result != "OK":
            with contextlib.suppress(Exception):
                await imap.logout()
            raise PermissionError(f"IMAP login refused: {_lines(response)}")
        response = await imap.select(s.imap_mailbox)
        if response.result != "OK":
            raise ValueError(f"IMAP mailbox {s.imap_mailbox!r}: {_lines(response)}")
        return imap

    async def _read_mailbox(self) -> None:
        """Read new mail forever; reconnect with backoff when the server drops us."""
        backoff = Backoff(initial=1.0, cap=60.0)
        imap, self._first = self._first, None
        run = self._run
        while self._run == run:
            try:
                if imap is None:
                    imap = await self._imap_login()
                backoff.succeeded()
                await self._session(imap, run)
            except (OSError, TimeoutError, aioimaplib.Abort, aioimaplib.CommandTimeout) as exc:
                if self._run != run:  # stop() closed the connection under us
                    return  # (and another start's reader may hold self._imap now)
                self._drop_imap()
                imap = None
                delay = backoff.failed()
                log.warning("IMAP connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _session(self, imap: aioimaplib.IMAP4, run: int) -> None:
        assert self.s is not None
        idle = imap.has_capability("IDLE")
        while self._run == run:
            await self.fetch_new(imap)
            if idle:
                waiter = await imap.idle_start(timeout=self.s.imap_poll_interval)
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await imap.wait_server_push(timeout=self.s.imap_poll_interval)
                imap.idle_done()
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(waiter, 5)
            else:
                await asyncio.sleep(self.s.imap_poll_interval)

    async def fetch_new(self, imap: aioimaplib.IMAP4) -> int:
        """Store every message not flagged as stored yet; return how many were read."""
        found = await imap.uid_search(f"UNKEYWORD {STORED_FLAG}")
        if found.result != "OK":
            raise aioimaplib.Abort(f"UID SEARCH failed: {_lines(found)}")
        uids = [u for line in found.lines[:1] for u in line.decode().split() if u.isdigit()]
        for uid in uids:
            fetched = await imap.uid("fetch", uid, "(BODY.PEEK[])")
            raw = _literal(fetched.lines)
            if raw is None:
                log.error("IMAP UID %s: no message body in the answer; skipped", uid)
            else:
                await self._store(uid, raw)
            await imap.uid("store", uid, f"+FLAGS ({STORED_FLAG})")
        return len(uids)

    async def _store(self, uid: str, raw: bytes) -> None:
        """Store one message; one that cannot be stored is quarantined with the reason.
        Only a failure of the store itself (``ctx.receive`` raising anything but
        :class:`InvalidInbound`) propagates: the message stays unflagged and comes again."""
        assert self.ctx is not None
        assert self.s is not None
        fallback_id = f"imap-uid:{self.s.imap_mailbox}:{uid}"
        try:
            parsed = await asyncio.to_thread(parse, raw)
        except Exception as exc:  # a message our parser cannot read must not stop the reader
            await self.ctx.quarantine(fallback_id, f"unreadable: {type(exc).__name__}: {exc}", raw)
            return
        if parsed.bounce_of:
            failed = await self.ctx.failed_later(
                parsed.bounce_of, f"bounced: {parsed.bounce_reason}"
            )
            log.info(
                "bounce for %s: %s",
                parsed.bounce_of,
                "marked failed" if failed else "no such message sent here",
            )
            return
        external_id = parsed.message_id or fallback_id
        if not parsed.sender:
            await self.ctx.quarantine(
                external_id, "no From address: nobody to attribute it to", raw
            )
            return
        if await asyncio.to_thread(self.ctx.find_sent, external_id) is not None:
            return  # stored before (read again after a crash): no second copy of its files
        meta: dict[str, Any] = {"imap_uid": uid}
        if parsed.problems:
            meta["problems"] = list(parsed.problems)
        for ref in reversed(parsed.in_reply_to):  # the last reference is the direct parent
            original = await asyncio.to_thread(self.ctx.find_sent, ref)
            if original is not None:
                meta["in_reply_to_interaction"] = original.id
                break
        if parsed.attachments:
            meta["attachments"] = await asyncio.to_thread(self._save, parsed)
        try:
            await self.ctx.receive(
                InboundMessage(
                    external_id=external_id,
                    sender=f"email:{parsed.sender}",
                    text=parsed.text,
                    subject=parsed.subject,
                    kind=InteractionKind.EMAIL,
                    sender_name=parsed.sender_name,
                    meta=meta,
                )
            )
        except InvalidInbound as exc:
            await self.ctx.quarantine(external_id, str(exc), raw)

    def _save(self, parsed: Any) -> list[dict[str, Any]]:
        """Keep the attachments: each under a fresh folder of our own, with a cleaned name
        (the sender's file name is never a path)."""
        assert self.s is not None
        assert self.ctx is not None
        folder = self.ctx.files_dir(self.s.attachments_dir)
        saved = []
        for a in parsed.attachments:
            info: dict[str, Any] = {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": len(a.data),
            }
            if len(a.data) > self.s.max_attachment_bytes:
                info["skipped"] = (
                    f"larger than max_attachment_bytes ({self.s.max_attachment_bytes})"
                )
            else:
                try:
                    path = new_file_path(folder, a.filename, fallback="attachment")
                    path.write_bytes(a.data)
                    info["path"] = str(path)
                except (OSError, ValueError) as exc:  # disk full, a refused path: keep the mail
                    info["error"] = f"not saved: {exc}"
            saved.append(info)
        return saved


def _lines(response: Any) -> str:
    return " ".join(
        x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in response.lines
    )


def _literal(lines: list[Any]) -> bytes | None:
    """The message bytes in an aioimaplib FETCH answer (the literal after the header)."""
    for line in lines:
        if (
            isinstance(line, bytearray | bytes)
            and len(line) > 0
            and not line.startswith(b"*")
            and not line.startswith(b")")
            and b"FETCH" not in line[:40]
        ):
            return bytes(line)
    return None
