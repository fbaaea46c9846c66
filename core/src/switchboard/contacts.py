"""Finding the contact behind an address: the ``resolve_contact`` hook first (an external
CRM or directory may answer), then the store, else a new contact."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard.address import Address
from switchboard.models import Contact, utcnow
from switchboard.store import address_t, contact_t, insert_many, pairs_in

if TYPE_CHECKING:
    from switchboard.plugins import Plugins

log = logging.getLogger("switchboard.contacts")


class ContactResolver:
    def __init__(self, plugins: Plugins, timeout: float = 0.5) -> None:
        self.plugins = plugins
        self.timeout = timeout
        self.timeouts = 0  # lookups that took longer than ``timeout``

    def has_plugins(self) -> bool:
        return bool(self.plugins.pm.hook.resolve_contact.get_hookimpls())

    async def ask_plugins(self, addresses: Iterable[Address]) -> dict[Address, Contact]:
        """What ``resolve_contact`` implementations answer for each address, asked
        together; one that takes longer than ``timeout`` seconds (a slow CRM) is given
        up on, and the store decides for that address (a screen pop never waits past
        the budget; the plugin may fill its link in later)."""
        answers: dict[Address, Contact] = {}
        if not self.has_plugins():
            return answers
        wanted = list(dict.fromkeys(addresses))
        found = await asyncio.gather(*(self._ask(a) for a in wanted))
        for address, contact in zip(wanted, found, strict=True):
            if isinstance(contact, Contact):
                answers[address] = contact
        return answers

    async def _ask(self, address: Address) -> Contact | None:
        try:
            return await asyncio.wait_for(
                self.plugins.hooks.resolve_contact(address=address), self.timeout
            )
        except TimeoutError:
            self.timeouts += 1
            log.warning(
                "resolve_contact for %s took over %.2fs: the store decides", address, self.timeout
            )
            return None

    @staticmethod
    def resolve_many(
        conn: Connection,
        wanted: Sequence[tuple[Address, Contact | None, str | None]],
    ) -> dict[Address, tuple[int, bool]]:
        """Contact ids for many addresses inside one write transaction; True if created.

        Each item is ``(address, plugins' answer, display name)``. Addresses nobody answered
        for are looked up with one query, and the missing ones created with one bulk insert
        (named after the first display name seen, else the address). A plugin's answer is
        used as is when it names a stored contact, else stored as a new contact.
        """
        result: dict[Address, tuple[int, bool]] = {}
        names: dict[Address, str | None] = {}
        for address, answer, name in wanted:
            if answer is None and (address not in names or names[address] is None):
                names[address] = name
        if names:
            result.update({a: (cid, False) for a, cid in owners_of(conn, names).items()})
            missing = [a for a in names if a not in result]
            if missing:
                now = utcnow()
                ids = insert_many(
                    conn,
                    contact_t,
                    [{"name": names[a] or a.value, "created_at": now} for a in missing],
                )
                conn.execute(
                    sa.insert(address_t),
                    [
                        {"contact_id": i, "kind": a.kind, "value": a.value}
                        for a, i in zip(missing, ids, strict=True)
                    ],
                )
                result.update({a: (i, True) for a, i in zip(missing, ids, strict=True)})
        for address, answer, name in wanted:
            if answer is not None and address not in result:
                result[address] = ContactResolver._store_answer(conn, address, answer, name)
        return result

    @staticmethod
    def resolve_one(
        conn: Connection, address: Address, answer: Contact | None = None, name: str | None = None
    ) -> tuple[int, bool]:
        return ContactResolver.resolve_many(conn, [(address, answer, name)])[address]

    @staticmethod
    def _store_answer(
        conn: Connection, address: Address, answer: Contact, name: str | None
    ) -> tuple[int, bool]:
        if answer.id is not None:
            exists = conn.execute(
                sa.select(contact_t.c.id).where(contact_t.c.id == answer.id)
            ).scalar()
            if exists is not None:
                return answer.id, False
        addresses = list(dict.fromkeys((address, *answer.addresses)))
        owners = owners_of(conn, addresses)
        if address in owners:  # the plugin described a contact the store already has
            return owners[address], False
        contact_id = conn.execute(
            sa.insert(contact_t)
            .values(
                name=answer.name or name or address.value,
                company=answer.company,
                owner_agent_id=answer.owner_agent_id,
                created_at=utcnow(),
            )
            .returning(contact_t.c.id)
        ).scalar_one()
        conn.execute(
            sa.insert(address_t),
            [
                {"contact_id": contact_id, "kind": a.kind, "value": a.value}
                for a in addresses
                if a not in owners
            ],
        )
        return contact_id, True


def owners_of(conn: Connection, addresses: Iterable[Address]) -> dict[Address, int]:
    """The contact id owning each of ``addresses`` that is stored (one query)."""
    wanted = set(addresses)
    if not wanted:
        return {}
    rows = conn.execute(
        sa.select(address_t.c.kind, address_t.c.value, address_t.c.contact_id).where(
            pairs_in(conn, address_t.c.kind, address_t.c.value, [(a.kind, a.value) for a in wanted])
        )
    )
    found = {Address(r.kind, r.value): r.contact_id for r in rows}
    return {a: cid for a, cid in found.items() if a in wanted}
