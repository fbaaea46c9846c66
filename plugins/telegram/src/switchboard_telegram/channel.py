"""The Telegram channel: a bot's chats on the contacts' timelines.

Inbound: long polling (``getUpdates``) by default, or a webhook route on the runner. An
update is acknowledged to Telegram (the next ``getUpdates`` offset) only after the core has
stored it, so a crash loses nothing; an update delivered twice is stored once, because its
external id (``chat_id:message_id``) is the core's idempotency key.

Outbound: text and documents, paced to Telegram's limits (about 30 messages/s overall,
1/s per chat, 20/min per group); a 429 answer's ``retry_after`` is honoured, and a user who
blocked the bot fails the message with that reason.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
import warnings
from collections import deque
from typing import Any

import attrs
import telegram
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.helpers import escape_markdown
from telegram.warnings import PTBDeprecationWarning

from switchboard import (
    AddressError,
    Backoff,
    ChannelContext,
    InboundMessage,
    Invalid,
    InvalidInbound,
    OutboundMessage,
    PermanentSendError,
    Receipt,
    TransientSendError,
    new_file_path,
)

log = logging.getLogger("switchboard.channel.telegram")

CHAT_TYPES = ("private", "group", "supergroup", "channel")


@attrs.define
class TelegramSettings:
    """``[plugins.telegram]``."""

    token: str = attrs.field(repr=False)
    mode: str = attrs.field(default="polling")
    webhook_url: str | None = None
    webhook_secret: str | None = attrs.field(default=None, repr=False)
    allowed_chat_types: list[str] = attrs.Factory(lambda: ["private"])
    parse_mode: str | None = None
    files_dir: str = "telegram-files"
    max_file_bytes: int = 20 * 1024 * 1024
    poll_timeout: int = 30
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    rate_per_second: float = 30.0
    rate_per_chat_per_second: float = 1.0
    rate_per_group_per_minute: float = 20.0

    @mode.validator
    def _mode(self, _: Any, value: str) -> None:
        if value not in ("polling", "webhook"):
            raise ValueError(f"mode must be 'polling' or 'webhook', got {value!r}")


class RateLimiter:
    """Spaces sends so that no window holds more than its limit (sliding windows)."""

    def __init__(self, settings: TelegramSettings) -> None:
        self.s = settings
        self._global: deque[float] = deque()
        self._chats: dict[int, deque[float]] = {}
        self._lock = asyncio.Lock()

    async def wait(self, chat_id: int) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                delay = max(
                    self._delay(self._global, now, self.s.rate_per_second, 1.0),
                    self._delay(*self._chat_window(chat_id, now)),
                )
                if delay <= 0:
                    self._global.append(now)
                    self._chats.setdefault(chat_id, deque()).append(now)
                    return
                await asyncio.sleep(delay)

    def _chat_window(self, chat_id: int, now: float) -> tuple[deque[float], float, float, float]:
        window = self._chats.setdefault(chat_id, deque())
        if chat_id < 0:  # groups and channels have negative ids
            return window, now, self.s.rate_per_group_per_minute, 60.0
        return window, now, self.s.rate_per_chat_per_second, 1.0

    @staticmethod
    def _delay(window: deque[float], now: float, limit: float, period: float) -> float:
        while window and now - window[0] >= period:
            window.popleft()
        if len(window) < max(1, int(limit * period)):
            return 0.0
        return window[0] + period - now


def _seconds(exc: RetryAfter) -> float:
    """``retry_after`` in seconds: an int in PTB 22, a timedelta later (reading it warns
    about that change, which is not ours to act on)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        retry: Any = exc.retry_after
    return float(retry.total_seconds()) if hasattr(retry, "total_seconds") else float(retry)


def _escape(text: str, parse_mode: str | None) -> str:
    """Outgoing text is the agent's words, not markup: escape it for the parse mode."""
    if parse_mode == "HTML":
        return html.escape(text, quote=False)
    if parse_mode == "MarkdownV2":
        return escape_markdown(text, version=2)
    return text


