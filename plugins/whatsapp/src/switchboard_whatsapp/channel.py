"""The WhatsApp channel: Cloud API webhooks in, the Graph API's ``/messages`` out.

Inbound: Meta posts signed webhooks to the runner (``/whatsapp/webhook``, see
:mod:`switchboard_whatsapp`); each message is stored on the timeline of the contact owning
the sender's phone number (a WhatsApp id is a phone number: the same card as that
number's calls), media downloaded through the Graph media URL with a size limit; status
webhooks move sent messages to ``delivered`` / ``read`` or fail them with Meta's error.

Outbound: through the outbox with pywa's async client (text, media by link, replies,
reactions, message templates), paced to the number's throughput and per recipient;
Meta's rate-limit codes are retried, the others fail with Meta's text. Free-form
messages are refused before they are queued outside the customer-service window (24 h
after the customer's last message); templates are always allowed.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from pywa.errors import (
    AuthorizationError,
    ThrottlingError,
    WhatsAppError,
)
from pywa.types.callback import Button, Section, SectionList, SectionRow
from pywa.types.templates import TemplateLanguage
from pywa_async.client import WhatsApp

from switchboard import (
    Address,
    AddressBook,
    AddressError,
    ChannelContext,
    Contact,
    InboundMessage,
    Invalid,
    InvalidInbound,
    KeptBodies,
    OutboundMessage,
    Pacer,
    PermanentSendError,
    Receipt,
    TransientSendError,
    download_file,
)
from switchboard.outside import as_dict, as_float, as_list, as_time, clean
from switchboard_whatsapp.settings import WhatsAppSettings
from switchboard_whatsapp.tables import early_status_t, webhook_t

log = logging.getLogger("switchboard.channel.whatsapp")

MEDIA = ("image", "document", "audio", "video", "sticker")
EARLY_KEPT = 3600.0  # seconds a status waits for its send to be recorded
TEXT_MAX = 4096  # what a WhatsApp text can hold; longer inbound text is cut there
NAME_MAX = 200
BSUID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: The largest file Meta takes per kind of media (Cloud API media reference), in bytes.
MEDIA_LIMITS = {
    "image": 5 * 2**20,
    "audio": 16 * 2**20,
    "video": 16 * 2**20,
    "document": 100 * 2**20,
    "sticker": 500 * 2**10,
}
#: Meta's codes that mean "slow down": retried with backoff, never failed for it.
RATE_LIMITED = {4, 80007, 130429, 131048, 131056}


def normalize_bsuid(raw: str, book: AddressBook) -> str:
    """A business-scoped user id (``whatsapp:<id>``): Meta's id for a user who hides
    their number; kept as given, bounded."""
    value = raw.strip()
    if not BSUID.fullmatch(value):
        raise AddressError(raw[:40], "not a WhatsApp user id", "whatsapp")
    return value


class GraphTransport(httpx.AsyncBaseTransport):
    """Sends the Graph API's requests to ``graph_url`` (pywa fixes Meta's host): an egress
    proxy in production, the loopback stand-in in tests. Other hosts go as they are."""

    def __init__(self, graph_url: str) -> None:
        self.target = httpx.URL(graph_url)
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "graph.facebook.com" and self.target.host != "graph.facebook.com":
            request.url = request.url.copy_with(
                scheme=self.target.scheme, host=self.target.host, port=self.target.port
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class WhatsAppChannel:
    name = "whatsapp"
    address_kind = "phone"
    templates_outside_window = True  # Meta's approved templates go whenever

    def __init__(self) -> None:
        self.ctx: ChannelContext | None = None
        self.settings: WhatsAppSettings | None = None
        self.client: WhatsApp | None = None
        self.http: httpx.AsyncClient | None = None
        self.pacer: Pacer | None = None
        self.kept: KeptBodies | None = None

    @property
    def max_concurrency(self) -> int:
        return self.settings.max_concurrency if self.settings is not None else 1

    async def start(self, ctx: ChannelContext) -> None:
        settings = ctx.settings
        if not isinstance(settings, WhatsAppSettings):
            raise TypeError("the WhatsApp channel needs [plugins.whatsapp] settings")
        self.ctx, self.settings = ctx, settings
        ctx.files_dir(settings.files_dir)  # the runner serves the media kept there
        self.http = httpx.AsyncClient(
            transport=GraphTransport(settings.graph_url), timeout=settings.request_timeout
        )
        self.client = WhatsApp(
            phone_id=settings.phone_number_id,
            token=settings.access_token,
            session=self.http,
            api_version=settings.api_version,
        )
        self.pacer = Pacer(settings.messages_per_second, settings.per_recipient_seconds)
        try:  # a wrong token or number fails the start, shown in /api/health
            await self.client.get_business_phone_number()
        except WhatsAppError as exc:
            await self.stop()
            raise RuntimeError(f"the Graph API refused the number or token: {_why(exc)}") from None
        # statuses of messages never recorded as ours (sent from Meta's own tools or
        # another app on the number) would wait forever: they go after EARLY_KEPT
        self.kept = KeptBodies(ctx, webhook_t, self.handle, after=self._expire_early)
        self.kept.start()

    async def stop(self) -> None:
        if self.kept is not None:
            await self.kept.close()
            self.kept = None
        if self.http is not None:
            await self.http.aclose()
        self.http = self.client = None

    # -- webhook bodies: kept, then read ----------------------------------------------------

    async def accept(self, body: bytes) -> None:
        """Keep a signed webhook body (committed when this returns) for the reader. The 200
        may follow: a crash now loses nothing, and a body read twice stores its messages
        once (by their ids)."""
        if self.kept is None:
            raise RuntimeError("the WhatsApp channel is not running")
        await self.kept.accept(body)

    async def _expire_early(self) -> None:
        assert self.ctx is not None
        await self.ctx.transaction(functools.partial(_expire_early, time.time() - EARLY_KEPT))

    # -- inbound --------------------------------------------------------------------------

    async def handle(self, payload: Mapping[str, Any]) -> int:
        """Store what one webhook body carries (messages, statuses); return how many
        items it held. One that cannot be read is quarantined with the reason; the others
        are stored."""
        assert self.ctx is not None
        items = 0
        for entry in as_list(payload.get("entry")):
            for change in as_list(as_dict(entry).get("changes")):
                value = as_dict(as_dict(change).get("value"))
                names = {
                    str(c.get("wa_id") or c.get("user_id")): as_dict(c)
                    for c in as_list(value.get("contacts"))
                    if isinstance(c, dict)
                }
                for message in as_list(value.get("messages")):
                    items += 1
                    await self._one(message, names)
                for status in as_list(value.get("statuses")):
                    items += 1
                    await self._status(status)
        return items

    async def _one(self, message: Any, names: dict[str, dict[str, Any]]) -> None:
        assert self.ctx is not None
        ident = message.get("id") if isinstance(message, dict) else None
        try:
            inbound, bsuid = await self.inbound(message, names)
            received = await self.ctx.receive(inbound)
            phone = str(inbound.sender) if str(inbound.sender).startswith("+") else None
            if bsuid and phone and received.contact_created:  # both ids: one person
                await self.ctx.link_addresses(f"phone:{phone}", f"whatsapp:{bsuid}")
        except (InvalidInbound, AddressError, KeyError, TypeError, ValueError) as exc:
            await self.ctx.quarantine(
                str(ident or "unknown")[:255], f"{type(exc).__name__}: {exc}", message
            )

    async def inbound(
        self, message: dict[str, Any], names: dict[str, dict[str, Any]]
    ) -> tuple[InboundMessage, str | None]:
        """The message to store for one ``messages[]`` item, and the sender's BSUID."""
        ident = message["id"]
        if not isinstance(ident, str) or not 0 < len(ident) <= 255:
            raise ValueError("a message id of 1 to 255 characters")
        wa_id = str(message.get("from") or "")
        contact = names.get(wa_id) or names.get(str(message.get("from_user_id"))) or {}
        bsuid = contact.get("user_id") or message.get("from_user_id")
        if wa_id.isdigit():
            sender = f"+{wa_id}"
        elif isinstance(bsuid, str):
            sender = f"whatsapp:{bsuid}"
        else:
            raise ValueError("a sender with neither a WhatsApp id nor a user id")
        kind = str(message.get("type") or "unknown")[:32]
        meta: dict[str, Any] = {"type": kind, "wa_message_id": ident}
        if isinstance(message.get("context"), dict):
            meta["reply_to"] = clean(message["context"].get("id"), 255)
        text: str | None = None
        body = as_dict(message.get(kind))
        if kind == "text":
            text = clean(body.get("body"), TEXT_MAX)
        elif kind in MEDIA:
            text = clean(body.get("caption"), TEXT_MAX)
            meta["attachment"] = await self._download(body, kind)
        elif kind == "location":
            meta["location"] = {
                "latitude": as_float(body.get("latitude")),
                "longitude": as_float(body.get("longitude")),
                "name": clean(body.get("name"), NAME_MAX),
                "address": clean(body.get("address"), 500),
            }
            text = meta["location"]["name"] or f"{body.get('latitude')}, {body.get('longitude')}"
        elif kind == "contacts":
            shared = [_shared_contact(c) for c in as_list(message.get("contacts"))[:20]]
            meta["contacts"] = shared
            text = "; ".join(f"{c['name']} {' '.join(c['phones'])}".strip() for c in shared)
        elif kind == "interactive":
            reply = as_dict(body.get("button_reply") or body.get("list_reply"))
            meta["reply"] = {
                "id": clean(reply.get("id"), 256),
                "title": clean(reply.get("title"), 256),
            }
            text = meta["reply"]["title"]
        elif kind == "button":  # a template's quick-reply button
            meta["reply"] = {"payload": clean(body.get("payload"), 256)}
            text = clean(body.get("text"), 256)
        elif kind == "reaction":
            meta["reaction_to"] = clean(body.get("message_id"), 255)
            text = clean(body.get("emoji"), 16) or ""  # empty: the reaction was removed
        else:  # a type this channel does not know yet: kept as a placeholder, never lost
            text = f"[{kind} message]"
            meta["unsupported"] = True
        profile = as_dict(contact.get("profile"))
        return (
            InboundMessage(
                external_id=ident,
                sender=sender,
                text=text,
                sender_name=clean(profile.get("name"), NAME_MAX) or None,
                meta=meta,
                received_at=as_time(message.get("timestamp")),
            ),
            bsuid if isinstance(bsuid, str) and BSUID.fullmatch(bsuid) else None,
        )

    async def _download(self, media: dict[str, Any], kind: str) -> dict[str, Any]:
        """Fetch a media item through its Graph URL, streamed and cut off at the limit."""
        assert self.settings is not None
        assert self.ctx is not None
        assert self.client is not None
        assert self.http is not None
        info: dict[str, Any] = {
            "kind": kind,
            "media_id": clean(media.get("id"), 128),
            "mime_type": clean(media.get("mime_type"), 128),
            "file_name": clean(media.get("filename"), NAME_MAX),
        }
        try:
            found = await self.client.api.get_media_url(str(media["id"]))
            url = str(found["url"])
        except (WhatsAppError, httpx.HTTPError, KeyError, ValueError) as exc:
            info["error"] = f"download failed: {type(exc).__name__}: {str(exc)[:200]}"
            return info
        info["size"] = found.get("file_size")
        return await download_file(
            self.http,
            url,
            info,
            folder=self.ctx.files_dir(self.settings.files_dir),
            limit=self.settings.max_file_bytes,
            fallback=kind,
            headers={"Authorization": f"Bearer {self.settings.access_token}"},
        )

    async def _status(self, status: Any) -> None:
        assert self.ctx is not None
        if not isinstance(status, dict) or not isinstance(status.get("id"), str):
            await self.ctx.quarantine("status", "a status without an id", status)
            return
        ident, state = status["id"][:255], status.get("status")
        if state not in ("delivered", "read", "failed"):
            return  # "sent" adds nothing: the outbox marked it sent when the API took it
        error = None
        if state == "failed":
            errors = [as_dict(e) for e in as_list(status.get("errors"))]
            error = ("; ".join(_error_text(e) for e in errors) or "failed (no reason given)")[:1000]
        if await self._apply(ident, state, error):
            return
        # Meta answered before the outbox recorded the send: keep the status for then
        # (message_sent), and look once more in case the send was recorded meanwhile.
        await self.ctx.transaction(functools.partial(_keep_early, ident, state, error))
        if await self._apply(ident, state, error):
            await self.ctx.transaction(functools.partial(_forget_early, ident))

    async def _apply(self, ident: str, state: str, error: str | None) -> bool:
        assert self.ctx is not None
        if state == "failed":
            return await self.ctx.failed_later(ident, error or "failed") is not None
        return await self.ctx.delivered(ident, read=state == "read") is not None

    async def sent(self, external_id: str) -> None:
        """The outbox recorded a send (hook ``message_sent``): a status that came first is
        applied now."""
        assert self.ctx is not None
        early = await self.ctx.transaction(functools.partial(_take_early, external_id))
        if early is not None:
            await self._apply(external_id, early[0], early[1])

    # -- outbound -------------------------------------------------------------------------

    async def window(self, contact: Contact) -> datetime | None:
        """When free-form messages to ``contact`` stop being allowed: ``window_hours``
        after their last message here (None: they never wrote)."""
        assert self.ctx is not None
        assert self.settings is not None
        last = await self.ctx.last_inbound(contact_id=contact.id)
        return last + timedelta(hours=self.settings.window_hours) if last else None

    async def admit(
        self, contact_id: int | None, address: Address | None, payload: Mapping[str, Any]
    ) -> None:
        """Free-form messages only within the window after the customer's last message;
        templates always (Meta's customer-service window rule)."""
        assert self.ctx is not None
        assert self.settings is not None
        if "interactive" in payload:
            interactive_args(payload["interactive"])  # a malformed one is a 422 now
        if "media" in payload:
            self.media_source(payload["media"])
        if payload.get("whatsapp_template") or payload.get("reaction"):
            return
        last = await self.ctx.last_inbound(contact_id=contact_id, address=address)
        window = timedelta(hours=self.settings.window_hours)
        if last is None or datetime.now(UTC) - last > window:
            since = "never wrote on WhatsApp" if last is None else f"last wrote {last.isoformat()}"
            raise Invalid(
                f"outside WhatsApp's {self.settings.window_hours:g}-hour customer-service window "
                f"(the contact {since}): send an approved message template instead"
            )

    async def send(self, message: OutboundMessage) -> Receipt:
        assert self.client is not None
        assert self.settings is not None
        assert self.pacer is not None
        to = message.address.value.lstrip("+")
        payload = message.payload
        await self.pacer.wait(to)
        try:
            if isinstance(payload.get("whatsapp_template"), dict):
                t = payload["whatsapp_template"]
                try:
                    language = TemplateLanguage(str(t.get("language")))
                except ValueError:
                    raise PermanentSendError(
                        f"template language {t.get('language')!r}: not one Meta knows"
                    ) from None
                sent: Any = await self.client.send_template(
                    to=to,
                    name=str(t["name"]),
                    language=language,
                    params=list(t.get("components") or []),
                    reply_to_message_id=payload.get("reply_to"),
                )
            elif isinstance(payload.get("reaction"), dict):
                r = payload["reaction"]
                sent = await self.client.send_reaction(
                    to=to, emoji=r["emoji"], message_id=r["message_id"]
                )
            elif "media" in payload:
                sent = await self._send_media(to, payload["media"], message.text)
            elif "interactive" in payload:
                sent = await self.client.send_message(
                    to=to,
                    text=message.text or "",
                    reply_to_message_id=payload.get("reply_to"),
                    **interactive_args(payload["interactive"]),
                )
            else:
                sent = await self.client.send_message(
                    to=to,
                    text=message.text or "",
                    preview_url=bool(payload.get("preview_url", self.settings.preview_url)),
                    reply_to_message_id=payload.get("reply_to"),
                )
        except ThrottlingError as exc:
            raise TransientSendError(_why(exc)) from None
        except AuthorizationError as exc:  # an expired token: every send would fail
            assert self.ctx is not None
            self.ctx.fail(f"the Graph API refused the token: {_why(exc)}")
            raise TransientSendError(_why(exc)) from None
        except WhatsAppError as exc:
            if exc.code in RATE_LIMITED or exc.is_transient:
                raise TransientSendError(_why(exc)) from None
            raise PermanentSendError(_why(exc)) from None
        except httpx.HTTPError as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from None
        except Invalid as exc:  # queued by a process where the channel did not run
            raise PermanentSendError(str(exc)) from None
        return Receipt(external_id=str(sent.id))

    def media_source(self, media: Any) -> tuple[str, str | Path]:
        """The kind and source of an outbound ``media`` payload: an http(s) ``link`` (Meta
        fetches it), or a ``path`` to upload, which must be a file in the recordings folder
        or a channel's files folder (``ctx.local_file``) and within Meta's size for the
        kind. ``Invalid`` otherwise: pywa reads any other string as a local path, base64 or
        a media id, so nothing else reaches it."""
        assert self.ctx is not None
        assert self.settings is not None
        kind = media.get("kind") if isinstance(media, dict) else None
        if kind not in MEDIA:
            raise Invalid("media.kind: image, document, audio, video or sticker")
        link, path = media.get("link"), media.get("path")
        if isinstance(link, str) and path is None:
            url = urlsplit(link)
            if url.scheme not in ("http", "https") or not url.netloc or len(link) > 2000:
                raise Invalid("media.link: an http(s) URL")
            return kind, link
        if not isinstance(path, str | Path) or link is not None:
            raise Invalid("media: a link or a path (one of them)")
        try:
            found = self.ctx.local_file(path)
        except Invalid as exc:
            raise Invalid(f"media.path: {exc}") from None
        if found.stat().st_size > MEDIA_LIMITS[kind]:
            raise Invalid(f"media.path: larger than Meta takes for {kind} ({MEDIA_LIMITS[kind]})")
        return kind, found

    async def _send_media(self, to: str, media: Any, caption: str | None) -> Any:
        """By link, or uploaded first (pywa's upload: ``POST /{phone-id}/media``, then the
        message names the media id)."""
        assert self.client is not None
        kind, source = self.media_source(media)
        send = getattr(self.client, f"send_{kind}")
        extra: dict[str, Any] = {}
        if isinstance(source, Path):
            name = str(media.get("filename") or source.name)
            extra["mime_type"] = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind in ("audio", "sticker"):
            return await send(to=to, **{kind: source}, **extra)
        if kind == "document":
            extra["filename"] = clean(media.get("filename"), NAME_MAX) or (
                source.name if isinstance(source, Path) else None
            )
        return await send(to=to, caption=caption, **{kind: source}, **extra)


