from __future__ import annotations

import pytest

from switchboard import Address, AddressBook, AddressError


@pytest.fixture
def ru() -> AddressBook:
    return AddressBook("RU")


@pytest.mark.parametrize(
    "raw",
    [
        "8 (495) 123-45-67",
        "+7 495 123 45 67",
        "+74951234567",
        "phone:84951234567",
        "007 495 1234567",
        "  +7(495)123-45-67 ",
    ],
)
def test_phone_spellings_are_one_address(ru: AddressBook, raw: str) -> None:
    assert ru.parse(raw) == Address("phone", "+74951234567")


def test_phone_uses_the_default_region() -> None:
    assert AddressBook("US").parse("(202) 555-0143") == Address("phone", "+12025550143")
    assert AddressBook("GB").parse("020 7946 0018") == Address("phone", "+442079460018")


@pytest.mark.parametrize("raw", ["12", "phone:hello", "phone:+7", "+1 000"])
def test_bad_phone_names_the_input(ru: AddressBook, raw: str) -> None:
    with pytest.raises(AddressError) as exc:
        ru.parse(raw)
    assert repr(raw.removeprefix("phone:")) in str(exc.value) or repr(raw) in str(exc.value)
    assert "phone" in str(exc.value)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("Anna@Example.COM", "anna@example.com"),
        ("email:<anna@example.com>", "anna@example.com"),
        ("user@Пример.рф", "user@xn--e1afmkfd.xn--p1ai"),
        ("ANNA.Smith+tag@sub.example.org.", "anna.smith+tag@sub.example.org"),
    ],
)
def test_email_is_case_folded_with_idna_domain(ru: AddressBook, raw: str, value: str) -> None:
    assert ru.parse(raw) == Address("email", value)


@pytest.mark.parametrize(
    "raw",
    [
        "email:anna",
        "email:@example.com",
        "email:a@localhost",
        "email:a b@example.com",
        "email:a@exa mple.com",
    ],
)
def test_bad_email(ru: AddressBook, raw: str) -> None:
    with pytest.raises(AddressError, match="email"):
        ru.parse(raw)


def test_telegram_ids(ru: AddressBook) -> None:
    assert ru.parse("telegram:0123456789") == Address("telegram", "123456789")
    assert ru.parse("telegram:-100200300") == Address("telegram", "-100200300")
    with pytest.raises(AddressError, match="numeric Telegram id"):
        ru.parse("telegram:@durov")


def test_unknown_kind_lists_the_known_ones(ru: AddressBook) -> None:
    with pytest.raises(AddressError, match=r"unknown kind 'sms'; known: email, phone, telegram"):
        ru.parse("sms:+74951234567")


def test_plugins_add_kinds(ru: AddressBook) -> None:
    ru.register("vk", lambda raw, book: raw.strip().lower().removeprefix("id"))
    assert ru.parse("vk:ID42") == Address("vk", "42")
    assert str(ru.parse("VK:id7")) == "vk:7"
    with pytest.raises(ValueError, match="address kind"):
        ru.register("Bad Kind", lambda raw, book: raw)


def test_empty_input(ru: AddressBook) -> None:
    with pytest.raises(AddressError, match="empty"):
        ru.parse("   ")
    with pytest.raises(AddressError, match="empty"):
        ru.parse("email:")
