"""The MAX channel: a MAX bot's dialogs on the contact's timeline.

Inbound, in one of two modes: **long polling** (``GET /updates`` with the ``marker``, saved
only after the updates before it are stored) or a **webhook** (the channel subscribes
``webhook_url`` with a secret at start; MAX posts each update to the runner's
``/max/webhook`` with ``X-Max-Bot-Api-Secret``; the body is kept, then 200; see
:mod:`switchboard_max`). ``message_created`` is stored on the card of ``max:<user id>``,
named from the sender; images, files, audio, video and stickers are downloaded with a
size limit; a user sharing their own contact links their phone number to the card;
``message_edited`` updates the text in place; a button press (``message_callback``) is
stored and answered.

Outbound: through the outbox with ``POST /messages?user_id=``, paced; the text goes as
typed (no markup), files by MAX's upload flow, an inline keyboard on request. 429 and
5xx are retried; other errors fail the message with MAX's text; a refused token fails
the channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import httpx

from switchboard import (
    AddressBook,
    AddressError,
    Backoff,
    ChannelContext,
    InboundMessage,
    Invalid,
    InvalidInbound,
    KeptBodies,
    OutboundMessage,
    Pacer,
    PermanentSendError,
    Position,
    Receipt,
    TransientSendError,
    download_file,
)
from switchboard.outside import as_dict, as_float, as_list, as_time, clean
from switchboard_max.settings import MaxSettings
from switchboard_max.tables import state_t, webhook_t

log = logging.getLogger("switchboard.channel.max")

TEXT_MAX = 4000  # what a MAX message holds; longer inbound text is cut there
NAME_MAX = 200
USER_ID = re.compile(r"^[1-9][0-9]{0,18}$")
MEDIA = ("image", "file", "audio", "video", "sticker")
UPDATE_TYPES = ["message_created", "message_edited", "message_callback"]
TEL = re.compile(r"^TEL[^:]*:(.+)$", re.MULTILINE | re.IGNORECASE)


def normalize_max(raw: str, book: AddressBook) -> str:
    """A MAX user id (``max:123456``): digits, as MAX gives them."""
    value = raw.strip()
    if not USER_ID.fullmatch(value):
        raise AddressError(raw[:40], "expected a numeric MAX user id", "max")
    return value


class MaxError(Exception):
    """An error answer of the MAX Bot API: HTTP status, MAX's code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class MaxApi:
    """The MAX Bot API methods the channel calls, over httpx; the token goes in the
    ``Authorization`` header as is (MAX refuses it in the query). See docs/max.md for why
    not maxapi."""

    def __init__(self, settings: MaxSettings, http: httpx.AsyncClient) -> None:
        self.http = http
        self.base = settings.api_url.rstrip("/")
        self.headers = {"Authorization": settings.token}

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        response = await self.http.request(
            method,
            self.base + path,
            params={k: v for k, v in (params or {}).items() if v is not None},
            json=body,
            headers=self.headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code >= 400:
            error = as_dict(answer)
            raise MaxError(
                response.status_code,
                str(error.get("code") or "error")[:100],
                str(error.get("message") or response.reason_phrase)[:500],
            )
        return answer


class MaxChannel:
    name = "max"
    address_kind = "max"

    def __init__(self) -> None:
        self.ctx: ChannelContext | None = None
        self.settings: MaxSettings | None = None
        self.http: httpx.AsyncClient | None = None
        self.api: MaxApi | None = None
        self.pacer: Pacer | None = None
        self.kept: KeptBodies | None = None

    @property
    def max_concurrency(self) -> int:
        return self.settings.max_concurrency if self.settings is not None else 1

    async def start(self, ctx: ChannelContext) -> None:
        settings = ctx.settings
        if not isinstance(settings, MaxSettings):
            raise TypeError("the MAX channel needs [plugins.max] settings")
        self.ctx, self.settings = ctx, settings
        ctx.files_dir(settings.files_dir)  # the runner serves the files kept there
        self.http = httpx.AsyncClient(timeout=settings.request_timeout, follow_redirects=False)
        self.api = MaxApi(settings, self.http)
        self.pacer = Pacer(settings.requests_per_second, settings.per_recipient_seconds)
        try:  # a wrong token fails the start, shown in /api/health
            await self.api.call("GET", "/me")
            if settings.mode == "webhook":
                answer = as_dict(
                    await self.api.call(
                        "POST",
                        "/subscriptions",
                        body={
                            "url": settings.webhook_url,
                            "update_types": UPDATE_TYPES,
                            "secret": settings.secret,
                        },
                    )
                )
                if answer.get("success") is not True:
                    raise MaxError(200, "subscription", str(answer.get("message"))[:200])
        except (MaxError, httpx.HTTPError) as exc:
            await self.stop()
            raise RuntimeError(f"MAX refused the bot token or subscription: {exc}") from None
        if settings.mode == "webhook":
            self.kept = KeptBodies(ctx, webhook_t, self.handle)
            self.kept.start()
        else:
            ctx.supervise("updates", self._long_poll, one_runner=True)  # the marker is kept

    async def stop(self) -> None:
        if self.kept is not None:
            await self.kept.close()
            self.kept = None
        if self.http is not None:
            await self.http.aclose()
        self.http = self.api = None

    # -- inbound: webhook ------------------------------------------------------------------

    async def accept(self, body: bytes) -> None:
        """Keep a webhook body whose secret was checked (committed on return)."""
        if self.kept is None:
            raise RuntimeError("the MAX channel is not running in webhook mode")
        await self.kept.accept(body)

    # -- inbound: long polling -------------------------------------------------------------

    async def _long_poll(self) -> None:
        """``GET /updates`` until stopped; the ``marker`` moves on (and is saved) only once
        the updates before it are stored. MAX allows 2 requests a second here."""
        assert self.api is not None
        assert self.settings is not None
        assert self.ctx is not None
        position = Position(self.ctx, state_t, "marker")
        marker = await position.load()
        backoff = Backoff(1.0, 60.0)
        while True:
            asked = asyncio.get_running_loop().time()
            try:
                answer = as_dict(
                    await self.api.call(
                        "GET",
                        "/updates",
                        params={
                            "marker": marker,
                            "timeout": self.settings.poll_timeout,
                            "limit": 100,
                            "types": ",".join(UPDATE_TYPES),
                        },
                        timeout=self.settings.request_timeout + self.settings.poll_timeout,
                    )
                )
            except (MaxError, httpx.HTTPError) as exc:
                delay = backoff.failed()
                self.ctx.logger.warning("GET /updates failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.succeeded()
            updates = as_list(answer.get("updates"))
            await asyncio.gather(*(self.handle(u) for u in updates))
            if answer.get("marker") is not None:
                marker = str(answer["marker"])
                await position.save(marker)
            # 2 requests a second at most
            await asyncio.sleep(max(0.0, 0.5 - (asyncio.get_running_loop().time() - asked)))

    # -- inbound: both ---------------------------------------------------------------------

    async def handle(self, update: Any) -> None:
        """Store what one update carries; another kind is ignored, one that cannot be read
        is quarantined with the reason."""
        assert self.ctx is not None
        if not isinstance(update, dict):
            await self.ctx.quarantine("update", "an update that is not an object", update)
            return
        kind = update.get("update_type")
        message = as_dict(update.get("message"))
        ident = clean(as_dict(message.get("body")).get("mid"), 255)
        try:
            if kind == "message_created":
                inbound = await self.inbound(message)
                await self.ctx.receive(inbound)
                await self._link_own_contact(message, inbound)
            elif kind == "message_edited":
                await self.ctx.edit(await self.inbound(message))
            elif kind == "message_callback":
                ident = clean(as_dict(update.get("callback")).get("callback_id"), 255)
                await self._callback(update)
            else:
                log.debug("MAX update %r ignored", str(kind)[:40])
        except (InvalidInbound, AddressError, KeyError, TypeError, ValueError) as exc:
            await self.ctx.quarantine(ident or "unknown", f"{type(exc).__name__}: {exc}", update)

    async def inbound(self, message: dict[str, Any]) -> InboundMessage:
        """The message to store for a MAX ``Message`` object."""
        body = as_dict(message.get("body"))
        mid = body.get("mid")
        if not isinstance(mid, str) or not 0 < len(mid) <= 255:
            raise ValueError("a message id (body.mid) of 1 to 255 characters")
        sender = as_dict(message.get("sender"))
        user = sender.get("user_id")
        if not isinstance(user, int) or user <= 0 or sender.get("is_bot"):
            raise ValueError("not from a user (sender.user_id)")
        meta: dict[str, Any] = {"max_mid": mid, "seq": body.get("seq")}
        recipient = as_dict(message.get("recipient"))
        if recipient.get("chat_type") not in (None, "dialog"):
            meta["chat_id"] = recipient.get("chat_id")
        link = as_dict(message.get("link"))
        if link.get("type") == "reply":
            meta["reply_to"] = clean(as_dict(link.get("message")).get("mid"), 255)
        attachments = [a for a in as_list(body.get("attachments")) if isinstance(a, dict)]
        files = [await self._download(a) for a in attachments[:10] if a.get("type") in MEDIA]
        if files:
            meta["attachments"] = files
        shared = [_contact(a) for a in attachments if a.get("type") == "contact"]
        if shared:
            meta["contacts"] = shared
        located = [a for a in attachments if a.get("type") == "location"]
        if located:
            meta["location"] = {
                "latitude": as_float(located[0].get("latitude")),
                "longitude": as_float(located[0].get("longitude")),
            }
        text = clean(body.get("text"), TEXT_MAX) or None
        if text is None and shared:
            text = "; ".join(f"{c['name']} {' '.join(c['phones'])}".strip() for c in shared)
        name = " ".join(
            n
            for n in (clean(sender.get("first_name"), 100), clean(sender.get("last_name"), 100))
            if n
        )
        return InboundMessage(
            external_id=mid,
            sender=f"max:{user}",
            text=text,
            sender_name=name or None,
            meta=meta,
            received_at=as_time(message.get("timestamp"), 1000),
        )

    async def _link_own_contact(self, message: dict[str, Any], inbound: InboundMessage) -> None:
        """A user who shares their own contact (its ``max_info`` is the sender) gives their
        phone number: it joins their card (the card of that number's calls, if there is
        one)."""
        assert self.ctx is not None
        user = as_dict(message.get("sender")).get("user_id")
        for shared in inbound.meta.get("contacts", []):
            if shared.get("user_id") != user:
                continue
            for phone in shared["phones"][:1]:
                try:
                    # the phone's card (its calls) stays; the MAX card joins it
                    await self.ctx.link_addresses(self.ctx.address(phone), f"max:{user}")
                except (AddressError, Invalid) as exc:
                    log.info("a shared phone number was not linked: %s", exc)

    async def _callback(self, update: dict[str, Any]) -> None:
        """A press of an inline button: stored as the user's message (its payload) and
        answered, so their app stops waiting."""
        assert self.ctx is not None
        assert self.api is not None
        callback = as_dict(update.get("callback"))
        ident, user = callback.get("callback_id"), as_dict(callback.get("user"))
        if not isinstance(ident, str) or not isinstance(user.get("user_id"), int):
            raise ValueError("a callback without callback_id or user")
        payload = clean(callback.get("payload"), 1000) or ""
        name = " ".join(
            n for n in (clean(user.get("first_name"), 100), clean(user.get("last_name"), 100)) if n
        )
        received = await self.ctx.receive(
            InboundMessage(
                external_id=f"callback:{ident}"[:255],
                sender=f"max:{user['user_id']}",
                text=payload,
                sender_name=name or None,
                meta={
                    "callback": payload,
                    "on_message": clean(
                        as_dict(as_dict(update.get("message")).get("body")).get("mid"), 255
                    ),
                },
                received_at=as_time(callback.get("timestamp"), 1000),
            )
        )
        if received.duplicate:
            return
        try:
            await self.api.call(
                "POST", "/answers", params={"callback_id": ident}, body={"notification": "✓"}
            )
        except (MaxError, httpx.HTTPError) as exc:  # stored all the same
            log.info("answering callback %s failed: %s", ident[:40], exc)

    async def _download(self, attachment: dict[str, Any]) -> dict[str, Any]:
        """Fetch an attachment's file from its URL, streamed and cut off at the limit."""
        assert self.settings is not None
        assert self.ctx is not None
        assert self.http is not None
        kind = str(attachment["type"])
        payload = as_dict(attachment.get("payload"))
        info: dict[str, Any] = {"kind": kind}
        if kind == "file":
            info["file_name"] = clean(attachment.get("filename"), NAME_MAX)
            info["size"] = (
                attachment.get("size") if isinstance(attachment.get("size"), int) else None
            )
        info["mime_type"] = {"image": "image/jpeg", "sticker": "image/webp"}.get(kind)
        url = payload.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            info["error"] = "no file URL"
            return info
        return await download_file(
            self.http,
            url,
            info,
            folder=self.ctx.files_dir(self.settings.files_dir),
            limit=self.settings.max_file_bytes,
            fallback=kind,
        )

    # -- outbound --------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> Receipt:
        """``POST /messages?user_id=``: the text as typed (no markup: ``*`` and ``<`` stay
        characters), a file uploaded first, an inline keyboard on request."""
        if self.api is None or self.pacer is None or self.ctx is None:
            raise TransientSendError("the MAX channel is not running")
        user = message.address.value
        attachments: list[dict[str, Any]] = []
        try:
            if message.payload.get("file") is not None:
                attachments.append(await self._upload(user, message.payload["file"]))
            if message.payload.get("keyboard") is not None:
                attachments.append(_keyboard(message.payload["keyboard"]))
            body: dict[str, Any] = {"text": message.text or "", "notify": True}
            if attachments:
                body["attachments"] = attachments
            await self.pacer.wait(user)
            answer = as_dict(
                await self.api.call("POST", "/messages", params={"user_id": user}, body=body)
            )
        except Invalid as exc:
            raise PermanentSendError(str(exc)) from None
        except MaxError as exc:
            if exc.status == 401:
                self.ctx.fail(f"MAX refused the bot token: {exc}")
                raise TransientSendError(str(exc)) from None
            if exc.status == 429 or exc.status >= 500 or exc.code == "attachment.not.ready":
                raise TransientSendError(str(exc)) from None
            raise PermanentSendError(str(exc)) from None
        except httpx.HTTPError as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from None
        mid = as_dict(as_dict(answer.get("message")).get("body")).get("mid")
        if not isinstance(mid, str) or not mid:
            raise PermanentSendError(f"MAX answered without a message id: {str(answer)[:200]}")
        return Receipt(external_id=mid)

    async def _upload(self, user: str, document: Any) -> dict[str, Any]:
        """A file of ours (``ctx.local_file``) by MAX's upload flow: ``POST /uploads?type=``
        gives a URL, the file goes there, and its token names it in the message."""
        assert self.api is not None
        assert self.http is not None
        assert self.ctx is not None
        assert self.pacer is not None
        path = self.ctx.local_file(str(document))
        kind = (
            "image" if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif", ".webp") else "file"
        )
        await self.pacer.wait(user)
        slot = as_dict(await self.api.call("POST", "/uploads", params={"type": kind}))
        url = slot.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise MaxError(502, "upload", "no upload URL")
        data = await asyncio.to_thread(path.read_bytes)
        response = await self.http.post(url, files={"data": (path.name, data)})
        if response.status_code >= 400:
            raise MaxError(response.status_code, "upload", response.text[:200])
        uploaded = as_dict(response.json())
        if kind == "image":
            return {"type": "image", "payload": uploaded}  # {"photos": {...}} as given
        token = uploaded.get("token") or slot.get("token")
        return {"type": "file", "payload": {"token": token}}


def _keyboard(spec: Any) -> dict[str, Any]:
    """An inline keyboard: rows of buttons, each ``{"type": "callback", "text",
    "payload"}`` or ``{"type": "link", "text", "url"}`` (MAX's own form, checked)."""
    rows = spec.get("buttons") if isinstance(spec, Mapping) else spec
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
        raise Invalid("keyboard: rows of buttons")
    for button in (b for row in rows for b in row):
        if not isinstance(button, dict) or button.get("type") not in ("callback", "link"):
            raise Invalid("keyboard: each button a callback or link")
        if not isinstance(button.get("text"), str) or not 0 < len(button["text"]) <= 128:
            raise Invalid("keyboard: each button's text, 1 to 128 characters")
    if len(json.dumps(rows)) > 10_000:
        raise Invalid("keyboard: at most 10,000 characters of JSON")
    return {"type": "inline_keyboard", "payload": {"buttons": rows}}


def _contact(attachment: dict[str, Any]) -> dict[str, Any]:
    """A shared contact: its name, phone numbers (from the vCard) and MAX user id."""
    payload = as_dict(attachment.get("payload"))
    vcf = clean(payload.get("vcf_info"), 5000) or ""
    info = as_dict(payload.get("max_info"))
    phones = [clean(m.strip(), 40) or "" for m in TEL.findall(vcf)][:10]
    name = next(
        (line[3:].strip() for line in vcf.splitlines() if line.upper().startswith("FN:")), ""
    )
    return {
        "name": clean(name, NAME_MAX) or clean(info.get("first_name"), NAME_MAX) or "",
        "phones": phones,
        "user_id": info.get("user_id") if isinstance(info.get("user_id"), int) else None,
    }