def interactive_args(spec: Any) -> dict[str, Any]:
    """pywa's arguments for an ``interactive`` payload: ``{"buttons": [{"id", "title"}]}``
    (1 to 3 reply buttons) or ``{"list": {"button", "sections": [{"title", "rows": [{"id",
    "title", "description"}]}]}}`` (up to 10 rows), with an optional ``header`` and
    ``footer``; Meta's lengths are checked here (``Invalid`` naming the part)."""
    if not isinstance(spec, dict):
        raise Invalid("interactive: an object with buttons or list")
    out: dict[str, Any] = {}
    for part, limit in (("header", 60), ("footer", 60)):
        if spec.get(part) is not None:
            out[part] = _bounded(spec[part], limit, f"interactive.{part}")
    if "buttons" in spec:
        buttons = spec["buttons"]
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            raise Invalid("interactive.buttons: 1 to 3 buttons")
        out["buttons"] = [
            Button(
                title=_bounded(as_dict(b).get("title"), 20, "interactive.buttons[].title"),
                callback_data=_bounded(as_dict(b).get("id"), 256, "interactive.buttons[].id"),
            )
            for b in buttons
        ]
        return out
    menu = as_dict(spec.get("list"))
    sections = menu.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
        raise Invalid("interactive: buttons, or a list with 1 to 10 sections")
    rows = [r for sec in sections for r in as_list(as_dict(sec).get("rows"))]
    if not 1 <= len(rows) <= 10:
        raise Invalid("interactive.list: 1 to 10 rows in all")
    out["buttons"] = SectionList(
        button_title=_bounded(menu.get("button"), 20, "interactive.list.button"),
        sections=[
            Section(
                title=_bounded(as_dict(sec).get("title"), 24, "interactive.list.sections[].title")
                if len(sections) > 1 or as_dict(sec).get("title") is not None
                else "",
                rows=[
                    SectionRow(
                        title=_bounded(as_dict(r).get("title"), 24, "rows[].title"),
                        callback_data=_bounded(as_dict(r).get("id"), 200, "rows[].id"),
                        description=(
                            _bounded(as_dict(r)["description"], 72, "rows[].description")
                            if as_dict(r).get("description") is not None
                            else None
                        ),
                    )
                    for r in as_list(as_dict(sec).get("rows"))
                ],
            )
            for sec in sections
        ],
    )
    return out


