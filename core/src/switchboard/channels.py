"""The channel contract: what a channel plugin implements and what it is given.

A plugin registers channel objects through ``register_channels(register)``. The runner
calls ``await channel.start(ctx)`` with a :class:`ChannelContext`, its only door into the
core, and ``await channel.stop()`` on shutdown. The outbox worker calls
``await channel.send(message)``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import attrs

from switchboard.address import Address, AddressError
from switchboard.errors import Invalid
from switchboard.models import (
    Agent,
    CallRecord,
    Contact,
    Disposition,
    Interaction,
    InteractionKind,
    InteractionStatus,
    SupervisionMode,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from switchboard.calls import CallLog
    from switchboard.core import Switchboard
    from switchboard.softphones import Softphones
    from switchboard.templates import Rendered

T = TypeVar("T")


@attrs.frozen
class InboundMessage:
    """What a channel hands to ``ctx.receive``.

    ``external_id`` is the channel's own id of the message (Telegram update id, email
    Message-ID...): the same (channel, external_id) is stored once, however often it comes.
    ``sender`` is an :class:`Address` or text the address book can parse.
    """

    external_id: str
    sender: Address | str
    text: str | None = None
    subject: str | None = None
    kind: InteractionKind = InteractionKind.MESSAGE
    sender_name: str | None = None
    meta: dict[str, Any] = attrs.field(factory=dict)
    received_at: datetime | None = None


@attrs.frozen
class OutboundMessage:
    """What the outbox worker asks a channel to send."""

    interaction_id: int
    channel: str
    address: Address
    text: str | None
    subject: str | None
    payload: dict[str, Any]
    attempt: int
    contact_id: int


@attrs.frozen
class Receipt:
    """A channel's answer to ``send``: the id the far side gave the message."""

    external_id: str
    meta: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Received:
    """What ``ctx.receive`` returns: the stored interaction, its contact, and whether the
    message had been stored before (a duplicate: no hook fired again)."""

    interaction: Interaction
    contact: Contact
    duplicate: bool
    contact_created: bool = False


class ChannelState(enum.StrEnum):
    """Where a registered channel stands (``/api/health``'s ``channels``)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    FAILING = "failing"
    NOT_CONFIGURED = "not configured"


class InvalidInbound(ValueError):
    """``ctx.receive`` cannot store this item as it is, and never will (a sender no address
    book reads, a value the database refuses): quarantine it (``ctx.quarantine``),
    acknowledge it upstream and go on. Any other exception from ``ctx.receive`` is
    transient (the store is down): do not acknowledge, the item comes again."""


class SendError(Exception):
    """Base of the errors ``Channel.send`` raises to tell the outbox what happened."""


class TransientSendError(SendError):
    """Try again later (timeouts, 4xx SMTP replies, HTTP 429/5xx...).

    ``retry_after`` (seconds), when the far side said how long to wait, replaces the
    outbox's own backoff for this attempt.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """Never retry (bad address, the user blocked the bot, 5xx SMTP replies...)."""


class NotConfigured(Exception):
    """Raised by ``Channel.start``: the plugin's settings do not ask for this channel (a
    plugin with two channels configured for one of them). The channel shows ``not
    configured`` in ``/api/health`` with this text, and is not restarted."""


@runtime_checkable
class Channel(Protocol):
    """A way to reach contacts. ``name`` is what interactions and the API call it
    (``telegram``); ``address_kind`` is the kind of address it sends to (``telegram``,
    ``email``, ``phone``)."""

    name: str
    address_kind: str
    # Optional: ``max_concurrency`` (int, default 1): how many sends the outbox may run at
    # once on this channel (the email channel says its SMTP pool size). With 1, messages
    # go one by one in order.
    # Optional: ``async def admit(contact_id, address, payload) -> None``: asked before a
    # message is queued for this channel (``POST /api/messages``, ``sb.send_message``,
    # ``outbox.enqueue``); raise ``Invalid`` with the reason to refuse it there and then,
    # never queued to fail later (WhatsApp's 24-hour window). Asked only while the
    # channel runs in this process; not asked for ``outbox.queue_in`` (a plugin's bulk
    # queueing checks its own messages).
    # Optional: ``async def window(contact) -> datetime | None``: the end of the
    # contact's customer-service window on this channel (past: closed; None: never
    # opened), shown on the contact (``GET /api/contacts/{id}``'s ``windows``, the console).
    # Optional: ``templates_outside_window`` (bool, default False): approved templates may
    # still go once the window closed (WhatsApp's); the console then offers them.

    async def start(self, ctx: ChannelContext) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, message: OutboundMessage) -> Receipt: ...


