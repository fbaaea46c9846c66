"""Mailings: a template sent to every contact on a list, through the core's outbox.

Creating a mailing renders the template for each recipient and writes, in one
transaction, the mailing, one queued message per recipient (``sb.outbox.queue_in``) and
its recipient row: a crash at any point loses nothing and sends nothing twice (the
outbox's own guarantee). Rate limits are the messages' due times. Recipients who
unsubscribed from the channel, or have no address of its kind, are skipped; one who
unsubscribes later is refused at send time (hook ``refuse_outbound``).

What recipients do comes back through the core's hooks: replies (``message_received``
with ``in_reply_to_interaction``, as the email channel sets it), bounces
(``message_failed`` of a message that had been sent), and through the plugin's own
``/t/`` routes: opens, clicks and one-click unsubscribes.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from switchboard import (
    Agent,
    Interaction,
    InteractionKind,
    Invalid,
    NotFound,
    OutboundMessage,
    Queued,
    Rendered,
    Switchboard,
    TemplateError,
)
from switchboard_mailings.links import Links
from switchboard_mailings.settings import MailingSettings
from switchboard_mailings.tables import list_member_t, mailing_t, recipient_t, unsubscribe_t

UNSUBSCRIBED = "unsubscribed: the contact asked for no more mailings on this channel"
CHUNK = 500  # recipients rendered and stored at a time
ACTIONS = ("opened", "clicked", "replied", "bounced", "unsubscribed")


class MailingError(Invalid):
    """A mailing that cannot be created (unknown list, template error, no link secret)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Mailings:
    """The plugin's service: lists, mailings and what recipients do with them."""

    def __init__(self, sb: Switchboard, settings: MailingSettings) -> None:
        self.sb = sb
        self.settings = settings

    @property
    def links(self) -> Links | None:
        s = self.settings
        if not s.public_url or not s.link_secret:
            return None
        return Links(s.public_url, s.link_secret)

    # -- lists ----------------------------------------------------------------------------

    async def change_list(self, name: str, add: Sequence[int], remove: Sequence[int]) -> int:
        """Add and remove contacts; returns the list's size. ``NotFound`` names the first
        unknown contact (nothing changed then)."""

        def work(conn: sa.Connection) -> int:
            now = _utcnow()
            if add:
                missing = sorted(set(add) - set(self.sb.contacts_in(conn, add)))
                if missing:
                    raise NotFound(f"no contact with id {missing[0]}")
                present = set(
                    conn.execute(
                        sa.select(list_member_t.c.contact_id).where(
                            list_member_t.c.list == name, list_member_t.c.contact_id.in_(add)
                        )
                    ).scalars()
                )
                rows = [
                    {"list": name, "contact_id": c, "added_at": now}
                    for c in sorted(set(add) - present)
                ]
                if rows:
                    conn.execute(sa.insert(list_member_t), rows)
            if remove:
                conn.execute(
                    sa.delete(list_member_t).where(
                        list_member_t.c.list == name, list_member_t.c.contact_id.in_(remove)
                    )
                )
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(list_member_t)
                    .where(list_member_t.c.list == name)
                ).scalar_one()
            )

        return await self.sb.transaction(work)

    async def lists(self) -> dict[str, int]:
        """Every list with its size."""

        def work(conn: sa.Connection) -> dict[str, int]:
            rows = conn.execute(
                sa.select(list_member_t.c.list, sa.func.count())
                .group_by(list_member_t.c.list)
                .order_by(list_member_t.c.list)
            )
            return {r[0]: int(r[1]) for r in rows}

        return await self.sb.transaction(work, write=False)

    async def members(self, name: str) -> list[int]:
        return await self.sb.transaction(lambda conn: _members(conn, name), write=False)

    # -- mailings -------------------------------------------------------------------------

    async def create(
        self,
        *,
        name: str,
        channel: str,
        template: str,
        audience: str,
        variables: Mapping[str, Any] | None = None,
        scheduled_at: datetime | None = None,
        rate_per_minute: float | None = None,
        agent: Agent | None = None,
    ) -> dict[str, Any]:
        """Render the template for every recipient, then store the mailing and its queued
        messages in one transaction. Raises :class:`MailingError` before anything is
        stored if any rendering fails."""
        channels = self.sb.channel_objects
        if channel not in channels:
            raise MailingError(f"unknown channel {channel!r}")
        links = self.links
        if links is None:
            raise MailingError(
                "mailings need [plugins.mailings] public_url and link_secret "
                "(for the unsubscribe and tracking links)"
            )
        kind = channels[channel].address_kind
        start = scheduled_at or _utcnow()
        spacing = 60.0 / rate_per_minute if rate_per_minute else 0.0

        def audience_of(conn: sa.Connection) -> tuple[list[int], list[int], dict[int, str]]:
            members = _members(conn, audience)
            if not members:
                raise MailingError(f"list {audience!r} is empty or does not exist")
            out = set(
                conn.execute(
                    sa.select(unsubscribe_t.c.contact_id).where(unsubscribe_t.c.channel == channel)
                ).scalars()
            )
            on_list = sa.select(list_member_t.c.contact_id).where(list_member_t.c.list == audience)
            found = self.sb.addresses_in(conn, on_list, kind)
            addresses = {c: str(a) for c, a in found.items()}
            return members, [c for c in members if c not in out and c in addresses], addresses

        def rendered(conn: sa.Connection, chunk: list[int]) -> list[Rendered]:
            """The chunk's messages, each rendered with the one template context."""
            contacts = self.sb.contacts_in(conn, chunk)
            out = []
            for contact_id in chunk:
                try:
                    out.append(
                        self.sb.render(
                            template,
                            contact=contacts[contact_id],
                            address=addresses[contact_id],
                            agent=agent,
                            variables=variables,
                        )
                    )
                except TemplateError as exc:
                    raise MailingError(f"contact {contact_id}: {exc}") from None
            return out

        def check(conn: sa.Connection) -> str | None:
            # Render everyone once to find errors before anything is stored, keeping
            # nothing: memory stays flat in the number of recipients. Then render again, a
            # chunk at a time, inside the one transaction that stores the mailing.
            subject = None
            for first in range(0, len(recipients), CHUNK):
                subject = rendered(conn, recipients[first : first + CHUNK])[-1].subject
            return subject

        members, recipients, addresses = await self.sb.transaction(audience_of, write=False)
        subject = await self.sb.transaction(check, write=False)
        message_kind = InteractionKind.EMAIL if subject else InteractionKind.MESSAGE

        def store(conn: sa.Connection) -> int:
            mailing_id = int(
                conn.execute(
                    sa.insert(mailing_t)
                    .values(
                        name=name,
                        channel=channel,
                        template=template,
                        audience=audience,
                        scheduled_at=start,
                        rate_per_minute=rate_per_minute,
                        total=len(recipients),
                        skipped=len(members) - len(recipients),
                        created_at=_utcnow(),
                    )
                    .returning(mailing_t.c.id)
                ).scalar_one()
            )
            for first in range(0, len(recipients), CHUNK):
                chunk = recipients[first : first + CHUNK]
                queued = [
                    Queued(
                        contact_id=c,
                        channel=channel,
                        address=addresses[c],
                        text=r.text,
                        subject=r.subject,
                        kind=message_kind,
                        payload=functools.partial(
                            _payload, links, mailing_id, template, r, channel
                        ),
                        meta={"mailing_id": mailing_id},
                        due=start + timedelta(seconds=n * spacing),
                    )
                    for n, (c, r) in enumerate(
                        zip(chunk, rendered(conn, chunk), strict=True), start=first
                    )
                ]
                ids = self.sb.outbox.queue_in(conn, queued)
                conn.execute(
                    sa.insert(recipient_t),
                    [
                        {"mailing_id": mailing_id, "interaction_id": i, "contact_id": c}
                        for i, c in zip(ids, chunk, strict=True)
                    ],
                )
            return mailing_id

        mailing_id = await self.sb.transaction(store)
        self.sb.outbox.wake()
        return await self.stats(mailing_id)

    async def stats(self, mailing_id: int) -> dict[str, Any]:
        """The mailing and what became of its messages (``NotFound`` for no such id)."""
        return await self.sb.transaction(
            lambda conn: mailing_stats(self.sb, conn, mailing_id), write=False
        )

    async def list_mailings(self) -> list[dict[str, Any]]:
        """Every mailing with its figures, newest first."""

        def work(conn: sa.Connection) -> list[dict[str, Any]]:
            ids = conn.execute(sa.select(mailing_t.c.id).order_by(mailing_t.c.id.desc()))
            return [mailing_stats(self.sb, conn, i) for i in ids.scalars()]

        return await self.sb.transaction(work, write=False)

    # -- what recipients do ---------------------------------------------------------------

    async def opened(self, token: str) -> bool:
        links = self.links
        key = links.parse(token) if links else None
        if key is None:
            return False
        return await self.sb.transaction(lambda conn: _mark(conn, key, "opened") is not None)

    async def clicked(self, token: str, url: str, sig: str) -> bool:
        """A genuine click (token and target signed together) is counted; else False."""
        links = self.links
        if links is None or not hmac.compare_digest(sig, links.url_sig(token, url)):
            return False
        key = links.parse(token)
        if key is None:
            return False

        def work(conn: sa.Connection) -> bool:
            if _mark(conn, key, "clicked") is None:
                return False
            _mark(conn, key, "opened")  # a click implies the message was opened
            return True

        return await self.sb.transaction(work)

    def genuine(self, token: str) -> bool:
        """Whether a token is one of ours (signed with the link secret)."""
        links = self.links
        return links is not None and links.parse(token) is not None

    async def unsubscribe(self, token: str) -> bool:
        """One-click unsubscribe: the contact gets no more mailings on this channel."""
        links = self.links
        key = links.parse(token) if links else None
        if key is None:
            return False

        def work(conn: sa.Connection) -> bool:
            row = _mark(conn, key, "unsubscribed")
            if row is None:
                return False
            channel = conn.execute(
                sa.select(mailing_t.c.channel).where(mailing_t.c.id == row["mailing_id"])
            ).scalar_one()
            exists = conn.execute(
                sa.select(unsubscribe_t.c.contact_id).where(
                    unsubscribe_t.c.contact_id == row["contact_id"],
                    unsubscribe_t.c.channel == channel,
                )
            ).first()
            if exists is not None:
                return True
            conn.execute(
                sa.insert(unsubscribe_t).values(
                    contact_id=row["contact_id"],
                    channel=channel,
                    at=_utcnow(),
                    source=f"mailing {row['mailing_id']}",
                )
            )
            # this contact's messages of other mailings on the channel still waiting (a
            # slow mailing's later rows) are due now: refused at once as unsubscribed
            # (refuse_outbound), with message.failed and the hook
            self.sb.outbox.due_now(
                conn,
                sa.select(recipient_t.c.interaction_id)
                .join(mailing_t, mailing_t.c.id == recipient_t.c.mailing_id)
                .where(
                    recipient_t.c.contact_id == row["contact_id"],
                    mailing_t.c.channel == channel,
                ),
            )
            self.sb.publish_in(
                conn,
                "mailings",
                "unsubscribed",
                {"contact_id": row["contact_id"], "channel": channel},
            )
            return True

        done = await self.sb.transaction(work)
        self.sb.outbox.wake()
        return done

    async def note_reply(self, interaction: Interaction) -> None:
        """An inbound message answering one of ours: a reply, if that was a mailing's."""
        answered = interaction.meta.get("in_reply_to_interaction")
        if isinstance(answered, int) and not isinstance(answered, bool):
            await self.sb.transaction(
                lambda conn: _note_first(conn, answered, recipient_t.c.replied_at)
            )

    async def note_bounce(self, interaction: Interaction) -> None:
        """A message failed after it had been sent (it has the channel's id): a bounce."""
        if interaction.external_id is not None:
            await self.sb.transaction(
                lambda conn: _note_first(conn, interaction.id, recipient_t.c.bounced_at)
            )

    async def refusals(self, messages: Sequence[OutboundMessage]) -> dict[int, str]:
        """Mailing messages to contacts who unsubscribed from the channel meanwhile:
        checked when sent, not only when the mailing was made."""
        ours = [m for m in messages if m.payload.get("mailing_id") and m.contact_id is not None]
        if not ours:
            return {}

        def work(conn: sa.Connection) -> set[tuple[int, str]]:
            rows = conn.execute(
                sa.select(unsubscribe_t.c.contact_id, unsubscribe_t.c.channel).where(
                    unsubscribe_t.c.contact_id.in_({m.contact_id for m in ours})
                )
            )
            return {(r.contact_id, r.channel) for r in rows}

        out = await self.sb.transaction(work, write=False)
        return {m.interaction_id: UNSUBSCRIBED for m in ours if (m.contact_id, m.channel) in out}


