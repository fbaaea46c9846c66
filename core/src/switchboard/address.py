"""Channel identities: ``phone:+74951234567``, ``email:anna@example.com``, ``telegram:42``.

An :class:`Address` is always normalized, so two spellings of the same identity compare
equal and hit the same row of the address index. Parsing lives in an
:class:`AddressBook`: one normalizer per kind, the core's three plus whatever plugins add
through the ``register_address_kinds`` hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import attrs
import idna
import phonenumbers

Normalizer = Callable[[str, "AddressBook"], str]
"""Turns raw input into the canonical value of one kind, or raises :class:`AddressError`."""

_KIND_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class AddressError(ValueError):
    """Raised when input cannot be read as an address; the message names the input."""

    def __init__(self, raw: str, reason: str, kind: str | None = None) -> None:
        self.raw = raw
        self.kind = kind
        self.reason = reason
        where = f"{kind} address" if kind else "address"
        super().__init__(f"not a valid {where}: {raw!r} ({reason})")


@attrs.frozen(order=True)
class Address:
    """A normalized channel identity. Build one with :meth:`AddressBook.parse`."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def normalize_phone(raw: str, book: AddressBook) -> str:
    """E.164, through ``phonenumbers``; national forms use the book's default region."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, book.default_region)
    except phonenumbers.NumberParseException as exc:
        raise AddressError(raw, str(exc.args[0] if exc.args else exc), "phone") from None
    if not phonenumbers.is_possible_number(number):
        raise AddressError(raw, "not a possible phone number", "phone")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


_LOCAL_PART_RE: Final = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-\u0080-\U0010ffff]+$")


def normalize_email(raw: str, book: AddressBook) -> str:
    """Case-folded local part and domain; the domain in its IDNA (``xn--``) form."""
    text = raw.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(raw, "expected local@domain", "email")
    if not _LOCAL_PART_RE.match(local) or local.startswith(".") or local.endswith("."):
        raise AddressError(raw, "invalid characters in the local part", "email")
    try:
        ascii_domain = idna.encode(domain.rstrip(".").lower(), uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressError(raw, f"invalid domain: {exc}", "email") from None
    if "." not in ascii_domain:
        raise AddressError(raw, "the domain has no dot", "email")
    return f"{local.casefold()}@{ascii_domain}"


def normalize_telegram(raw: str, book: AddressBook) -> str:
    """A Telegram user or chat id: an integer (group chats are negative)."""
    text = raw.strip()
    if not re.fullmatch(r"-?[0-9]{1,20}", text):
        raise AddressError(raw, "expected a numeric Telegram id", "telegram")
    return str(int(text))


class AddressBook:
    """Parses and normalizes addresses of every registered kind."""

    def __init__(self, default_region: str = "US") -> None:
        self.default_region = default_region.upper()
        self._normalizers: dict[str, Normalizer] = {}
        self.register("phone", normalize_phone)
        self.register("email", normalize_email)
        self.register("telegram", normalize_telegram)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._normalizers)

    def register(self, kind: str, normalizer: Normalizer) -> None:
        """Add (or replace) the normalizer of a kind; plugins call this through the hook."""
        if not _KIND_RE.match(kind):
            raise ValueError(f"address kind {kind!r} must match {_KIND_RE.pattern}")
        self._normalizers[kind] = normalizer

    def make(self, kind: str, raw: str) -> Address:
        """Normalize ``raw`` as an address of ``kind``."""
        normalizer = self._normalizers.get(kind)
        if normalizer is None:
            known = ", ".join(sorted(self._normalizers))
            raise AddressError(f"{kind}:{raw}", f"unknown kind {kind!r}; known: {known}")
        if not isinstance(raw, str) or not raw.strip():
            raise AddressError(str(raw), "empty", kind)
        return Address(kind, normalizer(raw, self))

    def parse(self, raw: str | Address) -> Address:
        """Read ``kind:value``; a bare value is guessed: ``@`` means email, else phone."""
        if isinstance(raw, Address):
            return self.make(raw.kind, raw.value)
        if not isinstance(raw, str) or not raw.strip():
            raise AddressError(str(raw), "empty")
        text = raw.strip()
        kind, sep, value = text.partition(":")
        if sep and kind.lower() in self._normalizers:
            return self.make(kind.lower(), value)
        if sep and _KIND_RE.match(kind.lower()) and not kind.isdigit():
            known = ", ".join(sorted(self._normalizers))
            raise AddressError(raw, f"unknown kind {kind!r}; known: {known}")
        if "@" in text:
            return self.make("email", text)
        return self.make("phone", text)