@runtime_checkable
class VoiceChannel(Channel, Protocol):
    """A channel that can also place calls (click-to-call)."""

    async def dial(self, agent: Agent, address: Address) -> str:
        """Ring the agent, then the address; return the call id."""
        ...


@runtime_checkable
class CallControl(Protocol):
    """A voice channel that can act on its calls while they talk (the console's and the
    API's hold, resume and transfer buttons). Each method raises ``LookupError`` when the
    call is not talking on this channel now, ``ValueError`` for a target it cannot call."""

    async def hold(self, call_id: str) -> None:
        """Put the customer on hold: they hear music, the agent hears nothing."""
        ...

    async def resume(self, call_id: str) -> None:
        """Take the customer off hold."""
        ...

    async def transfer(self, call_id: str, to: Agent | Address) -> None:
        """Hand the customer to another agent (their extension) or a number; returns once
        the call talks to them (the record's agent follows: ``calls.transferred``), or
        raises ``ValueError`` with why it could not (then the call stays as it was).
        During a consultation with ``to``, completes it (an attended transfer)."""
        ...

    async def consult(self, call_id: str, to: Agent | Address) -> None:
        """Attended transfer's first step: the customer hears music while the agent talks
        to ``to``; returns once they answer. ``transfer`` to them completes it, ``resume``
        ends it and the agent talks to the customer again."""
        ...


@runtime_checkable
class CallSupervision(Protocol):
    """A voice channel on which a supervisor can join a call while it talks."""

    async def supervise(self, call_id: str, supervisor: Agent, mode: SupervisionMode) -> None:
        """Ring ``supervisor`` (their phone or softphone, as for any call) and, once
        answered, let them hear both sides (``listen``), talk to the agent alone
        (``whisper``) or to both (``barge``); returns once they are in (``calls.supervised``
        is the channel's to call). Called again for a supervisor already in, only the mode
        changes. ``LookupError`` when the call is not talking now, ``ValueError`` when the
        supervisor did not answer."""
        ...


@runtime_checkable
class CallSession(Protocol):
    """One live call as a voice channel hands it to a ``route_call`` handler (the IVR).

    It hides SIP: an IVR flow written against it works with any voice channel. Every
    method returns early (``""``, ``None``, ``False``) once the caller has hung up; check
    ``hung_up``. The call record is ``answered`` only when an agent takes the call
    (``bridge``); the caller hearing prompts is not an answer.
    """

    call: CallRecord
    contact: Contact

    @property
    def hung_up(self) -> bool: ...

    async def answer(self) -> None:
        """Pick up the caller's leg (prompts need it; ``play`` does it when needed)."""
        ...

    async def play(
        self, prompt: str | os.PathLike[str] | bytes, *, interruptible: bool = False
    ) -> str:
        """Play a WAV file (or 16-bit 8 kHz mono PCM). With ``interruptible``, a digit
        stops it and is returned (``collect_digits`` will not see it again), else ``""``."""
        ...

    async def collect_digits(
        self, max_digits: int = 1, timeout: float = 5.0, terminator: str | None = "#"
    ) -> str:
        """Digits pressed (RFC 2833 or SIP INFO) until ``max_digits``, the terminator, or
        ``timeout`` seconds without a digit; ``""`` on timeout."""
        ...

    async def bridge(
        self, agents: Sequence[Agent], *, ring_timeout: float | None = None
    ) -> Agent | None:
        """Ring the agents at once; the first to answer talks to the caller (recorded).
        Returns that agent once the conversation ends, or None if nobody answered."""
        ...

    async def record(self, max_seconds: float = 120.0) -> str | None:
        """Record the caller (voicemail) until hang-up, ``#`` or ``max_seconds``; the WAV
        is attached to the call record. Returns its path."""
        ...

    async def step(self, node: str, digits: str = "") -> None:
        """Append an IVR node visited (and the digits pressed there) to the record."""
        ...

    async def hangup(self, disposition: Disposition | None = None) -> None:
        """End the call, with the disposition to record (else the channel decides)."""
        ...


#: What ``route_call`` returns: a coroutine function that drives the call.
CallHandler = Callable[[CallSession], Awaitable[None]]