class TelegramChannel:
    name = "telegram"
    address_kind = "telegram"

    def __init__(self) -> None:
        self.ctx: ChannelContext | None = None
        self.settings: TelegramSettings | None = None
        self.bot: telegram.Bot | None = None
        self.limiter: RateLimiter | None = None
        self.offset = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, ctx: ChannelContext) -> None:
        settings: TelegramSettings = ctx.settings
        self.ctx, self.settings = ctx, settings
        ctx.files_dir(settings.files_dir)  # the runner serves the files kept there
        self.limiter = RateLimiter(settings)
        bot = telegram.Bot(
            settings.token, base_url=settings.base_url, base_file_url=settings.base_file_url
        )
        try:
            await bot.initialize()  # getMe: checks the token
        except InvalidToken as exc:
            await bot.shutdown()
            raise RuntimeError(f"Telegram refused the bot token: {exc}") from None
        except BaseException:
            await bot.shutdown()
            raise
        self.bot = bot
        ctx.logger.info("bot @%s ready (%s)", bot.username, settings.mode)
        if settings.mode == "webhook":
            if not settings.webhook_url or not settings.webhook_secret:
                raise ValueError("mode 'webhook' needs webhook_url and webhook_secret")
            await bot.set_webhook(
                settings.webhook_url,
                secret_token=settings.webhook_secret,
                allowed_updates=["message", "edited_message"],
            )
        else:
            await bot.delete_webhook()
            # one runner of several polls (Telegram refuses two getUpdates at once); the
            # offset Telegram keeps is where the next holder goes on
            ctx.supervise("poll", self._poll, one_runner=True)

    async def stop(self) -> None:
        if self.bot is not None:
            try:
                await self.bot.shutdown()
            except TelegramError as exc:  # shutting down regardless
                log.warning("closing the bot client: %s", exc)
            self.bot = None

    # -- inbound --------------------------------------------------------------------------

    async def _poll(self) -> None:
        assert self.bot is not None
        assert self.settings is not None
        backoff = Backoff(initial=1.0, cap=60.0)
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=self.offset or None,
                    timeout=self.settings.poll_timeout,
                    allowed_updates=["message", "edited_message"],
                )
                backoff.succeeded()
            except (TimedOut, NetworkError) as exc:
                delay = backoff.failed()
                log.warning("getUpdates failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if not updates:
                continue
            # Prepare all (downloads, phone links) at once, then store all: submitted in
            # order, so the core group-commits them. If storing fails, the offset stays
            # and Telegram delivers the batch again (stored once: same external ids).
            # An update that cannot be stored is quarantined, so the offset moves on.
            prepared = await asyncio.gather(*(self._prepare(u) for u in updates))
            await asyncio.gather(
                *(self.store(p, u) for p, u in zip(prepared, updates, strict=True) if p)
            )
            self.offset = updates[-1].update_id + 1

    async def handle(self, update: telegram.Update) -> None:
        """Store one update (from the webhook)."""
        prepared = await self._prepare(update)
        if prepared is not None:
            await self.store(prepared, update)

    async def _prepare(self, update: telegram.Update) -> tuple[bool, InboundMessage] | None:
        """:meth:`prepare`, with an update it fails on quarantined instead of raised: one
        hostile update must not keep the others from arriving."""
        assert self.ctx is not None
        try:
            return await self.prepare(update)
        except Exception as exc:
            log.exception("update %s could not be read", update.update_id)
            await self.ctx.quarantine(
                f"update:{update.update_id}", f"{type(exc).__name__}: {exc}", update.to_dict()
            )
            return None

    async def store(
        self, prepared: tuple[bool, InboundMessage], update: telegram.Update | None = None
    ) -> None:
        """Store a prepared update; one the core can never store is quarantined. Other
        errors (the store is down) propagate: the update is not acknowledged."""
        assert self.ctx is not None
        edited, inbound = prepared
        try:
            if edited:
                await self.ctx.edit(inbound)
            else:
                await self.ctx.receive(inbound)
        except InvalidInbound as exc:
            await self.ctx.quarantine(
                inbound.external_id, str(exc), update.to_dict() if update else None
            )

    async def prepare(self, update: telegram.Update) -> tuple[bool, InboundMessage] | None:
        """What to store for an update: (is an edit, the message), or None to skip it."""
        assert self.ctx is not None
        assert self.settings is not None
        message = update.message or update.edited_message
        if message is None:
            return None
        if message.chat.type not in self.settings.allowed_chat_types:
            log.info(
                "ignoring a message from a %s chat (allowed: %s)",
                message.chat.type,
                ", ".join(self.settings.allowed_chat_types),
            )
            return None
        user = message.from_user
        if user is None or user.is_bot:
            return None
        meta = await self._meta(message)
        if message.contact is not None and message.contact.user_id == user.id:
            # The user shared their own phone number: same person as that phone's contact.
            try:
                await self.ctx.link_addresses(
                    f"phone:{message.contact.phone_number}", f"telegram:{user.id}"
                )
            except AddressError as exc:  # a number default_region cannot read: keep the text
                meta["shared_phone_not_linked"] = str(exc)
        inbound = InboundMessage(
            external_id=f"{message.chat.id}:{message.message_id}",
            sender=f"telegram:{user.id}",
            text=message.text or message.caption,
            sender_name=user.full_name,
            meta=meta,
            received_at=message.date,
        )
        return update.edited_message is not None, inbound

    async def _meta(self, message: telegram.Message) -> dict[str, Any]:
        assert self.settings is not None
        assert self.ctx is not None
        meta: dict[str, Any] = {
            "chat_id": message.chat.id,
            "chat_type": message.chat.type,
            "message_id": message.message_id,
        }
        if message.from_user and message.from_user.username:
            meta["username"] = message.from_user.username
        if message.edit_date is not None:
            meta["edited_at"] = message.edit_date.isoformat()
        if message.contact is not None:
            meta["shared_phone"] = message.contact.phone_number
        media: telegram.PhotoSize | telegram.Document | telegram.Voice | None = None
        if message.photo:
            media, kind = message.photo[-1], "photo"  # the largest size
        elif message.document is not None:
            media, kind = message.document, "document"
        elif message.voice is not None:
            media, kind = message.voice, "voice"
        if media is not None:
            meta["attachment"] = await self._download(media, kind, message)
        return meta

    async def _download(self, media: Any, kind: str, message: telegram.Message) -> dict[str, Any]:
        assert self.bot is not None
        assert self.settings is not None
        assert self.ctx is not None
        info: dict[str, Any] = {
            "kind": kind,
            "file_id": media.file_id,
            "size": media.file_size,
            "mime_type": getattr(media, "mime_type", None),
            "file_name": getattr(media, "file_name", None),
        }
        if media.file_size is not None and media.file_size > self.settings.max_file_bytes:
            info["skipped"] = f"larger than max_file_bytes ({self.settings.max_file_bytes})"
            return info
        folder = self.ctx.files_dir(self.settings.files_dir)
        try:
            # our own folder and id; the sender's file name only as a cleaned last part
            target = await asyncio.to_thread(new_file_path, folder, info["file_name"], kind)
            file = await self.bot.get_file(media.file_id)
            await file.download_to_drive(target)
        except (TelegramError, OSError, ValueError) as exc:
            info["error"] = f"download failed: {exc}"
            return info
        size = (await asyncio.to_thread(target.stat)).st_size
        if size > self.settings.max_file_bytes:  # the size Telegram declared was wrong
            await asyncio.to_thread(target.unlink)
            info["skipped"] = f"larger than max_file_bytes ({self.settings.max_file_bytes})"
            return info
        info["path"] = str(target)
        info["size"] = size
        return info

    # -- outbound -------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.bot is None or self.settings is None or self.limiter is None:
            raise TransientSendError("the Telegram channel is not running")
        chat_id = int(message.address.value)
        await self.limiter.wait(chat_id)
        try:
            document = message.payload.get("file")
            if document:
                assert self.ctx is not None
                try:  # only a file of ours: never a path a payload or template chose
                    path = self.ctx.local_file(str(document))
                except Invalid as exc:
                    raise PermanentSendError(f"file: {exc}") from None
                sent = await self.bot.send_document(
                    chat_id,
                    document=await asyncio.to_thread(path.read_bytes),
                    filename=path.name,
                    caption=_escape(message.text or "", self.settings.parse_mode) or None,
                    parse_mode=self.settings.parse_mode,
                )
            else:
                sent = await self.bot.send_message(
                    chat_id,
                    _escape(message.text or "", self.settings.parse_mode),
                    parse_mode=self.settings.parse_mode,
                )
        except RetryAfter as exc:
            seconds = _seconds(exc)
            raise TransientSendError(
                f"Telegram: too many requests, retry after {seconds:g} s", retry_after=seconds
            ) from None
        except Forbidden as exc:
            raise PermanentSendError(
                f"Telegram refused: {exc.message} (the user blocked the bot or left the chat)"
            ) from None
        except BadRequest as exc:
            raise PermanentSendError(f"Telegram rejected the message: {exc.message}") from None
        except (TimedOut, NetworkError) as exc:
            raise TransientSendError(f"Telegram unreachable: {exc}") from None
        except OSError as exc:
            raise PermanentSendError(f"cannot read the file to send: {exc}") from None
        return Receipt(
            external_id=f"{sent.chat.id}:{sent.message_id}",
            meta={"chat_id": sent.chat.id, "message_id": sent.message_id},
        )
