"""Finding the contact behind an address: the ``resolve_contact`` hook first (an external
CRM or directory may answer), then the store, else a new contact."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from switchboard.address import Address
from switchboard.models import Contact, utcnow
from switchboard.store import address_t, contact_t

if TYPE_CHECKING:
    from switchboard.plugins import Plugins


class ContactResolver:
    def __init__(self, plugins: Plugins) -> None:
        self.plugins = plugins

    async def ask_plugins(self, addresses: Iterable[Address]) -> dict[Address, Contact]:
        """What ``resolve_contact`` implementations answer for each address."""
        answers: dict[Address, Contact] = {}
        if not self.plugins.pm.hook.resolve_contact.get_hookimpls():
            return answers
        for address in dict.fromkeys(addresses):
            contact = await self.plugins.call_first("resolve_contact", address=address)
            if isinstance(contact, Contact):
                answers[address] = contact
        return answers

    @staticmethod
    def resolve(
        conn: Connection,
        address: Address,
        answer: Contact | None,
        name: str | None,
        cache: dict[Address, int],
    ) -> tuple[int, bool]:
        """The contact id for ``address`` inside a write transaction; True if created.

        ``answer`` is the plugins' answer: a stored contact (``id`` set) is used as is; one
        without an id is created with its details. ``cache`` carries the addresses already
        resolved in this transaction, so a batch creates each new contact once.
        """
        if address in cache:
            return cache[address], False
        if answer is not None and answer.id is not None:
            exists = conn.execute(
                sa.select(contact_t.c.id).where(contact_t.c.id == answer.id)
            ).scalar()
            if exists is not None:
                cache[address] = answer.id
                return answer.id, False
        if answer is None:
            found = conn.execute(
                sa.select(address_t.c.contact_id).where(
                    address_t.c.kind == address.kind, address_t.c.value == address.value
                )
            ).scalar()
            if found is not None:
                cache[address] = found
                return found, False
        contact_id = conn.execute(
            sa.insert(contact_t)
            .values(
                name=(answer.name if answer else None) or name or str(address.value),
                company=answer.company if answer else None,
                owner_agent_id=answer.owner_agent_id if answer else None,
                created_at=utcnow(),
            )
            .returning(contact_t.c.id)
        ).scalar_one()
        addresses = dict.fromkeys((address, *(answer.addresses if answer else ())))
        taken = {
            (r.kind, r.value)
            for r in conn.execute(
                sa.select(address_t.c.kind, address_t.c.value).where(
                    sa.tuple_(address_t.c.kind, address_t.c.value).in_(
                        [(a.kind, a.value) for a in addresses]
                    )
                )
            )
        }
        if (address.kind, address.value) in taken:
            # Found by the store after all (the plugin answered for a known address).
            conn.execute(sa.delete(contact_t).where(contact_t.c.id == contact_id))
            found = conn.execute(
                sa.select(address_t.c.contact_id).where(
                    address_t.c.kind == address.kind, address_t.c.value == address.value
                )
            ).scalar_one()
            cache[address] = found
            return found, False
        conn.execute(
            sa.insert(address_t),
            [
                {"contact_id": contact_id, "kind": a.kind, "value": a.value}
                for a in addresses
                if (a.kind, a.value) not in taken
            ],
        )
        cache[address] = contact_id
        return contact_id, True


def load_contacts(conn: Connection, ids: Iterable[int]) -> dict[int, Contact]:
    """Contacts with their addresses, two queries whatever the number of ids."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    addresses: dict[int, list[Address]] = {i: [] for i in wanted}
    for r in conn.execute(
        sa.select(address_t.c.contact_id, address_t.c.kind, address_t.c.value)
        .where(address_t.c.contact_id.in_(wanted))
        .order_by(address_t.c.id)
    ):
        addresses[r.contact_id].append(Address(r.kind, r.value))
    return {
        r.id: Contact(
            id=r.id,
            name=r.name,
            company=r.company,
            addresses=tuple(addresses[r.id]),
            owner_agent_id=r.owner_agent_id,
            created_at=r.created_at,
        )
        for r in conn.execute(sa.select(contact_t).where(contact_t.c.id.in_(wanted)))
    }