class ChannelContext:
    """A channel's handle on the core: receive messages, report calls, read settings."""

    def __init__(self, core: Switchboard, channel: str, plugin: str, settings: Any) -> None:
        self._core = core
        self.channel = channel
        self.plugin = plugin
        self.settings = settings
        self.logger = logging.getLogger(f"switchboard.channel.{channel}")

    @property
    def calls(self) -> CallLog:
        """The call-record lifecycle (``ringing``, ``answered``, ``ended``...)."""
        return self._core.calls

    @property
    def softphones(self) -> Softphones:
        """Browser softphones: ring an agent in the console (docs/softphone.md)."""
        return self._core.softphones

    @property
    def recordings_dir(self) -> str:
        return self._core.config.core.recordings_dir

    def files_dir(self, setting: str | os.PathLike[str]) -> Path:
        """The folder a channel keeps files from outside in (attachments, media): its
        setting as given when absolute, else beside the recordings folder. Call it when
        the channel starts: the folder joins the ones the runner serves attachments from
        and :meth:`local_file` accepts."""
        folder = Path(setting)
        folder = folder if folder.is_absolute() else Path(self.recordings_dir).parent / folder
        self._core.file_roots.add(folder)
        return folder

    def local_file(self, path: str | os.PathLike[str]) -> Path:
        """A file to send (an upload, a document), checked: it must resolve to a regular
        file inside the recordings folder or a channel's files folder. ``Invalid``
        otherwise, so a path from a payload or a template never reads anything else."""
        found = self._core.file_roots.check(path)
        if found is None:
            raise Invalid("a file in the recordings folder or a channel's files folder")
        return found

    async def transaction(self, work: Callable[[Connection], T], *, write: bool = True) -> T:
        """``work(conn)`` in a transaction on the store's database, for the plugin's own
        tables: see :meth:`Switchboard.transaction`."""
        return await self._core.transaction(work, write=write)

    async def publish(
        self, name: str, data: Mapping[str, Any], agents: Iterable[int] | None = None
    ) -> int:
        """Publish an event of this channel's plugin, ``<plugin>.<name>``: see
        :meth:`Switchboard.publish`."""
        return await self._core.publish(self.plugin, name, data, agents)

    def render(
        self,
        template: str,
        *,
        contact: Contact | None = None,
        address: Address | str | None = None,
        agent: Agent | None = None,
        call: CallRecord | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> Rendered:
        """Render a configured message template: see :meth:`Switchboard.render`."""
        return self._core.render(
            template, contact=contact, address=address, agent=agent, call=call, variables=variables
        )

    def agents(self) -> list[Agent]:
        """The configured agents (name, extension, email, role)."""
        return self._core.store.list_agents()

    def address(self, raw: str | Address) -> Address:
        """Parse and normalize an address with the configured default region."""
        return self._core.addresses.parse(raw)

    async def receive(self, message: InboundMessage) -> Received:
        """Store an inbound message on its contact's timeline (idempotent). Raises
        :class:`InvalidInbound` for an item that can never be stored."""
        try:
            return await self._core.inbox.receive(self.channel, message)
        except AddressError as exc:
            raise InvalidInbound(f"sender: {exc}") from exc

    async def record_sent(self, message: InboundMessage) -> Received:
        """A message our side sent outside Switchboard (from the provider's own app: VK's
        web interface, the WhatsApp Business app): stored once (by ``external_id``) on the
        timeline of the contact owning ``sender`` (the customer it went to) as outbound and
        sent; event ``message.sent`` and hook ``message_sent``. Check first that it is not
        one the outbox sent (``find_sent``)."""
        try:
            return await self._core.inbox.receive(self.channel, message, outbound=True)
        except AddressError as exc:
            raise InvalidInbound(f"recipient: {exc}") from exc

    async def edit(self, message: InboundMessage) -> Received:
        """A message was edited at its source: update the stored one (same external id)."""
        try:
            return await self._core.inbox.edit(self.channel, message)
        except AddressError as exc:
            raise InvalidInbound(f"sender: {exc}") from exc

    async def deleted(self, external_id: str, *, keep: bool = False) -> Interaction | None:
        """The sender deleted (unsent) a message stored from this channel: it stays on
        the timeline marked ``meta.deleted``; unless ``keep``, its text is cleared and its
        files deleted. Event ``message.deleted``; None when no message has that id."""
        return await self._core.inbox.deleted(self.channel, external_id, keep=keep)

    async def name_contact(self, address: Address | str, name: str) -> bool:
        """A name learned after the person's first message was stored (a profile lookup
        done in the background): the contact owning ``address`` takes it while it still
        has the name it was created with (the address itself); a name an agent gave is
        never overwritten. True when renamed."""
        return await self._core.name_contact(self.address(address), name)

    async def link_addresses(self, known: Address | str, new: Address | str) -> Contact:
        """Two addresses belong to one person: make them one contact (merging if needed)."""
        return await self._core.link_addresses(self.address(known), self.address(new))

    async def failed_later(self, external_id: str, reason: str) -> Interaction | None:
        """A message this channel sent (``Receipt.external_id``) was not delivered after
        all (a bounce): it becomes ``failed`` with the reason. None if unknown."""
        return await self._core.outbox.failed_later(self.channel, external_id, reason)

    async def last_inbound(
        self, *, contact_id: int | None = None, address: Address | str | None = None
    ) -> datetime | None:
        """When the contact last wrote on this channel (None: never): see
        :meth:`Switchboard.last_inbound`."""
        return await self._core.last_inbound(self.channel, contact_id=contact_id, address=address)

    async def delivered(self, external_id: str, *, read: bool = False) -> Interaction | None:
        """A message this channel sent reached the recipient (``read=True``: was read):
        the interaction becomes ``delivered`` / ``read`` (forward only) with the event
        ``message.delivered`` / ``message.read``. None when no sent message of this
        channel has that id yet (a receipt that overtook the send's own record)."""
        status = InteractionStatus.READ if read else InteractionStatus.DELIVERED
        return await self._core.outbox.delivery(self.channel, external_id, status)

    async def delivered_until(
        self, address: Address | str, until: datetime, *, read: bool = False
    ) -> list[Interaction]:
        """A watermark receipt (Messenger's ``delivery`` / ``read`` with a ``watermark``):
        every message this channel sent to ``address`` and recorded as sent at or before
        ``until`` becomes ``delivered`` / ``read`` (forward only), each with its event.
        Returns the ones that moved."""
        status = InteractionStatus.READ if read else InteractionStatus.DELIVERED
        return await self._core.outbox.delivery_until(
            self.channel, self.address(address), until, status
        )

    async def quarantine(
        self,
        external_id: str,
        reason: str,
        raw: str | bytes | Mapping[str, Any] | None = None,
    ) -> bool:
        """An inbound item this channel cannot store: keep it with the reason (and its raw
        form, bounded) for a person to look at, so the channel can acknowledge it upstream
        and move on. False if the same item was quarantined before."""
        return await self._core.quarantine.put(self.channel, external_id, reason, raw)

    def find_sent(self, external_id: str) -> Interaction | None:
        """The interaction this channel stored under ``external_id`` (e.g. the email a
        reply answers), or None."""
        return self._core.store.find_interaction(self.channel, external_id)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run a background task of the channel (a polling loop, a reader). It is cancelled
        when the channel stops; if it raises, the channel is reported failed (and restarted
        by the runner's supervisor)."""
        tasks = self._core.channels[self.channel].tasks
        return tasks.spawn(coro, name=name or f"{self.channel}-task")

    def supervise(
        self, name: str, run: Callable[[], Awaitable[None]], *, one_runner: bool = False
    ) -> None:
        """Run ``run()`` as a supervised loop of the channel, shown in ``/api/health``'s
        ``loops`` as ``CHANNEL:NAME``: when it raises, it is logged, shown ``failing``
        with the error (the service ``degraded``) and run again after a backoff, while the
        channel keeps running. For a part the channel can work without (a second SIP
        trunk, a secondary account), or that must run on one runner at a time; what the
        channel cannot work without belongs in ``start`` or ``spawn``. Stopped when the
        channel stops.

        ``one_runner``: work that must not run twice (a long poll, a mailbox reader):
        of several runners on one PostgreSQL only the one holding ``CHANNEL:NAME``
        (``/api/health``'s ``singletons``) runs it, and another takes over within
        ``[switchboard.nodes] takeover_seconds`` when that one dies. ``run()`` starts
        afresh on the new holder: keep what must survive (an offset) upstream or in the
        database. On SQLite (one runner) it just runs."""
        loop = f"{self.channel}:{name}"
        self._core.loops.start(loop, self._core.singletons.wrap(loop, run) if one_runner else run)
        self._core.channels[self.channel].loops.add(loop)

    def fail(self, reason: str) -> None:
        """Report that the channel broke (lost its connection for good, say)."""
        self._core.channel_failed(self.channel, reason)
