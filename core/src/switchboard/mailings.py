"""Mailings: a template sent to every contact on a list, through the outbox.

Creating a mailing renders the template for each recipient and writes, in one
transaction, the mailing, one queued interaction and one outbox row per recipient: a
crash at any point loses nothing and sends nothing twice (the outbox's own guarantee).
Rate limits are the rows' due times. Recipients who unsubscribed from the channel, or
have no address of its kind, are skipped.

Links in a mailing are signed (HMAC-SHA256 with ``[switchboard.mailings] link_secret``):
the open pixel, the click redirect and the unsubscribe link (``List-Unsubscribe`` with
RFC 8058 one-click) are served by the runner under ``/t/`` and cannot be forged for
another recipient or another target.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from html import escape, unescape
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa

from switchboard.errors import Invalid, NotFound
from switchboard.events import record as record_events
from switchboard.models import EventType, InteractionKind, InteractionStatus, utcnow
from switchboard.store import (
    Store,
    address_t,
    contact_t,
    insert_many,
    interaction_t,
    load_contacts,
    outbox_t,
)
from switchboard.tables import ListMemberRow, MailingRecipientRow, MailingRow, UnsubscribeRow

if TYPE_CHECKING:
    from switchboard.core import Switchboard

list_member_t: sa.Table = ListMemberRow.__table__  # type: ignore[attr-defined]
unsubscribe_t: sa.Table = UnsubscribeRow.__table__  # type: ignore[attr-defined]
mailing_t: sa.Table = MailingRow.__table__  # type: ignore[attr-defined]
recipient_t: sa.Table = MailingRecipientRow.__table__  # type: ignore[attr-defined]

UNSUBSCRIBED = "unsubscribed: the contact asked for no more mailings on this channel"
CHUNK = 500  # recipients rendered and stored at a time
HREF = re.compile(r'href="(https?://[^"]+)"', re.IGNORECASE)


class MailingError(Invalid):
    """A mailing that cannot be created (unknown list, template error, no link secret)."""


class Links:
    """Signed tracking and unsubscribe links of one recipient."""

    def __init__(self, public_url: str, secret: str) -> None:
        self.base = public_url.rstrip("/")
        self.secret = secret.encode()

    def _sig(self, text: str) -> str:
        digest = hmac.new(self.secret, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:12]).decode().rstrip("=")

    def token(self, recipient_id: int) -> str:
        return f"{recipient_id}.{self._sig(f'r{recipient_id}')}"

    def recipient(self, token: str) -> int | None:
        """The recipient id of a genuine token, else None."""
        rid, _, sig = token.partition(".")
        if not rid.isdigit():
            return None
        return int(rid) if hmac.compare_digest(sig, self._sig(f"r{rid}")) else None

    def url_sig(self, token: str, url: str) -> str:
        return self._sig(f"{token}\n{url}")

    def open_url(self, token: str) -> str:
        return f"{self.base}/t/{token}/open.gif"

    def click_url(self, token: str, url: str) -> str:
        return f"{self.base}/t/{token}/click?u={quote(url, safe='')}&s={self.url_sig(token, url)}"

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.base}/t/{token}/unsubscribe"

    def track_html(self, token: str, html: str) -> str:
        """Links through the click redirect, and the open pixel before ``</body>``.

        An ``href`` is HTML: its entities (``&amp;``) are decoded before the target is
        signed, and the redirect link is escaped again where it is written."""
        html = HREF.sub(
            lambda m: f'href="{escape(self.click_url(token, unescape(m.group(1))))}"', html
        )
        pixel = f'<img src="{self.open_url(token)}" width="1" height="1" alt="">'
        if "</body>" in html:
            return html.replace("</body>", pixel + "</body>", 1)
        return html + pixel


class Mailings:
    def __init__(self, core: Switchboard) -> None:
        self.core = core

    @property
    def links(self) -> Links | None:
        s = self.core.config.core.mailings
        if not s.public_url or not s.link_secret:
            return None
        return Links(s.public_url, s.link_secret)

    # -- lists ----------------------------------------------------------------------------

    def change_list(self, name: str, add: list[int], remove: list[int]) -> int:
        """Add and remove contacts; returns the list's size."""
        now = utcnow()
        with self.core.store.write() as conn:
            if add:
                known = set(
                    conn.execute(sa.select(contact_t.c.id).where(contact_t.c.id.in_(add))).scalars()
                )
                missing = sorted(set(add) - known)
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

    def lists(self) -> dict[str, int]:
        with self.core.store.read() as conn:
            rows = conn.execute(
                sa.select(list_member_t.c.list, sa.func.count())
                .group_by(list_member_t.c.list)
                .order_by(list_member_t.c.list)
            )
            return {r[0]: int(r[1]) for r in rows}

    def members(self, name: str) -> list[int]:
        with self.core.store.read() as conn:
            return list(
                conn.execute(
                    sa.select(list_member_t.c.contact_id)
                    .where(list_member_t.c.list == name)
                    .order_by(list_member_t.c.contact_id)
                ).scalars()
            )

    # -- mailings -------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        channel: str,
        template: str,
        audience: str,
        variables: Mapping[str, Any] | None = None,
        scheduled_at: datetime | None = None,
        rate_per_minute: float | None = None,
        agent: Any = None,
    ) -> dict[str, Any]:
        """Render the template for every recipient, then store the mailing and its queued
        messages in one transaction. Raises :class:`MailingError` before anything is
        stored if any rendering fails."""
        from switchboard.templates import TemplateError, template_values

        if channel not in self.core.channels:
            raise MailingError(f"unknown channel {channel!r}")
        links = self.links
        if links is None:
            raise MailingError(
                "mailings need [switchboard.mailings] public_url and link_secret "
                "(for the unsubscribe and tracking links)"
            )
        kind = self.core.channels[channel].channel.address_kind
        templates = self.core.templates
        start = scheduled_at or utcnow()
        spacing = 60.0 / rate_per_minute if rate_per_minute else 0.0
        with self.core.store.read() as conn:
            members = self.members(audience)
            if not members:
                raise MailingError(f"list {audience!r} is empty or does not exist")
            out = set(
                conn.execute(
                    sa.select(unsubscribe_t.c.contact_id).where(unsubscribe_t.c.channel == channel)
                ).scalars()
            )
            addresses: dict[int, str] = {}
            for r in conn.execute(
                sa.select(address_t.c.contact_id, address_t.c.value)
                .where(address_t.c.kind == kind)
                .where(
                    address_t.c.contact_id.in_(
                        sa.select(list_member_t.c.contact_id).where(
                            list_member_t.c.list == audience
                        )
                    )
                )
                .order_by(address_t.c.id)
            ):
                addresses.setdefault(r.contact_id, f"{kind}:{r.value}")
        recipients = [c for c in members if c not in out and c in addresses]

        def rendered(conn: sa.Connection, chunk: list[int]) -> list[Any]:
            """The chunk's messages, each rendered with the one template context."""
            contacts = load_contacts(conn, chunk)
            messages = []
            for contact_id in chunk:
                values = template_values(
                    variables or {},
                    contact=contacts[contact_id],
                    address=addresses[contact_id],
                    agent=agent,
                )
                try:
                    messages.append(templates.render(template, values))
                except TemplateError as exc:
                    raise MailingError(f"contact {contact_id}: {exc}") from None
            return messages

        # Render everyone once to find errors before anything is stored, keeping nothing:
        # memory stays flat in the number of recipients. Then render again, a chunk at a
        # time, inside the one transaction that stores the mailing.
        subject = None
        for first in range(0, len(recipients), CHUNK):
            with self.core.store.read() as conn:
                subject = rendered(conn, recipients[first : first + CHUNK])[-1].subject
        kind_value = InteractionKind.EMAIL if subject else InteractionKind.MESSAGE
        now = utcnow()
        with self.core.store.write() as conn:
            mailing_id = conn.execute(
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
                    created_at=now,
                )
                .returning(mailing_t.c.id)
            ).scalar_one()
            for first in range(0, len(recipients), CHUNK):
                chunk = recipients[first : first + CHUNK]
                self._store_chunk(
                    conn,
                    mailing_id,
                    channel,
                    template,
                    chunk,
                    first,
                    rendered(conn, chunk),
                    addresses,
                    kind_value,
                    links,
                    start,
                    spacing,
                    now,
                )
        return self.stats(mailing_id)

    @staticmethod
    def _store_chunk(
        conn: sa.Connection,
        mailing_id: int,
        channel: str,
        template: str,
        chunk: list[int],
        first: int,
        rendered: list[Any],
        addresses: dict[int, str],
        kind: InteractionKind,
        links: Links,
        start: datetime,
        spacing: float,
        now: datetime,
    ) -> None:
        """One chunk of recipients: their queued messages, recipient rows and outbox rows."""
        interaction_ids = insert_many(
            conn,
            interaction_t,
            [
                {
                    "contact_id": c,
                    "channel": channel,
                    "direction": "outbound",
                    "kind": kind.value,
                    "status": InteractionStatus.QUEUED.value,
                    "address": addresses[c],
                    "text": r.text,
                    "subject": r.subject,
                    "meta": {"mailing_id": mailing_id},
                    "created_at": now,
                    "updated_at": now,
                }
                for c, r in zip(chunk, rendered, strict=True)
            ],
        )
        recipient_ids = insert_many(
            conn,
            recipient_t,
            [
                {"mailing_id": mailing_id, "interaction_id": i, "contact_id": c}
                for i, c in zip(interaction_ids, chunk, strict=True)
            ],
        )
        outbox_rows = []
        for n, (rid, iid, c, text) in enumerate(
            zip(recipient_ids, interaction_ids, chunk, rendered, strict=True), start=first
        ):
            token = links.token(rid)
            payload: dict[str, Any] = {
                "mailing_id": mailing_id,
                "template": template,
                "list_unsubscribe": links.unsubscribe_url(token),
            }
            if text.html is not None:
                payload["html"] = links.track_html(token, text.html)
            outbox_rows.append(
                {
                    "interaction_id": iid,
                    "channel": channel,
                    "address": addresses[c],
                    "payload": payload,
                    "attempts": 0,
                    "next_attempt_at": start + timedelta(seconds=n * spacing),
                }
            )
        insert_many(conn, outbox_t, outbox_rows)

    def stats(self, mailing_id: int) -> dict[str, Any]:
        """The mailing and what became of its messages."""
        return mailing_stats(self.core.store, mailing_id)

    def list_mailings(self) -> list[dict[str, Any]]:
        with self.core.store.read() as conn:
            ids = list(
                conn.execute(sa.select(mailing_t.c.id).order_by(mailing_t.c.id.desc())).scalars()
            )
        return [self.stats(i) for i in ids]

    # -- what recipients do ---------------------------------------------------------------

    def _mark(self, recipient_id: int, what: str) -> dict[str, Any] | None:
        """Set ``<what>_at`` once (the first time counts); the recipient row, or None."""
        column = getattr(recipient_t.c, f"{what}_at")
        with self.core.store.write() as conn:
            row = conn.execute(
                sa.select(recipient_t).where(recipient_t.c.id == recipient_id)
            ).first()
            if row is None:
                return None
            if getattr(row, f"{what}_at") is None:
                conn.execute(
                    sa.update(recipient_t)
                    .where(recipient_t.c.id == recipient_id)
                    .values({column: utcnow()})
                )
            return dict(row._mapping)

    def opened(self, token: str) -> bool:
        links = self.links
        rid = links.recipient(token) if links else None
        return rid is not None and self._mark(rid, "opened") is not None

    def clicked(self, token: str, url: str, sig: str) -> bool:
        """A genuine click (token and target signed together) is counted; else False."""
        links = self.links
        if links is None or not hmac.compare_digest(sig, links.url_sig(token, url)):
            return False
        rid = links.recipient(token)
        if rid is None or self._mark(rid, "clicked") is None:
            return False
        self._mark(rid, "opened")  # a click implies the message was opened
        return True

    def unsubscribe(self, token: str) -> bool:
        """One-click unsubscribe: the contact gets no more mailings on this channel."""
        links = self.links
        rid = links.recipient(token) if links else None
        if rid is None:
            return False
        row = self._mark(rid, "unsubscribed")
        if row is None:
            return False
        with self.core.store.write() as conn:
            channel = conn.execute(
                sa.select(mailing_t.c.channel).where(mailing_t.c.id == row["mailing_id"])
            ).scalar_one()
            exists = conn.execute(
                sa.select(unsubscribe_t.c.contact_id).where(
                    unsubscribe_t.c.contact_id == row["contact_id"],
                    unsubscribe_t.c.channel == channel,
                )
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(unsubscribe_t).values(
                        contact_id=row["contact_id"],
                        channel=channel,
                        at=utcnow(),
                        source=f"mailing {row['mailing_id']}",
                    )
                )
                # this contact's messages of other mailings on the channel still waiting
                # (a slow mailing's later rows) are due now: the outbox fails them at once
                # as unsubscribed (see Outbox._send_one), with message.failed and the hook
                waiting = (
                    sa.select(recipient_t.c.interaction_id)
                    .join(mailing_t, mailing_t.c.id == recipient_t.c.mailing_id)
                    .where(
                        recipient_t.c.contact_id == row["contact_id"],
                        mailing_t.c.channel == channel,
                    )
                )
                now = utcnow()
                conn.execute(
                    sa.update(outbox_t)
                    .where(
                        outbox_t.c.interaction_id.in_(waiting),
                        sa.or_(outbox_t.c.locked_until.is_(None), outbox_t.c.locked_until < now),
                    )
                    .values(next_attempt_at=now)
                )
                record_events(
                    conn,
                    [
                        (
                            EventType.CONTACT_UNSUBSCRIBED,
                            {"contact_id": row["contact_id"], "channel": channel},
                            None,
                        )
                    ],
                )
        self.core.events.notify()
        return True

    @staticmethod
    def note_reply(conn: sa.Connection, interaction_id: int) -> None:
        """A reply to ``interaction_id`` arrived (called in the inbox's transaction)."""
        _note_first(conn, interaction_id, recipient_t.c.replied_at)

    @staticmethod
    def note_bounce(conn: sa.Connection, interaction_id: int) -> None:
        """``interaction_id`` bounced (called in the outbox's transaction)."""
        _note_first(conn, interaction_id, recipient_t.c.bounced_at)