def _payload(
    links: Links,
    mailing_id: int,
    template: str,
    rendered: Rendered,
    channel: str,
    interaction_id: int,
) -> dict[str, Any]:
    """What the channel gets with a mailing message: the template's payload for the
    channel (a WhatsApp template...), the one-click unsubscribe link, and the HTML with
    tracked links (both name the message)."""
    token = links.token(interaction_id)
    payload: dict[str, Any] = {
        **rendered.payloads.get(channel, {}),
        "mailing_id": mailing_id,
        "template": template,
        "list_unsubscribe": links.unsubscribe_url(token),
    }
    if rendered.html is not None:
        payload["html"] = links.track_html(token, rendered.html)
    return payload


def _members(conn: sa.Connection, name: str) -> list[int]:
    return list(
        conn.execute(
            sa.select(list_member_t.c.contact_id)
            .where(list_member_t.c.list == name)
            .order_by(list_member_t.c.contact_id)
        ).scalars()
    )


def _mark(conn: sa.Connection, key: tuple[str, int], what: str) -> dict[str, Any] | None:
    """Set ``<what>_at`` of the recipient ``key`` names, once (the first time counts);
    the recipient row, or None."""
    column, value = key
    where = getattr(recipient_t.c, column) == value
    row = conn.execute(sa.select(recipient_t).where(where)).first()
    if row is None:
        return None
    if getattr(row, f"{what}_at") is None:
        conn.execute(sa.update(recipient_t).where(where).values({f"{what}_at": _utcnow()}))
    return dict(row._mapping)


