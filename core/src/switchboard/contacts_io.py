"""Importing and exporting contacts: CSV and vCard.

Import is idempotent: each row is matched to a stored contact by any of its addresses;
a match is updated (name, company, owner, new addresses), no match is created. A row that
cannot be used is rejected with its reason, and the others go in. A row needs at least one
address, since that is how a re-import finds the contact again.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import attrs
import sqlalchemy as sa

from switchboard.address import Address, AddressBook, AddressError
from switchboard.events import contact_created_events, record
from switchboard.models import Contact
from switchboard.store import Store, contact_t, load_contacts

CSV_FIELDS = ("name", "company", "phone", "email", "telegram", "owner")
_ALIASES = {
    "phones": "phone",
    "emails": "email",
    "full name": "name",
    "organization": "company",
    "owner_agent": "owner",
    "tel": "phone",
    "mobile": "phone",
    "e-mail": "email",
}


@attrs.frozen
class Row:
    """One contact to import: where it came from, and its fields as text."""

    source: str
    name: str
    company: str | None
    addresses: tuple[str, ...]
    owner: str | None


@attrs.define
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[str, str]] = attrs.Factory(list)
    new_contacts: list[Contact] = attrs.Factory(list)

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged + len(self.rejected)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in re.split(r"[;\n]", value or "") if v.strip()]


def read_csv(f: TextIO) -> Iterator[Row | tuple[str, str]]:
    """Rows of a CSV file with a header (``name, company, phone, email, telegram, owner``;
    several values in one cell separated by ``;``). Yields ``(source, reason)`` for a row
    that cannot be read."""
    reader = csv.DictReader(f)
    if reader.fieldnames is None:
        return
    columns = {h: _ALIASES.get(h.strip().lower(), h.strip().lower()) for h in reader.fieldnames}
    if "name" not in columns.values():
        yield ("header", f"no 'name' column (columns: {', '.join(reader.fieldnames)})")
        return
    for n in itertools.count(2):
        try:
            raw = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a field over the csv module's 128 KiB limit, say
            yield (f"line {reader.line_num}", f"cannot be read: {exc}")
            continue
        row = {columns[k]: _unguard(v) for k, v in raw.items() if k is not None}
        if None in raw:
            yield (f"line {n}", "more cells than the header has columns")
            continue
        addresses = [
            f"{kind}:{v}" for kind in ("phone", "email", "telegram") for v in _split(row.get(kind))
        ]
        yield Row(
            f"line {n}",
            (row.get("name") or "").strip(),
            (row.get("company") or "").strip() or None,
            tuple(addresses),
            (row.get("owner") or "").strip() or None,
        )


def read_vcards(text: str) -> Iterator[Row | tuple[str, str]]:
    """Cards of a vCard file (FN/N, ORG, TEL, EMAIL); a card that does not parse is
    reported and the next one is read."""
    import vobject

    blocks = re.findall(r"BEGIN:VCARD.*?END:VCARD", text, flags=re.S | re.I)
    for n, block in enumerate(blocks, start=1):
        try:
            card = vobject.readOne(block)
        except Exception as exc:
            yield (f"card {n}", f"not a valid vCard: {exc}")
            continue
        try:  # vobject gives odd shapes for odd cards (ORG as a list of lists: fuzzing)
            yield Row(f"card {n}", *_card_fields(card), None)
        except Exception as exc:
            yield (f"card {n}", f"cannot be read: {type(exc).__name__}: {exc}")


def _flat(value: object) -> str:
    """A vCard value as one line of text, however vobject nested it."""
    if isinstance(value, (list, tuple)):
        return " ".join(filter(None, (_flat(v) for v in value)))
    return str(value).strip()


def _card_fields(card: Any) -> tuple[str, str | None, tuple[str, ...]]:
    name = ""
    if hasattr(card, "fn"):
        name = _flat(card.fn.value)
    elif hasattr(card, "n"):
        name = _flat([card.n.value.given, card.n.value.family])
    company = _flat(card.org.value) or None if hasattr(card, "org") else None
    addresses = [f"phone:{_flat(t.value)}" for t in card.contents.get("tel", [])]
    addresses += [f"email:{_flat(e.value)}" for e in card.contents.get("email", [])]
    return name, company, tuple(addresses)


def import_rows(
    store: Store,
    book: AddressBook,
    rows: Iterable[Row | tuple[str, str]],
    *,
    progress: Callable[[int], None] | None = None,
    batch: int = 200,
) -> ImportReport:
    report = ImportReport()
    agents = {a.name: a.id for a in store.list_agents()}
    pending: list[Row] = []

    def flush() -> None:
        with store.write() as conn:
            created: list[int] = []
            for row in pending:
                outcome = _import_one(conn, store, book, agents, row)
                if isinstance(outcome, str):
                    report.rejected.append((row.source, outcome))
                elif outcome[1] == "created":
                    created.append(outcome[0])
                    report.created += 1
                elif outcome[1] == "updated":
                    report.updated += 1
                else:
                    report.unchanged += 1
            contacts = load_contacts(conn, created)
            report.new_contacts += [contacts[i] for i in created]
            record(conn, contact_created_events(contacts[i] for i in created))
        if progress:
            progress(len(pending))
        pending.clear()

    for item in rows:
        if isinstance(item, tuple):
            report.rejected.append(item)
            if progress:
                progress(1)
            continue
        pending.append(item)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return report


def _import_one(
    conn: Any, store: Store, book: AddressBook, agents: dict[str, int | None], row: Row
) -> tuple[int, str] | str:
    if not row.name:
        return "the name is empty"
    addresses: list[Address] = []
    for raw in row.addresses:
        try:
            addresses.append(book.parse(raw))
        except AddressError as exc:
            return str(exc)
    if not addresses:
        return "no phone, email or telegram id (needed to find the contact on re-import)"
    owner_id = None
    if row.owner:
        if row.owner not in agents:
            return f"no agent named {row.owner!r}"
        owner_id = agents[row.owner]
    owners = {a: store.find_contact_id(a, conn) for a in dict.fromkeys(addresses)}
    matched = {cid for cid in owners.values() if cid is not None}
    if len(matched) > 1:
        return (
            f"its addresses belong to different contacts ({', '.join(map(str, sorted(matched)))})"
            "; merge them first"
        )
    if not matched:
        contact = store.create_contact(
            row.name, addresses, company=row.company, owner_agent_id=owner_id, conn=conn
        )
        assert contact.id is not None
        return contact.id, "created"
    contact_id = matched.pop()
    current = conn.execute(sa.select(contact_t).where(contact_t.c.id == contact_id)).one()
    values: dict[str, Any] = {}
    if current.name != row.name:
        values["name"] = row.name
    if row.company is not None and current.company != row.company:
        values["company"] = row.company
    if owner_id is not None and current.owner_agent_id != owner_id:
        values["owner_agent_id"] = owner_id
    if values:
        conn.execute(sa.update(contact_t).where(contact_t.c.id == contact_id).values(values))
    new = [a for a, cid in owners.items() if cid is None]
    for a in new:
        store.add_address_in(conn, contact_id, a)
    return contact_id, "updated" if values or new else "unchanged"


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet take a cell for a formula (``=HYPERLINK(...)``)."""
PHONES = re.compile(r"\+\d+(;\+\d+)*")


