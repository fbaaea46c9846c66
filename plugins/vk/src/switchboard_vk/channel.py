"""The VK channel: a community's messages on the contact's timeline.

Inbound, in one of two modes: **Bots Long Poll** (the channel asks VK for updates; no public
URL; the position ``ts`` is saved only after the updates before it are stored) or the
**Callback API** (VK posts each update to the runner's ``/vk/callback``; the secret is
checked, the body kept, then ``ok``; see :mod:`switchboard_vk`). Each ``message_new`` is
stored on the card of ``vk:<user id>``, named through ``users.get``; photos, documents,
voice messages and stickers are downloaded with a size limit; ``message_edit`` updates the
stored text in place.

Outbound: through the outbox with ``messages.send``, paced to the token's limit, its
``random_id`` derived from our message, so VK sends a retried message once. Documents and
photos go by VK's upload flow. VK's rate-limit errors are retried; the others fail the
message with VK's text; a refused token fails the channel.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
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
    GroupCommit,
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
from switchboard.outside import as_dict, as_list, as_time, clean
from switchboard_vk.settings import VkSettings
from switchboard_vk.tables import callback_t, state_t

log = logging.getLogger("switchboard.channel.vk")

TEXT_MAX = 4096  # what a VK message holds; longer inbound text is cut there
NAME_MAX = 200
USER_ID = re.compile(r"^[1-9][0-9]{0,15}$")
#: VK's codes that mean "slow down" or "try again": retried with backoff.
RETRIED = {1, 6, 9, 10, 29}
#: A refused token: every call would fail, so the channel shows failing.
AUTH_FAILED = {5, 27, 28}
MEDIA = ("photo", "doc", "audio_message", "sticker")


def normalize_vk(raw: str, book: AddressBook) -> str:
    """A VK user id (``vk:1234567``): digits, as VK gives them."""
    value = raw.strip().removeprefix("id")
    if not USER_ID.fullmatch(value):
        raise AddressError(raw[:40], "expected a numeric VK user id", "vk")
    return value


class VkError(Exception):
    """An error answer of the VK API: ``code`` and VK's message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class VkApi:
    """The few VK API methods the channel calls, over httpx: ``POST /method/NAME`` with the
    token and version in the form body (never in the URL, where proxies and error messages
    would show it). See docs/vk.md for why not vkbottle."""

    def __init__(self, settings: VkSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self.base = settings.api_url.rstrip("/") + "/method/"

    async def call(self, method: str, **params: Any) -> Any:
        data = {k: str(v) for k, v in params.items() if v is not None}
        data["access_token"] = self.settings.access_token
        data["v"] = self.settings.api_version
        response = await self.http.post(self.base + method, data=data)
        try:
            body = response.json()
        except ValueError:
            raise VkError(10, f"not JSON from {method} (HTTP {response.status_code})") from None
        if not isinstance(body, dict):
            raise VkError(10, f"an answer of {method} that is not an object")
        if "error" in body:
            error = as_dict(body["error"])
            code = error.get("error_code")
            raise VkError(code if isinstance(code, int) else 1, str(error.get("error_msg"))[:500])
        return body.get("response")


class VkChannel:
    name = "vk"
    address_kind = "vk"

    def __init__(self) -> None:
        self.ctx: ChannelContext | None = None
        self.settings: VkSettings | None = None
        self.http: httpx.AsyncClient | None = None
        self.api: VkApi | None = None
        self.pacer: Pacer | None = None
        self.kept: KeptBodies | None = None
        self._names: dict[int, str] = {}
        self._ours: collections.deque[int] = collections.deque(maxlen=10_000)
        self._lookups: GroupCommit[int, str] | None = None

    @property
    def max_concurrency(self) -> int:
        return self.settings.max_concurrency if self.settings is not None else 1

    async def start(self, ctx: ChannelContext) -> None:
        settings = ctx.settings
        if not isinstance(settings, VkSettings):
            raise TypeError("the VK channel needs [plugins.vk] settings")
        self.ctx, self.settings = ctx, settings
        ctx.files_dir(settings.files_dir)  # the runner serves the files kept there
        self.http = httpx.AsyncClient(
            timeout=settings.request_timeout + settings.long_poll_wait, follow_redirects=False
        )
        self.api = VkApi(settings, self.http)
        self.pacer = Pacer(settings.requests_per_second, settings.per_recipient_seconds)
        self._lookups = GroupCommit(self._users_get, max_batch=1000, name="vk-users")
        try:  # a wrong token or community fails the start, shown in /api/health
            await self.api.call("groups.getById", group_id=settings.group_id)
        except (VkError, httpx.HTTPError) as exc:
            await self.stop()
            raise RuntimeError(f"VK refused the community or token: {exc}") from None
        if settings.mode == "callback":
            self.kept = KeptBodies(ctx, callback_t, self.handle)
            self.kept.start()
        else:
            ctx.supervise("longpoll", self._long_poll, one_runner=True)  # ts is kept

    async def stop(self) -> None:
        if self._lookups is not None:
            await self._lookups.close()
            self._lookups = None
        if self.kept is not None:
            await self.kept.close()
            self.kept = None
        if self.http is not None:
            await self.http.aclose()
        self.http = self.api = None

    # -- inbound: Callback API ------------------------------------------------------------

    async def accept(self, body: bytes) -> None:
        """Keep a Callback API body whose secret was checked (committed on return)."""
        if self.kept is None:
            raise RuntimeError("the VK channel is not running in callback mode")
        await self.kept.accept(body)

    # -- inbound: Bots Long Poll ----------------------------------------------------------

    async def _long_poll(self) -> None:
        """Ask for updates until stopped. ``ts`` moves on (and is saved) only once the
        updates before it are stored; VK's ``failed`` answers are followed (1: take the new
        ``ts``; 2: a new key; 3: a new key and ``ts``, updates in between are lost)."""
        assert self.api is not None
        assert self.settings is not None
        assert self.http is not None
        assert self.ctx is not None
        backoff = Backoff(1.0, 60.0)
        server: dict[str, Any] = {}
        position = Position(self.ctx, state_t, "ts")
        ts = await position.load()
        while True:
            try:
                if not server:
                    server = await self.api.call(
                        "groups.getLongPollServer", group_id=self.settings.group_id
                    )
                    ts = ts or str(server["ts"])
                response = await self.http.get(
                    str(server["server"]),
                    params={
                        "act": "a_check",
                        "key": server["key"],
                        "ts": ts,
                        "wait": self.settings.long_poll_wait,
                    },
                )
                answer = as_dict(response.json())
            except (VkError, httpx.HTTPError, ValueError, KeyError) as exc:
                delay = backoff.failed()
                self.ctx.logger.warning("long poll failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.succeeded()
            failed = answer.get("failed")
            if failed is not None:
                if failed == 1 and answer.get("ts") is not None:
                    ts = str(answer["ts"])
                else:  # 2: the key expired; 3: the key and the history are gone
                    if failed == 3:
                        self.ctx.logger.warning("VK lost the long poll history: new ts")
                        ts = None
                    server = {}
                continue
            updates = as_list(answer.get("updates"))
            await asyncio.gather(*(self.handle(u) for u in updates))
            ts = str(answer.get("ts") or ts)
            await position.save(ts)

    # -- inbound: both --------------------------------------------------------------------

    async def handle(self, update: Any) -> None:
        """Store what one update carries; an update of another kind is ignored, one that
        cannot be read is quarantined with the reason."""
        assert self.ctx is not None
        if not isinstance(update, dict):
            await self.ctx.quarantine("update", "an update that is not an object", update)
            return
        kind, obj = update.get("type"), as_dict(update.get("object"))
        if kind not in ("message_new", "message_edit", "message_reply"):
            log.debug("VK update %r ignored", str(kind)[:40])
            return
        message = as_dict(obj.get("message")) if kind == "message_new" else obj
        ident = _external_id(message)
        try:
            if kind == "message_reply":
                await self._reply(message)
                return
            inbound = await self.inbound(message)
            if kind == "message_edit":
                await self.ctx.edit(inbound)
            else:
                await self.ctx.receive(inbound)
        except (InvalidInbound, AddressError, KeyError, TypeError, ValueError) as exc:
            await self.ctx.quarantine(ident or "unknown", f"{type(exc).__name__}: {exc}", update)

    async def _reply(self, message: dict[str, Any]) -> None:
        """``message_reply``: the community wrote to a user. One the outbox sent (its
        ``random_id``, or its id recorded as sent) is on the timeline already; one written
        in VK's own interface is recorded there as sent."""
        assert self.ctx is not None
        peer, ident = message.get("peer_id"), message.get("id")
        if message.get("random_id") in self._ours:
            return
        if isinstance(ident, int):
            sent = await asyncio.to_thread(self.ctx.find_sent, f"{peer}:id{ident}")
            if sent is not None:
                return
        if not isinstance(peer, int) or not 0 < peer < 2_000_000_000:
            return  # a group chat: not one customer's timeline
        message = {**message, "from_id": peer}  # on the card of the user it went to
        await self.ctx.record_sent(await self.inbound(message))

    async def inbound(self, message: dict[str, Any]) -> InboundMessage:
        """The message to store for a VK message object (API 5.199)."""
        ident = _external_id(message)
        if ident is None:
            raise ValueError("a message without peer_id and conversation_message_id or id")
        sender = message.get("from_id")
        if not isinstance(sender, int) or sender <= 0:
            raise ValueError("not from a user (from_id)")  # a community's own messages
        meta: dict[str, Any] = {"vk_message_id": message.get("id"), "peer_id": message["peer_id"]}
        if isinstance(message.get("reply_message"), dict):
            meta["reply_to"] = _external_id(message["reply_message"])
        if message.get("payload") is not None:  # a keyboard button's payload
            meta["payload"] = clean(message["payload"], 1000)
        files = [
            await self._download(a)
            for a in as_list(message.get("attachments"))[:10]
            if isinstance(a, dict) and a.get("type") in MEDIA
        ]
        if files:
            meta["attachments"] = files
        others = [
            str(a.get("type"))[:32]
            for a in as_list(message.get("attachments"))
            if isinstance(a, dict) and a.get("type") not in MEDIA
        ]
        if others:
            meta["unsupported"] = others
        text = clean(message.get("text"), TEXT_MAX) or None
        if text is None and others and not files:
            text = f"[{', '.join(others)}]"
        return InboundMessage(
            external_id=ident,
            sender=f"vk:{sender}",
            text=text,
            sender_name=await self._name(sender),
            meta=meta,
            received_at=as_time(message.get("date")),
        )

    async def _name(self, user_id: int) -> str | None:
        """The user's name from ``users.get`` (kept for the run); None if VK will not say.
        Concurrent lookups go to VK together: one ``users.get`` for up to 1,000 users."""
        if user_id not in self._names:
            assert self._lookups is not None
            name = await self._lookups.submit(user_id)
            if len(self._names) > 50_000:
                self._names.clear()
            self._names[user_id] = name
        return self._names[user_id] or None

    async def _users_get(self, ids: list[int]) -> list[str | BaseException]:
        assert self.api is not None
        wanted = sorted(set(ids))
        try:
            users = await self.api.call("users.get", user_ids=",".join(map(str, wanted)))
        except (VkError, httpx.HTTPError) as exc:
            log.info("users.get for %d users failed: %s", len(wanted), exc)
            return ["" for _ in ids]
        names = {}
        for user in as_list(users):
            user = as_dict(user)
            full = f"{user.get('first_name') or ''} {user.get('last_name') or ''}".strip()
            names[user.get("id")] = clean(full, NAME_MAX) or ""
        return [names.get(i, "") for i in ids]

    async def _download(self, attachment: dict[str, Any]) -> dict[str, Any]:
        """Fetch an attachment's file (the largest photo size, the document, the voice
        message's OGG, the sticker's largest image), streamed and cut off at the limit."""
        assert self.settings is not None
        assert self.ctx is not None
        assert self.http is not None
        kind = str(attachment["type"])
        body = as_dict(attachment.get(kind))
        info: dict[str, Any] = {"kind": kind}
        url: Any = None
        if kind == "photo":
            sizes = [s for s in as_list(body.get("sizes")) if isinstance(s, dict)]
            best = max(
                sizes, key=lambda s: _int(s.get("width")) * _int(s.get("height")), default={}
            )
            url, info["mime_type"] = best.get("url"), "image/jpeg"
        elif kind == "doc":
            url = body.get("url")
            info["file_name"] = clean(body.get("title"), NAME_MAX)
            info["size"] = body.get("size") if isinstance(body.get("size"), int) else None
        elif kind == "audio_message":
            url, info["mime_type"] = body.get("link_ogg"), "audio/ogg"
            info["duration"] = (
                body.get("duration") if isinstance(body.get("duration"), int) else None
            )
        else:  # sticker
            images = [i for i in as_list(body.get("images")) if isinstance(i, dict)]
            best = max(images, key=lambda i: _int(i.get("width")), default={})
            url, info["mime_type"] = best.get("url"), "image/png"
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            info["error"] = "no file URL"
            return info
        return await download_file(
            self.http,
            url,
            info,
            folder=self.ctx.files_dir(self.settings.files_dir),
            limit=self.settings.max_file_bytes,
            fallback=_name_of(kind),
        )

    # -- outbound -------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> Receipt:
        """``messages.send`` to the user (``peer_id``), with a ``random_id`` of our message:
        VK keeps the first message with a given ``random_id`` and drops a repeat, so a send
        retried after a lost answer is one message."""
        if self.api is None or self.pacer is None or self.ctx is None:
            raise TransientSendError("the VK channel is not running")
        peer = message.address.value
        params: dict[str, Any] = {
            "peer_id": int(peer),
            "random_id": random_id(message),
            "message": message.text or "",
        }
        # its message_reply echo is ours, not one written in VK's interface
        self._ours.append(params["random_id"])
        try:
            document = message.payload.get("file")
            if document is not None:
                params["attachment"] = await self._upload(int(peer), document)
            keyboard = message.payload.get("keyboard")
            if keyboard is not None:
                params["keyboard"] = _keyboard(keyboard)
            await self.pacer.wait(peer)
            sent = await self.api.call("messages.send", **params)
        except Invalid as exc:
            raise PermanentSendError(str(exc)) from None
        except VkError as exc:
            if exc.code in AUTH_FAILED:
                self.ctx.fail(f"VK refused the token: {exc}")
                raise TransientSendError(str(exc)) from None
            if exc.code in RETRIED:
                raise TransientSendError(str(exc)) from None
            raise PermanentSendError(str(exc)) from None
        except httpx.HTTPError as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from None
        # VK's message id, marked: inbound ids are conversation numbers, another count
        return Receipt(external_id=f"{peer}:id{sent}" if isinstance(sent, int) else str(sent))

    async def _upload(self, peer: int, document: Any) -> str:
        """A local file (a recording, a file we keep: ``ctx.local_file``) uploaded through
        VK's flow for messages: a photo by ``photos.*``, anything else as a document."""
        assert self.api is not None
        assert self.http is not None
        assert self.ctx is not None
        assert self.pacer is not None
        path = self.ctx.local_file(str(document))
        data = await asyncio.to_thread(path.read_bytes)
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif"):
            await self.pacer.wait(str(peer))
            server = await self.api.call("photos.getMessagesUploadServer", peer_id=peer)
            uploaded = as_dict(await self._post_file(server, "photo", path.name, data))
            await self.pacer.wait(str(peer))
            saved = await self.api.call(
                "photos.saveMessagesPhoto",
                server=uploaded.get("server"),
                photo=uploaded.get("photo"),
                hash=uploaded.get("hash"),
            )
            photo = as_dict(as_list(saved)[0] if as_list(saved) else None)
            key = f"_{photo['access_key']}" if photo.get("access_key") else ""
            return f"photo{photo['owner_id']}_{photo['id']}{key}"
        await self.pacer.wait(str(peer))
        server = await self.api.call("docs.getMessagesUploadServer", peer_id=peer, type="doc")
        uploaded = as_dict(await self._post_file(server, "file", path.name, data))
        await self.pacer.wait(str(peer))
        saved = as_dict(
            await self.api.call("docs.save", file=uploaded.get("file"), title=path.name)
        )
        doc = as_dict(saved.get("doc"))
        return f"doc{doc['owner_id']}_{doc['id']}"

    async def _post_file(self, server: Any, field: str, name: str, data: bytes) -> Any:
        assert self.http is not None
        url = as_dict(server).get("upload_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise VkError(10, "no upload_url")
        response = await self.http.post(url, files={field: (name, data)})
        answer = response.json()
        if not isinstance(answer, dict) or answer.get("error"):
            raise VkError(100, f"upload refused: {str(answer)[:200]}")
        return answer


def random_id(message: OutboundMessage) -> int:
    """VK's ``random_id`` for our message: the same on every attempt, and different for
    different messages even when a database starts its ids again (VK remembers the ids a
    community used): a 31-bit digest of the message's id, contact and text."""
    seed = f"{message.interaction_id}:{message.contact_id}:{message.text or ''}".encode()
    return int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") & 0x7FFFFFFF or 1


def _keyboard(spec: Any) -> str:
    """A keyboard payload as VK's JSON: ``{"buttons": [[{"action": {...}}]], "inline"?,
    "one_time"?}`` (VK's own form, checked for shape and size)."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("buttons"), list):
        raise Invalid("keyboard: an object with buttons (rows of buttons)")
    text = json.dumps(spec, ensure_ascii=False)
    if len(text) > 10_000:
        raise Invalid("keyboard: at most 10,000 characters of JSON")
    return text


def _external_id(message: dict[str, Any]) -> str | None:
    """A message's id that is the same in every update about it: the conversation and
    the message's number in it (``peer_id:conversation_message_id``)."""
    peer, number = message.get("peer_id"), message.get("conversation_message_id")
    if isinstance(peer, int) and isinstance(number, int):
        return f"{peer}:{number}"
    if isinstance(peer, int) and isinstance(message.get("id"), int) and message["id"] > 0:
        return f"{peer}:id{message['id']}"
    return None


def _name_of(kind: str) -> str:
    return {"photo": "photo.jpg", "audio_message": "voice.ogg", "sticker": "sticker.png"}.get(
        kind, kind
    )


def _area(size: dict[str, Any]) -> int:
    return _int(size.get("width")) * _int(size.get("height"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