def _note_first(conn: sa.Connection, interaction_id: int, column: Any) -> None:
    """Stamp ``column`` of the mailing recipient of ``interaction_id``, the first time."""
    conn.execute(
        sa.update(recipient_t)
        .where(recipient_t.c.interaction_id == interaction_id, column.is_(None))
        .values({column: _utcnow()})
    )


def mailing_stats(sb: Switchboard, conn: sa.Connection, mailing_id: int) -> dict[str, Any]:
    """The mailing and what became of its messages."""
    row = conn.execute(sa.select(mailing_t).where(mailing_t.c.id == mailing_id)).first()
    if row is None:
        raise NotFound(f"no mailing with id {mailing_id}")
    statuses = sb.message_statuses(
        conn, sa.select(recipient_t.c.interaction_id).where(recipient_t.c.mailing_id == mailing_id)
    )
    counts = conn.execute(
        sa.select(
            *(sa.func.count(getattr(recipient_t.c, f"{what}_at")).label(what) for what in ACTIONS)
        ).where(recipient_t.c.mailing_id == mailing_id)
    ).one()
    queued = statuses.get("queued", 0)
    total = int(row.total)
    return {
        "id": row.id,
        "name": row.name,
        "channel": row.channel,
        "template": row.template,
        "audience": row.audience,
        "scheduled_at": row.scheduled_at.isoformat(),
        "rate_per_minute": row.rate_per_minute,
        "created_at": row.created_at.isoformat(),
        "total": total,
        "skipped": int(row.skipped),
        "queued": queued,
        # sent, and those the channel since said were delivered or read
        "sent": sum(statuses.get(k, 0) for k in ("sent", "delivered", "read")),
        "failed": statuses.get("failed", 0),
        **{what: int(getattr(counts, what)) for what in ACTIONS},
        "done": total - queued,
        "finished": queued == 0,
    }
