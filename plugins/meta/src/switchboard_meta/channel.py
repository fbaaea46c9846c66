"""The Messenger and Instagram Direct channels: Messenger Platform webhooks in, the Send
API out. One class, two instances (``messenger`` and ``instagram``): Meta sends both the
same way, with a few differences noted where they matter.

Inbound: Meta posts signed webhooks to the runner (``/meta/webhook``, see
:mod:`switchboard_meta`); each body is kept, then read: messages (text, attachments
downloaded with a size limit, quick replies, story replies and mentions), postbacks,
reactions, edits and unsends go on the timeline of the contact owning the sender's id
(``messenger:<PSID>`` / ``instagram:<IGSID>``), named through the profile API; delivery
and read receipts move sent messages forward; echoes of messages the Page sent from
Meta's own inbox are recorded as sent.

Outbound: through the outbox (text, quick replies, attachments by URL or upload), from the
Page the person wrote to, paced, within the standard messaging window (24 h after the
person's last message; 7 days with the ``HUMAN_AGENT`` tag where the Page is approved).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

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
    NotConfigured,
    OutboundMessage,
    Pacer,
    PermanentSendError,
    Receipt,
    TransientSendError,
    download_file,
)
from switchboard.outside import as_dict, as_list, as_time, clean
from switchboard_meta.graph import OUTSIDE_WINDOW, TOKEN_EXPIRED, Graph, GraphError
from switchboard_meta.people import People
from switchboard_meta.settings import MetaSettings, PageSettings
from switchboard_meta.tables import webhook_tables

log = logging.getLogger("switchboard.channel.meta")

MESSENGER = "messenger"
INSTAGRAM = "instagram"
#: The webhook ``object`` of each channel.
OBJECTS = {"page": MESSENGER, "instagram": INSTAGRAM}
USER_ID = re.compile(r"^[0-9]{1,64}$")
TEXT_MAX = 20_000  # inbound text is cut here (Meta sends up to 2,000 characters)
SEND_TEXT_MAX = 2000  # what the Send API takes in one text message
NAME_MAX = 200
MAX_ATTACHMENTS = 10
#: Attachment types whose ``payload.url`` is a file to keep; the others are links.
FILES = {"image", "video", "audio", "file", "story_mention"}
SEND_KINDS = ("image", "video", "audio", "file")
HUMAN_AGENT_HOURS = 24 * 7
QUICK_REPLIES_MAX = 13
SENT_REMEMBERED = 10_000
ACCOUNT_FIELDS = {MESSENGER: "id,name", INSTAGRAM: "id,username"}


def normalize_user_id(raw: str, book: AddressBook) -> str:
    """A Page-scoped (PSID) or Instagram-scoped (IGSID) id: digits, kept as given."""
    value = raw.strip()
    if not USER_ID.fullmatch(value):
        raise AddressError(raw[:40], "not a Meta user id (PSID or IGSID: digits)", "meta")
    return value


class MetaChannel:
    """``messenger`` or ``instagram`` (``name``): each reads its own kept webhook bodies
    and sends through the Pages of ``[plugins.meta]`` that serve it."""

    def __init__(self, name: str) -> None:
        if name not in (MESSENGER, INSTAGRAM):
            raise ValueError(f"a Meta channel is messenger or instagram, not {name!r}")
        self.name = name
        self.address_kind = name
        self.ctx: ChannelContext | None = None
        self.settings: MetaSettings | None = None
        self.accounts: dict[str, PageSettings] = {}  # the account id people write to
        self.http: httpx.AsyncClient | None = None
        self.graph: Graph | None = None
        self.pacer: Pacer | None = None
        self.kept: KeptBodies | None = None
        self.people = People(name)  # who wrote to which account, and their names
        self._sent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._inflight: collections.Counter[str] = collections.Counter()
        self._sends_done = asyncio.Condition()

    @property
    def max_concurrency(self) -> int:
        return self.settings.max_concurrency if self.settings is not None else 1

    def account_of(self, page: PageSettings) -> str | None:
        """The id people write to on this channel: the Page, or its Instagram account."""
        if self.name == MESSENGER:
            return page.id if page.messenger else None
        return page.instagram_id

    async def start(self, ctx: ChannelContext) -> None:
        settings = ctx.settings
        if not isinstance(settings, MetaSettings):
            raise TypeError("the Meta channels need [plugins.meta] settings")
        accounts = {a: p for p in settings.pages if (a := self.account_of(p)) is not None}
        if not accounts:
            wanted = "messenger = true" if self.name == MESSENGER else "an instagram_id"
            raise NotConfigured(f"no [[plugins.meta.pages]] with {wanted}")
        self.ctx, self.settings, self.accounts = ctx, settings, accounts
        ctx.files_dir(settings.files_dir)  # the runner serves the attachments kept there
        self.http = httpx.AsyncClient(timeout=settings.request_timeout)
        self.graph = Graph(self.http, settings.graph_url, settings.api_version)
        self.pacer = Pacer(settings.messages_per_second, settings.per_recipient_seconds)
        for account, page in accounts.items():  # a wrong token fails the start (health)
            try:
                await self.graph.get(account, page.access_token, ACCOUNT_FIELDS[self.name])
            except GraphError as exc:
                await self.stop()
                raise RuntimeError(
                    f"the Graph API refused {self.name} account {account}: {exc}"
                ) from None
        self._sends_done = asyncio.Condition()  # this event loop's
        self.people.start(ctx, settings, accounts, self.graph)
        self.kept = KeptBodies(ctx, webhook_tables[self.name], self.handle)
        self.kept.start()

    async def stop(self) -> None:
        if self.kept is not None:
            await self.kept.close()
            self.kept = None
        if self.http is not None:
            await self.http.aclose()
        self.http = self.graph = None

    async def accept(self, body: bytes) -> None:
        """Keep a signed webhook body (committed when this returns) for the reader."""
        if self.kept is None:
            raise RuntimeError(f"the {self.name} channel is not running")
        await self.kept.accept(body)

    # -- inbound --------------------------------------------------------------------------

    async def handle(self, payload: Mapping[str, Any]) -> int:
        """Store what one webhook body carries; return how many events it held. An event
        that cannot be read is quarantined with the reason; the others are stored."""
        events = [
            (clean(as_dict(entry).get("id"), 64) or "", as_dict(event))
            for entry in as_list(payload.get("entry"))
            for event in as_list(as_dict(entry).get("messaging"))
        ]
        for account, event in events:
            try:
                await self._event(account, event)
            except (InvalidInbound, AddressError, KeyError, TypeError, ValueError) as exc:
                await self._quarantine(event, f"{type(exc).__name__}: {exc}")
        for account, event in events:  # after they are stored: their contacts exist
            user = _user_of(event, account)
            if user is not None and account in self.accounts:
                self.people.learn(user, account)
        return len(events)

    async def _quarantine(self, event: dict[str, Any], reason: str) -> None:
        assert self.ctx is not None
        message = as_dict(event.get("message") or event.get("message_edit"))
        ident = clean(message.get("mid"), 255) or f"event@{event.get('timestamp')}"
        await self.ctx.quarantine(ident[:255], reason, event)

    async def _event(self, account: str, event: dict[str, Any]) -> None:
        assert self.ctx is not None
        assert self.settings is not None
        if account not in self.accounts:
            raise ValueError(f"an event for account {account[:64]!r}, not one of [plugins.meta]")
        user = _user_of(event, account)
        if user is None:
            raise ValueError("an event without the person's id (sender / recipient)")
        when = as_time(event.get("timestamp"), per_second=1000)
        if "message" in event:
            message = as_dict(event["message"])
            if message.get("is_echo"):
                await self._echo(user, message, when)
            elif message.get("is_deleted"):
                await self.ctx.deleted(_mid(message), keep=self.settings.keep_unsent)
            else:
                await self.ctx.receive(await self.inbound(user, message, when))
        elif "message_edit" in event:
            edit = as_dict(event["message_edit"])
            await self.ctx.edit(
                self._message(user, _mid(edit), clean(edit.get("text"), TEXT_MAX), {}, when)
            )
        elif "postback" in event:
            postback = as_dict(event["postback"])
            ident = clean(postback.get("mid"), 255) or f"postback:{user}:{event.get('timestamp')}"
            meta: dict[str, Any] = {
                "type": "postback",
                "postback": {"payload": clean(postback.get("payload"), 1000)},
            }
            text = clean(postback.get("title"), NAME_MAX) or ""
            await self.ctx.receive(self._message(user, ident, text, meta, when))
        elif "reaction" in event:
            reaction = as_dict(event["reaction"])
            to = _mid(reaction)
            removed = reaction.get("action") == "unreact"
            meta = {
                "type": "reaction",
                "reaction_to": to,
                "reaction": clean(reaction.get("reaction"), 32),
            }
            text = "" if removed else (clean(reaction.get("emoji"), 16) or "")
            ident = f"reaction:{to}:{user}:{event.get('timestamp')}"[:255]
            await self.ctx.receive(self._message(user, ident, text, meta, when))
        elif "delivery" in event:
            delivery = as_dict(event["delivery"])
            for mid in as_list(delivery.get("mids"))[:100]:
                if isinstance(mid, str):
                    await self.ctx.delivered(mid[:255])
            watermark = as_time(delivery.get("watermark"), per_second=1000)
            if watermark is not None:
                await self.ctx.delivered_until(f"{self.name}:{user}", watermark)
        elif "read" in event:
            read = as_dict(event["read"])
            if isinstance(read.get("mid"), str):  # Instagram names the message it saw
                await self.ctx.delivered(read["mid"][:255], read=True)
            watermark = as_time(read.get("watermark"), per_second=1000) or when
            if watermark is not None:  # everything sent before it was seen
                await self.ctx.delivered_until(f"{self.name}:{user}", watermark, read=True)
        # other events (referrals, opt-ins, handover) are not timeline items

    def _message(
        self,
        user: str,
        ident: str,
        text: str | None,
        meta: dict[str, Any],
        when: datetime | None,
    ) -> InboundMessage:
        return InboundMessage(
            external_id=ident,
            sender=f"{self.name}:{user}",
            text=text,
            sender_name=self.people.name(user),
            meta=meta,
            received_at=when,
        )

    async def inbound(
        self, user: str, message: dict[str, Any], when: datetime | None
    ) -> InboundMessage:
        """The message to store for one ``message`` event from ``user``."""
        ident = _mid(message)
        text = clean(message.get("text"), TEXT_MAX)
        meta: dict[str, Any] = {"type": "text"}
        reply = as_dict(message.get("quick_reply"))
        if reply:
            meta["reply"] = {"payload": clean(reply.get("payload"), 1000)}
        replied = as_dict(message.get("reply_to"))
        if isinstance(replied.get("mid"), str):
            meta["reply_to"] = clean(replied["mid"], 255)
        story = as_dict(replied.get("story"))
        if story:
            meta["story_reply"] = {
                "id": clean(story.get("id"), 64),
                "url": clean(story.get("url"), 2000),
            }
        items = as_list(message.get("attachments"))
        if items:
            found = [await self._attachment(a) for a in items[:MAX_ATTACHMENTS]]
            meta["attachments"] = found
            meta["type"] = found[0]["kind"]
        if message.get("is_unsupported"):
            meta["unsupported"] = True
            text = text or "[a message Meta does not pass on]"
        return self._message(user, ident, text, meta, when)

    async def _attachment(self, item: Any) -> dict[str, Any]:
        """One attachment: a file downloaded (streamed, cut off at ``max_file_bytes``), or
        a link (a shared post, a reel) noted as it came."""
        assert self.ctx is not None
        assert self.settings is not None
        assert self.http is not None
        item = as_dict(item)
        payload = as_dict(item.get("payload"))
        kind = clean(item.get("type"), 32) or "unknown"
        info: dict[str, Any] = {"kind": kind}
        for key, limit in (("title", NAME_MAX), ("sticker_id", 64)):
            if payload.get(key) is not None:
                info[key] = clean(str(payload[key]), limit)
        url = payload.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            info["error"] = "no http(s) URL"
            return info
        if kind not in FILES:
            info["url"] = clean(url, 2000)
            info["skipped"] = "a link, not a file"
            return info
        return await download_file(  # Meta's signed CDN links: no token goes with them
            self.http,
            url,
            info,
            folder=self.ctx.files_dir(self.settings.files_dir),
            limit=self.settings.max_file_bytes,
            fallback=kind,
        )

    async def _echo(self, user: str, message: dict[str, Any], when: datetime | None) -> None:
        """A message the account sent: ours (the outbox records it) or sent from Meta's
        own inbox, recorded as sent on the person's timeline."""
        assert self.ctx is not None
        ident = _mid(message)
        if self._inflight[user]:  # its send may be ours and not answered yet
            with contextlib.suppress(TimeoutError):
                async with self._sends_done:
                    await asyncio.wait_for(
                        self._sends_done.wait_for(lambda: not self._inflight[user]),
                        timeout=2 * (self.settings.request_timeout if self.settings else 20.0),
                    )
        if ident in self._sent:
            return
        if await asyncio.to_thread(self.ctx.find_sent, ident) is not None:
            return
        inbound = await self.inbound(user, message, when)
        await self.ctx.record_sent(inbound)

    # -- outbound -------------------------------------------------------------------------

    def _window(self) -> tuple[timedelta, timedelta | None]:
        """The standard window, and the Human Agent one (None: the Page is not approved)."""
        assert self.settings is not None
        human = timedelta(hours=HUMAN_AGENT_HOURS) if self.settings.human_agent else None
        return timedelta(hours=self.settings.window_hours), human

    async def window(self, contact: Contact) -> datetime | None:
        """When messages to ``contact`` stop being allowed (None: they never wrote)."""
        assert self.ctx is not None
        last = await self.ctx.last_inbound(contact_id=contact.id)
        standard, human = self._window()
        return last + max(standard, human or standard) if last else None

    async def admit(
        self, contact_id: int | None, address: Address | None, payload: Mapping[str, Any]
    ) -> None:
        """Messages only within the window after the person's last message (Meta's
        standard messaging rule); a malformed payload is refused now (422)."""
        assert self.ctx is not None
        _quick_replies(payload.get("quick_replies"))
        if "attachment" in payload:
            self.attachment_source(payload["attachment"])
        last = await self.ctx.last_inbound(contact_id=contact_id, address=address)
        self._messaging(last, strict=True)

    def _messaging(self, last: datetime | None, *, strict: bool = False) -> dict[str, str]:
        """The ``messaging_type`` (and ``tag``) a message sent now needs. ``strict``:
        ``Invalid`` outside every window the Page may use; else such a message goes as a
        ``RESPONSE`` and Meta has the last word (code 10 / 2018278: failed with the text)."""
        standard, human = self._window()
        age = datetime.now(UTC) - last if last is not None else None
        if age is not None and age <= standard:
            return {"messaging_type": "RESPONSE"}
        if age is not None and human is not None and age <= human:
            return {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
        if not strict:
            return {"messaging_type": "RESPONSE"}
        since = "never wrote here" if last is None else f"last wrote {last.isoformat()}"
        rule = f"{standard.total_seconds() / 3600:g}-hour"
        if human is not None:
            rule += " (7 days with the HUMAN_AGENT tag)"
        raise Invalid(f"outside {self.name}'s {rule} messaging window (the person {since})")

    def attachment_source(self, spec: Any) -> tuple[str, str | Path]:
        """The kind and source of an ``attachment`` payload: an http(s) ``url`` (Meta
        fetches it), or a ``path`` to upload (Messenger only), which must be a file in the
        recordings folder or a channel's files folder (``ctx.local_file``)."""
        assert self.ctx is not None
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind not in SEND_KINDS:
            raise Invalid(f"attachment.kind: one of {', '.join(SEND_KINDS)}")
        url, path = spec.get("url"), spec.get("path")
        if isinstance(url, str) and path is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2000:
                raise Invalid("attachment.url: an http(s) URL")
            return kind, url
        if not isinstance(path, str) or url is not None:
            raise Invalid("attachment: a url or a path (one of them)")
        if self.name == INSTAGRAM:
            raise Invalid("attachment.path: Instagram takes attachments by URL only")
        try:
            return kind, self.ctx.local_file(path)
        except Invalid as exc:
            raise Invalid(f"attachment.path: {exc}") from None

    async def send(self, message: OutboundMessage) -> Receipt:
        assert self.ctx is not None
        assert self.graph is not None
        assert self.pacer is not None
        user = message.address.value
        payload = message.payload
        page = await self.people.account_for(user)
        try:
            how = self._messaging(await self.ctx.last_inbound(contact_id=message.contact_id))
            quick = _quick_replies(payload.get("quick_replies"))
            attachment = (
                self.attachment_source(payload["attachment"]) if "attachment" in payload else None
            )
        except Invalid as exc:  # queued by a process where the channel did not run
            raise PermanentSendError(str(exc)) from None
        parts = _pieces(message.text or "")
        if attachment is None and not parts:
            raise PermanentSendError("nothing to send: no text and no attachment")
        mids: list[str] = []
        self._inflight[user] += 1
        try:
            if attachment is not None:
                await self.pacer.wait(user)
                mids.append(await self._send_attachment(page, user, how, *attachment))
            for n, part in enumerate(parts, 1):
                body: dict[str, Any] = {"text": part}
                if quick and n == len(parts):  # the buttons under the last piece
                    body["quick_replies"] = quick
                await self.pacer.wait(user)
                mids.append(await self._send(page, user, how, body))
        except GraphError as exc:
            raise self._send_error(exc) from None
        finally:
            for mid in mids:
                self._sent[mid] = None
            while len(self._sent) > SENT_REMEMBERED:
                self._sent.popitem(last=False)
            self._inflight[user] -= 1
            if not self._inflight[user]:
                del self._inflight[user]
            async with self._sends_done:
                self._sends_done.notify_all()
        meta = {"mids": mids} if len(mids) > 1 else {}
        return Receipt(external_id=mids[-1], meta=meta)

    async def _send(
        self, page: PageSettings, user: str, how: dict[str, str], message: dict[str, Any]
    ) -> str:
        assert self.graph is not None
        body = {"recipient": {"id": user}, **how, "message": message}
        answer = await self.graph.send(page.id, page.access_token, body)
        mid = answer.get("message_id")
        if not isinstance(mid, str) or not mid:
            raise GraphError(200, 0, "the Send API answered no message_id")
        return mid[:255]

    async def _send_attachment(
        self, page: PageSettings, user: str, how: dict[str, str], kind: str, source: str | Path
    ) -> str:
        assert self.graph is not None
        if isinstance(source, Path):  # uploaded first, then sent by its id
            ident = await self.graph.upload(page.id, page.access_token, kind, source)
            payload: dict[str, Any] = {"attachment_id": ident}
        else:
            payload = {"url": source, "is_reusable": True}
        return await self._send(page, user, how, {"attachment": {"type": kind, "payload": payload}})

    def _send_error(self, exc: GraphError) -> Exception:
        assert self.ctx is not None
        if exc.code == TOKEN_EXPIRED:  # every send would fail: show it in health
            self.ctx.fail(f"the Graph API refused the Page token: {exc}")
            return TransientSendError(str(exc))
        if exc.transient:
            return TransientSendError(str(exc))
        if (exc.code, exc.subcode) == OUTSIDE_WINDOW:
            return PermanentSendError(f"outside the messaging window: {exc}")
        return PermanentSendError(str(exc))


def _user_of(event: dict[str, Any], account: str) -> str | None:
    """The person's id in an event: the sender, or the recipient of an echo."""
    for side in ("sender", "recipient"):
        ident = as_dict(event.get(side)).get("id")
        if isinstance(ident, str | int) and str(ident) != account:
            ident = str(ident)
            return ident if USER_ID.fullmatch(ident) else None
    return None


def _mid(item: dict[str, Any]) -> str:
    mid = item.get("mid")
    if not isinstance(mid, str) or not 0 < len(mid) <= 255:
        raise ValueError("a message id (mid) of 1 to 255 characters")
    return mid


def _pieces(text: str) -> list[str]:
    """``text`` in pieces the Send API takes (``SEND_TEXT_MAX`` characters), cut at a line
    break or a space near the end of each where there is one."""
    pieces = []
    while len(text) > SEND_TEXT_MAX:
        cut = max(text.rfind("\n", 0, SEND_TEXT_MAX), text.rfind(" ", 0, SEND_TEXT_MAX))
        cut = cut + 1 if cut > SEND_TEXT_MAX - 200 else SEND_TEXT_MAX
        pieces.append(text[:cut])
        text = text[cut:]
    return [*pieces, text] if text else pieces


def _quick_replies(spec: Any) -> list[dict[str, str]]:
    """The Send API's ``quick_replies`` for a ``quick_replies`` payload: ``[{"title",
    "payload"}]``, 1 to 13, titles up to 20 characters; ``Invalid`` naming the part."""
    if spec is None:
        return []
    if not isinstance(spec, list) or not 1 <= len(spec) <= QUICK_REPLIES_MAX:
        raise Invalid(f"quick_replies: 1 to {QUICK_REPLIES_MAX} of them")
    out = []
    for item in spec:
        title, data = as_dict(item).get("title"), as_dict(item).get("payload")
        if not isinstance(title, str) or not 0 < len(title) <= 20 or "\x00" in title:
            raise Invalid("quick_replies[].title: text of 1 to 20 characters")
        if not isinstance(data, str) or not 0 < len(data) <= 1000 or "\x00" in data:
            raise Invalid("quick_replies[].payload: text of 1 to 1000 characters")
        out.append({"content_type": "text", "title": title, "payload": data})
    return out
