"""Fuzzing the email parser (Hypothesis) with messages near real ones: a multipart mail
with an attachment and a delivery report. ``mime.parse`` reads whatever it is given (the
problems go to ``problems``); the channel quarantines what still fails (see
``test_email_channel``), but a message should be stored, not quarantined, whenever it can.
A bounded run in `make test`; `make fuzz` runs long."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from switchboard.testing import mutated
from switchboard_email.mime import parse

MAIL = (
    b"From: =?utf-8?b?0J7Qu9GM0LPQsA==?= <olga@example.com>\r\nTo: sales@example.com\r\n"
    b"Subject: =?koi8-r?B?8NLJ18XU?=\r\nMessage-ID: <m1@example.com>\r\n"
    b"In-Reply-To: <out-1@switchboard>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
    b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n"
    b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
    b" filename*=utf-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
    b"Final-Recipient: rfc822; a@b\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550\r\n"
    b" folded\r\n--B--\r\n"
)
ALPHABET = b"\r\n\t :;=<>\"'*%-?/\x00\x80\xd0\xff0Bb"


@given(st.one_of(st.binary(max_size=3000), mutated(MAIL, ALPHABET, edits=10, longest=300)))
def test_the_email_parser_reads_anything_fuzz(raw: bytes) -> None:
    parsed = parse(raw)
    assert parsed.text is None or isinstance(parsed.text, str)
    for attachment in parsed.attachments:
        assert isinstance(attachment.data, bytes)
