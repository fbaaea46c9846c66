"""Fuzzing the contact imports (Hypothesis): a CSV or vCard file from outside yields rows
or rejected rows with a reason, never an exception that would abort the import. A bounded
run in `make test`; `make fuzz` runs long."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from switchboard.contacts_io import Row, read_csv, read_vcards

CSV = 'name,company,phone,email\nOlga,"Romashka, LLC",+74951234567;8 495 1,olga@x.ru\n'
VCF = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Maria\r\nN:Sidorova;Maria;;;\r\nORG:Vasilek;Sales\r\n"
    "TEL;TYPE=CELL:+7 903 111-22-33\r\nEMAIL:maria@vasilek.ru\r\nEND:VCARD\r\n"
)
ALPHABET = '\r\n\t,;:"=\\\x00é' + "BEGIN:VCARDEND"


@st.composite
def near(draw: st.DrawFn, seed: str) -> str:
    text = list(seed)
    for _ in range(draw(st.integers(1, 10))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.text(alphabet=ALPHABET, min_size=1, max_size=30))
        if draw(st.booleans()):
            text[at:at] = list(piece)
        else:
            del text[at : at + len(piece)]
    return "".join(text)


def check(items: list[Row | tuple[str, str]]) -> None:
    for item in items:
        if isinstance(item, Row):
            assert isinstance(item.name, str) and all(isinstance(a, str) for a in item.addresses)
        else:
            where, reason = item
            assert where and reason


@given(st.one_of(st.text(max_size=2000), near(CSV)))
def test_csv_import_reads_or_rejects_fuzz(text: str) -> None:
    check(list(read_csv(io.StringIO(text, newline=""))))


@given(st.one_of(st.text(max_size=2000), near(VCF)))
def test_vcard_import_reads_or_rejects_fuzz(text: str) -> None:
    check(list(read_vcards(text)))