def _note_first(conn: sa.Connection, interaction_id: int, column: Any) -> None:
    """Stamp ``column`` of the mailing recipient of ``interaction_id``, the first time."""
    conn.execute(
        sa.update(recipient_t)
        .where(recipient_t.c.interaction_id == interaction_id, column.is_(None))
        .values({column: utcnow()})
    )


def mailing_stats(store: Store, mailing_id: int) -> dict[str, Any]:
    """The mailing and what became of its messages."""
    with store.read() as conn:
        row = conn.execute(sa.select(mailing_t).where(mailing_t.c.id == mailing_id)).first()
        if row is None:
            raise NotFound(f"no mailing with id {mailing_id}")
        status_counts: dict[str, int] = dict(
            conn.execute(
                sa.select(interaction_t.c.status, sa.func.count())
                .join(recipient_t, recipient_t.c.interaction_id == interaction_t.c.id)
                .where(recipient_t.c.mailing_id == mailing_id)
                .group_by(interaction_t.c.status)
            ).all()
        )
        counts = conn.execute(
            sa.select(
                *(
                    sa.func.count(getattr(recipient_t.c, f"{what}_at")).label(what)
                    for what in ("opened", "clicked", "replied", "bounced", "unsubscribed")
                )
            ).where(recipient_t.c.mailing_id == mailing_id)
        ).one()
    queued = int(status_counts.get("queued", 0))
    sent = int(status_counts.get("sent", 0))
    failed = int(status_counts.get("failed", 0))
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
        "sent": sent,
        "failed": failed,
        "bounced": int(counts.bounced),
        "opened": int(counts.opened),
        "clicked": int(counts.clicked),
        "replied": int(counts.replied),
        "unsubscribed": int(counts.unsubscribed),
        "done": total - queued,
        "finished": queued == 0,
    }