def _guard(cell: str) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula gets a leading
    ``'`` (the spreadsheets' own text marker). Phone numbers (``+74951234567``, stored in
    E.164) are left as they are: digits after ``+`` are no formula."""
    if cell.startswith(FORMULA_START) and not PHONES.fullmatch(cell):
        return "'" + cell
    return cell


def _unguard(cell: str | None) -> str | None:
    """The cell as it was before :func:`_guard` (so an export imports back unchanged)."""
    if cell and cell.startswith("'") and cell[1:].startswith(FORMULA_START):
        return cell[1:]
    return cell


def export_csv(contacts: Iterable[Contact], agent_names: dict[int, str]) -> str:
    """Contacts as CSV; names and other text from outsiders (SIP display names, email
    From) cannot run as spreadsheet formulas (see :func:`_guard`)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for c in contacts:
        by_kind: dict[str, list[str]] = {}
        for a in c.addresses:
            by_kind.setdefault(a.kind, []).append(a.value)
        writer.writerow(
            _guard(cell)
            for cell in [
                c.name,
                c.company or "",
                ";".join(by_kind.get("phone", [])),
                ";".join(by_kind.get("email", [])),
                ";".join(by_kind.get("telegram", [])),
                agent_names.get(c.owner_agent_id or -1, ""),
            ]
        )
    return out.getvalue()


def export_vcards(contacts: Iterable[Contact]) -> str:
    import vobject

    parts = []
    for c in contacts:
        card = vobject.vCard()
        card.add("fn").value = c.name
        card.add("n").value = vobject.vcard.Name(given=c.name)
        if c.company:
            card.add("org").value = [c.company]
        for a in c.addresses:
            if a.kind == "phone":
                card.add("tel").value = a.value
            elif a.kind == "email":
                card.add("email").value = a.value
        parts.append(card.serialize())
    return "".join(parts)
