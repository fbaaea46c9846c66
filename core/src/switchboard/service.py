"""What agents and plugins do through the core, as one set of methods on
:class:`~switchboard.Switchboard`: contacts, the timeline, click-to-call, messages and
callback tasks, with the same permission rules wherever they are called from.

The HTTP API's handlers (``switchboard/api/``) and the console's pages both call these:
the rules live here once, and each front end only parses its input and shows the result.
They raise domain errors (``NotFound``, ``Invalid``, ``Forbidden``, ``Unavailable``...),
never HTTP ones; blocking store calls run off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from switchboard import sharing
from switchboard.address import Address, AddressError
from switchboard.auth import Principal
from switchboard.channels import CallControl, CallSupervision, ChannelState, VoiceChannel
from switchboard.errors import Forbidden, Invalid, NotFound, Unavailable
from switchboard.files import Attachment, FileRoots, attachments
from switchboard.limits import one_line as one_line_cut
from switchboard.models import (
    Agent,
    CallRecord,
    Contact,
    Interaction,
    InteractionKind,
    Role,
    SupervisionMode,
)
from switchboard.search import CallHit, CallSearch
from switchboard.store import address_t, contact_t, interaction_t
from switchboard.templates import Rendered, template_values

if TYPE_CHECKING:
    from switchboard.address import AddressBook
    from switchboard.config import Config
    from switchboard.core import ChannelHandle
    from switchboard.events import EventHub
    from switchboard.outbox import Outbox
    from switchboard.relay import CallRelay
    from switchboard.store import Store
    from switchboard.templates import Templates

#: Leave a contact's field as it is (``update_contact``).
KEEP: Any = attrs.NOTHING


@attrs.frozen
class Timeline:
    """One page of a contact's timeline, newest first: the interactions, the call
    records of the calls among them (by interaction id), and where the next page starts
    (``before=next_before``; None on the last page)."""

    items: list[Interaction]
    calls: dict[int, CallRecord]
    next_before: int | None


#: The bounds of what people type, wherever it comes in (the API's bodies say the same).
NAME_MAX, SUBJECT_MAX, TEXT_MAX = 300, 998, 100_000


def one_line(value: str | None, field: str, limit: int, *, required: bool = False) -> None:
    """``Invalid`` unless ``value`` is one line (no CR, LF or NUL) of at most ``limit``
    characters (and not empty when ``required``)."""
    if value is None:
        return
    if required and not value.strip():
        raise Invalid(f"{field}: required")
    if len(value) > limit or any(c in value for c in "\r\n\x00"):
        raise Invalid(f"{field}: one line of at most {limit} characters")


def can_hear(call: CallRecord, who: Principal) -> bool:
    """Whether ``who`` may hear the call's recording: the agent who took it, supervisors
    and admins."""
    return who.sees_all or (who.agent_id is not None and call.agent_id == who.agent_id)


#: Whoever holds a signed recording link: it opens that one recording (the link is the key).
LINK_HOLDER = Principal(name="recording link", role=Role.SUPERVISOR)


class ServiceAPI:
    """Mixed into :class:`~switchboard.Switchboard`; see docs/plugins.md."""

    if TYPE_CHECKING:
        store: Store
        config: Config
        addresses: AddressBook
        outbox: Outbox
        events: EventHub
        channels: dict[str, ChannelHandle]
        call_search: CallSearch | None
        relay: CallRelay

        templates: Templates
        file_roots: FileRoots

        async def link_addresses(self, known: Address, new: Address) -> Contact: ...

    def parse_address(self, raw: Address | str) -> Address:
        """An address in its normal form (``+7 495 ...`` → ``phone:+7495...``); ``Invalid``
        when it cannot be read."""
        if isinstance(raw, Address):
            return raw
        try:
            return self.addresses.parse(raw)
        except AddressError as exc:
            raise Invalid(str(exc)) from None

    # -- contacts ---------------------------------------------------------------------------

    async def contact(self, contact_id: int) -> Contact:
        """The contact card with its addresses; ``NotFound``."""
        found = await asyncio.to_thread(self.store.get_contact, contact_id)
        if found is None:
            raise NotFound(f"no contact with id {contact_id}")
        return found

    async def name_contact(self, address: Address | str, name: str) -> bool:
        """A person's name learned after their first message was stored (a profile lookup
        that answered later): the contact owning ``address`` takes it while it still has
        the name it was created with (the address's value), so a name an agent gave is
        never overwritten. True when it was renamed."""
        target = self.parse_address(address)
        cleaned = one_line_cut(name, NAME_MAX)
        if not cleaned:
            return False
        owner = (
            sa.select(address_t.c.contact_id)
            .where(address_t.c.kind == target.kind, address_t.c.value == target.value)
            .scalar_subquery()
        )
        rename = (
            sa.update(contact_t)
            .where(contact_t.c.id == owner, contact_t.c.name == target.value)
            .values(name=cleaned)
        )

        def store() -> bool:
            with self.store.write() as conn:
                return bool(conn.execute(rename).rowcount)

        return await asyncio.to_thread(store)

    async def search_contacts(
        self, q: str | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[Contact], int]:
        """Contacts whose name or company contains ``q``, or with the address ``q`` reads
        as (a phone number in any form, an email); all without ``q``. A page of them and
        how many match."""
        address = None
        if q and (any(c.isdigit() for c in q) or "@" in q):
            try:
                address = self.addresses.parse(q)
            except AddressError:
                address = None
        return await asyncio.to_thread(
            self.store.search_contacts, q, address, limit=limit, offset=offset
        )

    async def update_contact(
        self,
        contact_id: int,
        *,
        name: str = KEEP,
        company: str | None = KEEP,
        owner: Agent | None = KEEP,
        add: Sequence[Address | str] = (),
        remove: Sequence[Address | str] = (),
    ) -> Contact:
        """Change a contact: the fields given (``KEEP`` the others; ``company=None`` and
        ``owner=None`` clear them), addresses added and removed. ``NotFound``; ``Conflict``
        for an address of another contact; ``Invalid`` for one that cannot be read."""
        await self.contact(contact_id)
        values: dict[str, Any] = {}
        if name is not KEEP:
            one_line(name, "name", NAME_MAX, required=True)
            values["name"] = name
        if company is not KEEP:
            one_line(company, "company", NAME_MAX)
            values["company"] = company
        if owner is not KEEP:
            values["owner_agent_id"] = owner.id if owner is not None else None
        added = [self.parse_address(a) for a in add]
        removed = [self.parse_address(a) for a in remove]
        return await asyncio.to_thread(
            self.store.update_contact, contact_id, values=values, add=added, remove=removed
        )

    async def merge_into(self, contact_id: int, address: Address | str) -> Contact:
        """The person of ``contact_id`` also has ``address`` (a phone number a messenger
        user wrote, another email): the card that holds it, when another, is merged into
        this one (its timeline and addresses move, the other card is gone); otherwise the
        address is added. ``NotFound``, ``Invalid``."""
        contact = await self.contact(contact_id)
        new = self.parse_address(address)
        if not contact.addresses:  # nothing to link through: the address is simply added
            return await self.update_contact(contact_id, add=[new])
        return await self.link_addresses(contact.addresses[0], new)

    async def timeline(
        self, contact_id: int, *, limit: int = 50, before: int | None = None
    ) -> Timeline:
        """Messages, emails and calls of a contact, newest first; ``NotFound``."""
        await self.contact(contact_id)
        items = await asyncio.to_thread(
            self.store.timeline, contact_id, limit=limit, before_id=before
        )
        calls = await asyncio.to_thread(
            self.store.calls_of, [i.id for i in items if i.kind is InteractionKind.CALL]
        )
        return Timeline(items, calls, items[-1].id if len(items) == limit else None)

    # -- agents -----------------------------------------------------------------------------

    async def agent(self, key: str | int) -> Agent:
        """The agent with this name, extension or id; ``NotFound``."""
        found = await asyncio.to_thread(self.store.get_agent, key)
        if found is None:
            raise NotFound(f"no agent {key!r}")
        return found

    async def call_target(self, to: str) -> Agent | Address:
        """Whom a call goes to, as people type it: an agent (by name or extension), else a
        number; ``Invalid`` when it is neither."""
        try:
            return await self.agent(to.strip())
        except NotFound:
            return self.parse_address(to.strip())

    async def agents(self) -> list[Agent]:
        """The configured agents."""
        return await asyncio.to_thread(self.store.list_agents)

    # -- calls ------------------------------------------------------------------------------

    def voice_channel(self) -> VoiceChannel | None:
        """The first running channel that can place calls, if any."""
        for handle in self.channels.values():
            if handle.state is ChannelState.RUNNING and isinstance(handle.channel, VoiceChannel):
                return handle.channel
        return None

    async def call(self, call_id: str) -> CallRecord:
        """A call's record; ``NotFound``."""
        found = await asyncio.to_thread(self.store.get_call, call_id)
        if found is None:
            raise NotFound(f"no call with id {call_id!r}")
        return found

    async def find_calls(
        self,
        *,
        contact_id: int | None = None,
        agent_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[CallRecord]:
        """Call records, newest first: of a contact, of an agent, in ``[since, until)``."""
        return await asyncio.to_thread(
            self.store.list_calls,
            contact_id=contact_id,
            agent_id=agent_id,
            since=since,
            until=until,
            limit=limit,
        )

    async def search_calls(
        self,
        who: Principal,
        q: str,
        *,
        limit: int = 50,
        since: datetime | None = None,
        until: datetime | None = None,
        agent_id: int | None = None,
        contact_id: int | None = None,
    ) -> list[tuple[CallRecord, CallHit]]:
        """Calls whose content (transcripts) matches ``q``, best first, each with where it
        matched: only the calls ``who`` may hear (``can_hear``: what was said is as private
        as the recording). ``Invalid`` for an empty or over-long query, and when no
        plugin searches calls (``sb.call_search``)."""
        q = q.strip()
        if not q or len(q) > 200 or "\x00" in q:
            raise Invalid("q: words to find, at most 200 characters")
        if self.call_search is None:
            raise Invalid("q: no plugin searches calls' content here (switchboard-speech does)")
        if not who.sees_all:
            if who.agent_id is None:
                return []
            agent_id = who.agent_id if agent_id in (None, who.agent_id) else -1
        hits = await self.call_search.search(
            q, limit=limit, since=since, until=until, agent_id=agent_id, contact_id=contact_id
        )
        found = []
        for hit in hits:
            call = await asyncio.to_thread(self.store.get_call, hit.call_id)
            if call is not None and can_hear(call, who):
                found.append((call, hit))
        return found

    async def place_call(
        self,
        who: Principal,
        agent: Agent,
        *,
        to: Address | str | None = None,
        contact_id: int | None = None,
    ) -> str:
        """Click-to-call: ring ``agent``'s phone, then the customer (``to``, or the first
        phone number of ``contact_id``), through the first running voice channel; its call
        id. ``Forbidden`` for an agent calling from another's extension, ``Invalid`` for a
        contact without a phone, ``Unavailable`` when no voice channel runs."""
        if not who.sees_all and who.agent_id != agent.id:
            raise Forbidden("agents may place calls only from their own extension")
        if (to is None) == (contact_id is None):
            raise Invalid("give to or contact_id (not both)")
        if contact_id is not None:
            contact = await self.contact(contact_id)
            phones = [a for a in contact.addresses if a.kind == "phone"]
            if not phones:
                raise Invalid(f"contact {contact.id} has no phone number")
            target = phones[0]
        else:
            assert to is not None
            target = self.parse_address(to)
        channel = self.voice_channel()
        if channel is None:
            raise Unavailable("no voice channel is running")
        call_id: str = await channel.dial(agent, target)
        return call_id

    async def control_call(
        self, who: Principal, call_id: str, action: str, to: Agent | Address | None = None
    ) -> CallRecord:
        """Hold, resume, consult or transfer (``action``) a call while it talks, through its channel
        (a ``CallControl``); the call's record afterwards. For the agent who has the call,
        supervisors and admins (``Forbidden``); ``NotFound`` for a call that is not
        talking now, ``Invalid`` for a target the channel cannot call, ``Unavailable``
        when its channel cannot do this or is not running. A call another runner holds is
        acted on by that runner (``sb.relay``)."""
        call = await self._controllable(who, call_id)
        node = await self.relay.holder(call)
        if node is not None:
            target = None if to is None else to.name if isinstance(to, Agent) else to.value
            await self.relay.ask(node, "control", who, call_id=call_id, action=action, to=target)
            return await self.call(call_id)
        return await self._control(call, action, to)

    async def control_call_here(
        self, who: Principal, call_id: str, action: str, to: Agent | Address | None = None
    ) -> CallRecord:
        """:meth:`control_call` on this runner's channel (what a relayed request does)."""
        return await self._control(await self._controllable(who, call_id), action, to)

    async def _controllable(self, who: Principal, call_id: str) -> CallRecord:
        """The call, if ``who`` may control it (``NotFound``, ``Forbidden``)."""
        call = await self.call(call_id)
        if not can_hear(call, who):
            raise Forbidden("only the agent who has the call, supervisors and admins")
        return call

    async def _control(
        self, call: CallRecord, action: str, to: Agent | Address | None
    ) -> CallRecord:
        channel: CallControl = self._running_channel(call, CallControl, "hold or transfer calls")
        call_id = call.call_id
        try:
            if action == "hold":
                await channel.hold(call_id)
            elif action == "resume":
                await channel.resume(call_id)
            elif action == "transfer" and to is not None:
                await channel.transfer(call_id, to)
            elif action == "consult" and to is not None:
                await channel.consult(call_id, to)
            else:
                raise Invalid(f"unknown call action {action!r}")
        except LookupError as exc:
            raise NotFound(str(exc).strip("'\"")) from None
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        return await self.call(call_id)

    def _running_channel(self, call: CallRecord, kind: Any, can: str) -> Any:
        """The running channel of ``call``, if it is a ``kind`` (``Unavailable`` if not:
        it cannot do what ``can`` says)."""
        handle = self.channels.get(call.channel)
        channel = handle.channel if handle is not None else None
        if handle is None or handle.state is not ChannelState.RUNNING:
            raise Unavailable(f"channel {call.channel} is not running")
        if not isinstance(channel, kind):
            raise Unavailable(f"channel {call.channel} cannot {can}")
        return channel

    async def supervise_call(self, who: Principal, call_id: str, mode: str) -> CallRecord:
        """A supervisor (or admin) joins a talking call from their own phone or softphone:
        ``listen``, ``whisper`` (to the agent) or ``barge`` (to both); called again, the
        mode changes. The call's record afterwards (its ``supervision`` grows). ``Forbidden``
        for agents and for a token with no agent to ring; ``NotFound`` for a call not
        talking now; ``Invalid`` for an unknown mode or a supervisor who did not answer;
        ``Unavailable`` when its channel cannot do this. A call another runner holds is
        joined through that runner (``sb.relay``)."""
        supervisor, how = _supervision(who, mode)
        call = await self.call(call_id)
        node = await self.relay.holder(call)
        if node is not None:
            await self.relay.ask(node, "supervise", who, call_id=call_id, mode=mode)
            return await self.call(call_id)
        return await self._join_call(supervisor, call, how)

    async def supervise_call_here(self, who: Principal, call_id: str, mode: str) -> CallRecord:
        """:meth:`supervise_call` on this runner's channel (what a relayed request does)."""
        supervisor, how = _supervision(who, mode)
        return await self._join_call(supervisor, await self.call(call_id), how)

    async def _join_call(
        self, supervisor: Agent, call: CallRecord, how: SupervisionMode
    ) -> CallRecord:
        channel: CallSupervision = self._running_channel(
            call, CallSupervision, "let a supervisor join calls"
        )
        try:
            await channel.supervise(call.call_id, supervisor, how)
        except LookupError as exc:
            raise NotFound(str(exc).strip("'\"")) from None
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        return await self.call(call.call_id)

    async def recording_file(self, who: Principal, call_id: str) -> Path:
        """Where the call's recording (a WAV) is on disk, for whoever may hear it:
        ``NotFound`` (no call, no recording, or the file is gone), ``Forbidden``."""
        call = await self.call(call_id)
        if call.recording is None:
            raise NotFound(f"call {call_id!r} has no recording")
        if not can_hear(call, who):
            raise Forbidden(
                "only the agent who took the call, supervisors and admins may hear its recording"
            )
        path = Path(call.recording.path)
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(f"the recording of call {call_id!r} is missing from disk")
        return path

    def recording_link(self, call_id: str, ttl: float = 86_400.0) -> str:
        """A signed link to the call's recording that works without a token for ``ttl``
        seconds (for a CRM's call card): ``{public_url}/recordings/{token}``.
        ``Unavailable`` when ``[switchboard.http]`` has no ``public_url`` and
        ``link_secret``."""
        http = self.config.core.http
        if not http.public_url or not http.link_secret:
            raise Unavailable("recording links need [switchboard.http] public_url and link_secret")
        token = sharing.make_token(http.link_secret, call_id, ttl)
        return f"{http.public_url.rstrip('/')}/recordings/{token}"

    async def shared_recording(self, token: str) -> tuple[str, Path]:
        """The call id and file a :meth:`recording_link` token opens: ``NotFound`` for a
        token that is forged, expired or of a call without its recording on disk."""
        secret = self.config.core.http.link_secret
        call_id = sharing.read_token(secret, token) if secret else None
        if call_id is None:
            raise NotFound("no such recording link (or it has expired)")
        return call_id, await self.recording_file(LINK_HOLDER, call_id)

    # -- messages ---------------------------------------------------------------------------

    async def attachment(self, interaction_id: int, index: int) -> tuple[Attachment, Path]:
        """A file a message carried (``meta.attachment`` / ``meta.attachments``, see
        :class:`~switchboard.Attachment`) and where it is on disk. ``NotFound`` when there is
        no such message or attachment, it was not kept, or the file is gone or lies outside
        the folders the runner serves (the recordings folder and the running channels'
        files folders)."""
        interaction = await asyncio.to_thread(self.store.get_interaction, interaction_id)
        if interaction is None:
            raise NotFound(f"interaction {interaction_id} not found")
        found = attachments(interaction.meta)
        if not 0 <= index < len(found):
            raise NotFound(f"interaction {interaction_id} has no attachment {index}")
        attachment = found[index]
        if attachment.path is None:
            raise NotFound(f"attachment {index} was not kept: {attachment.note}")
        path = await asyncio.to_thread(self.file_roots.check, attachment.path)
        if path is None:
            raise NotFound(f"attachment {index} is not on disk (or not in a served folder)")
        return attachment, path

    async def windows(self, contact_id: int) -> dict[str, datetime | None]:
        """For each running channel with a customer-service window (WhatsApp's 24 hours),
        when free-form messages to the contact stop being allowed: a time (in the past:
        closed), or None when the contact never wrote there. ``NotFound``."""
        contact = await self.contact(contact_id)
        out: dict[str, datetime | None] = {}
        for name, handle in sorted(self.channels.items()):
            window = getattr(handle.channel, "window", None)
            if window is not None and handle.state is ChannelState.RUNNING:
                out[name] = await window(contact)
        return out

    async def last_inbound(
        self,
        channel: str,
        *,
        contact_id: int | None = None,
        address: Address | str | None = None,
    ) -> datetime | None:
        """When the contact (by id, or the one owning ``address``) last wrote on
        ``channel``; None if never (or no such contact). A messenger's customer-service
        window (WhatsApp's 24 hours) counts from here."""
        target = self.parse_address(address) if address is not None else None

        def read() -> datetime | None:
            with self.store.read() as conn:
                who = contact_id
                if who is None and target is not None:
                    who = self.store.find_contact_id(target, conn)
                if who is None:
                    return None
                found: datetime | None = conn.execute(
                    sa.select(sa.func.max(interaction_t.c.created_at)).where(
                        interaction_t.c.contact_id == who,
                        interaction_t.c.channel == channel,
                        interaction_t.c.direction == "inbound",
                    )
                ).scalar()
                return found

        return await asyncio.to_thread(read)

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
        """Render the configured template ``template`` (its text, subject and HTML) for a
        contact (and the ``address`` the message goes to), the agent who sends it and a
        call, plus ``variables``: the one context of previews, sends and mailings
        (:func:`switchboard.templates.template_values`). Raises :class:`TemplateError` (an
        ``Invalid``) for an unknown template or a variable it uses that nobody gave."""
        values = template_values(
            variables or {},
            contact=contact,
            address=None if address is None else str(address),
            agent=agent,
            call=call,
        )
        return self.templates.render(template, values)

    async def render_for(
        self,
        who: Principal,
        template: str,
        *,
        contact_id: int | None = None,
        address: Address | str | None = None,
        variables: Mapping[str, Any] | None = None,
        call_id: str | None = None,
    ) -> Rendered:
        """A template rendered as ``who`` would send it: for a contact (or a bare
        address), ``who``'s agent and, if given, a call (a follow-up after it).
        ``TemplateError`` (an ``Invalid``), ``NotFound``."""
        contact = await self.contact(contact_id) if contact_id is not None else None
        call = await self.call(call_id) if call_id is not None else None
        to = self.parse_address(address) if address is not None else None
        return self.render(
            template, contact=contact, address=to, agent=who.agent, call=call, variables=variables
        )

    async def send_message(
        self,
        who: Principal,
        channel: str,
        *,
        contact_id: int | None = None,
        address: Address | str | None = None,
        text: str | None = None,
        subject: str | None = None,
        template: str | None = None,
        variables: Mapping[str, Any] | None = None,
        call_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Interaction:
        """Queue a message (the outbox sends it, with retries): ``text`` (and ``subject``),
        or a ``template`` rendered by :meth:`render_for`. ``payload`` is what the channel
        gets besides (``html``, ``in_reply_to``...). ``Invalid``, ``NotFound``,
        ``TemplateError``."""
        if (text is None) == (template is None):
            raise Invalid("give text or template (not both)")
        one_line(subject, "subject", SUBJECT_MAX)
        if text is not None and (len(text) > TEXT_MAX or "\x00" in text):
            raise Invalid(f"text: at most {TEXT_MAX} characters, no NUL")
        extra = dict(payload or {})
        if template is not None:
            rendered = await self.render_for(
                who,
                template,
                contact_id=contact_id,
                address=address,
                variables=variables,
                call_id=call_id,
            )
            text, subject = rendered.text, subject or rendered.subject
            extra["template"] = template
            if rendered.html is not None:
                extra["html"] = rendered.html
            extra.update(rendered.payloads.get(channel, {}))  # e.g. whatsapp_template
        try:
            return await self.outbox.enqueue(
                channel,
                contact_id=contact_id,
                address=address,
                text=text,
                subject=subject,
                payload=extra,
                kind=InteractionKind.EMAIL if subject is not None else InteractionKind.MESSAGE,
            )
        except AddressError as exc:
            raise Invalid(str(exc)) from None

    # -- callback tasks ---------------------------------------------------------------------

    async def tasks(
        self,
        who: Principal,
        *,
        status: str = "open",
        agent_id: int | None = None,
        limit: int = 100,
    ) -> list[Interaction]:
        """Callback tasks, oldest due first: an agent's own; everyone's (or one agent's)
        for supervisors and admins. ``Forbidden`` for an agent asking for another's, or a
        token without an agent."""
        if not who.sees_all:
            if agent_id is not None and agent_id != who.agent_id:
                raise Forbidden("agents see their own tasks only")
            if who.agent_id is None:
                raise Forbidden("this token has no agent: no tasks of its own")
            agent_id = who.agent_id
        return await asyncio.to_thread(
            self.store.list_tasks, status=status, agent_id=agent_id, limit=limit
        )

    async def finish_task(self, who: Principal, task_id: int) -> Interaction:
        """Mark a task done (event ``task.done``); agents close their own tasks only.
        ``NotFound``, ``Forbidden``."""
        if not who.sees_all:
            found = await asyncio.to_thread(self.store.get_interaction, task_id)
            if found is not None and (found.meta or {}).get("agent_id") != who.agent_id:
                raise Forbidden("agents close their own tasks only")
        task = await asyncio.to_thread(self.store.finish_task, task_id)
        if task is None:
            raise NotFound(f"no task with id {task_id}")
        self.events.notify()
        return task


def _supervision(who: Principal, mode: str) -> tuple[Agent, SupervisionMode]:
    """Who supervises, and how, as ``who`` asks (``Forbidden`` for agents and for a token
    with no agent to ring, ``Invalid`` for an unknown mode)."""
    if not who.sees_all or who.agent is None:
        raise Forbidden("only supervisors and admins with an agent of their own")
    try:
        return who.agent, SupervisionMode(mode)
    except ValueError:
        raise Invalid(f"mode: listen, whisper or barge, not {mode[:20]!r}") from None