def _bounded(value: Any, limit: int, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        raise Invalid(f"{name}: text of 1 to {limit} characters")
    return value


STATUS_RANK = {"delivered": 1, "read": 2, "failed": 3}


def _keep_early(ident: str, state: str, error: str | None, conn: sa.Connection) -> None:
    """Keep the furthest status seen for a message not recorded as sent yet."""
    row = conn.execute(
        sa.select(early_status_t.c.status).where(early_status_t.c.message_id == ident)
    ).first()
    if row is None:
        conn.execute(
            sa.insert(early_status_t).values(
                message_id=ident, status=state, error=error, at=time.time()
            )
        )
    elif STATUS_RANK[state] > STATUS_RANK.get(row.status, 0):
        conn.execute(
            sa.update(early_status_t)
            .where(early_status_t.c.message_id == ident)
            .values(status=state, error=error)
        )


def _take_early(ident: str, conn: sa.Connection) -> tuple[str, str | None] | None:
    row = conn.execute(
        sa.select(early_status_t.c.status, early_status_t.c.error).where(
            early_status_t.c.message_id == ident
        )
    ).first()
    if row is None:
        return None
    _forget_early(ident, conn)
    return str(row.status), row.error


def _expire_early(before: float, conn: sa.Connection) -> None:
    conn.execute(sa.delete(early_status_t).where(early_status_t.c.at < before))


def _forget_early(ident: str, conn: sa.Connection) -> None:
    conn.execute(sa.delete(early_status_t).where(early_status_t.c.message_id == ident))


def _why(exc: WhatsAppError) -> str:
    details = f": {exc.details}" if exc.details else ""
    return f"{exc.code} {exc.message}{details}"[:1000]


def _error_text(error: dict[str, Any]) -> str:
    data = as_dict(error.get("error_data"))
    details = data.get("details")
    text = f"{error.get('code')} {error.get('title') or error.get('message') or ''}".strip()
    return f"{text}: {details}" if details else text


def _shared_contact(card: Any) -> dict[str, Any]:
    card = as_dict(card)
    name = as_dict(card.get("name"))
    phones = [clean(as_dict(p).get("phone"), 40) or "" for p in as_list(card.get("phones"))[:10]]
    return {"name": clean(name.get("formatted_name"), NAME_MAX) or "", "phones": phones}
