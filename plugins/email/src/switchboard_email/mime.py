"""Reading inbound mail: as much as can be read, whatever the message looks like."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class Attachment:
    filename: str
    content_type: str
    data: bytes


@attrs.frozen
class Parsed:
    message_id: str | None
    sender: str | None
    sender_name: str | None
    subject: str | None
    text: str | None
    in_reply_to: tuple[str, ...]
    attachments: tuple[Attachment, ...]
    bounce_of: str | None = None
    bounce_reason: str | None = None
    problems: tuple[str, ...] = ()


_ID_RE = re.compile(r"<[^<>\s]+>")


def _ids(value: str | None) -> list[str]:
    return _ID_RE.findall(value or "")


def _text(part: Message, problems: list[str]) -> str:
    """A text part's content; an unknown or wrong charset is read with replacements."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        return str(content)
    except (LookupError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"charset of a text part: {exc}")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        return data.decode("utf-8", errors="replace")


def parse(raw: bytes) -> Parsed:
    problems: list[str] = []
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    for defect in msg.defects:
        problems.append(f"defect: {type(defect).__name__}")
    try:
        name, address = email.utils.parseaddr(str(msg.get("From", "")))
    except (TypeError, ValueError, IndexError) as exc:  # a header the parser cannot read
        problems.append(f"From: {exc}")
        name, address = "", ""
    message_ids = _ids(str(msg.get("Message-ID", "")))
    in_reply_to = tuple(
        dict.fromkeys(_ids(str(msg.get("In-Reply-To", ""))) + _ids(str(msg.get("References", ""))))
    )
    text = None
    attachments: list[Attachment] = []
    bounce_of = bounce_reason = None
    if (
        msg.get_content_type() == "multipart/report"
        and msg.get_param("report-type") == "delivery-status"
    ):
        bounce_of, bounce_reason = _bounce(msg)
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except (KeyError, IndexError, TypeError) as exc:
        problems.append(f"body: {exc}")
        body = None
    if body is not None:
        text = _text(body, problems)
        if body.get_content_type() == "text/html":
            text = re.sub(r"<[^>]+>", " ", text)
    for part in msg.walk():
        filename = part.get_filename()
        if filename and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                attachments.append(
                    Attachment(
                        Path(filename).name or "attachment", part.get_content_type(), payload
                    )
                )
    subject: Any = msg.get("Subject")
    return Parsed(
        message_id=message_ids[0] if message_ids else None,
        sender=address or None,
        sender_name=name or None,
        subject=str(subject) if subject is not None else None,
        text=text.strip() if text else None,
        in_reply_to=in_reply_to,
        attachments=tuple(attachments),
        bounce_of=bounce_of,
        bounce_reason=bounce_reason,
        problems=tuple(problems),
    )


def _bounce(msg: EmailMessage) -> tuple[str | None, str | None]:
    """The Message-ID a delivery-status notification (RFC 3464) is about, and why."""
    original = reason = None
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            # the parser gives the report's field blocks as header sets: folded fields
            # (a long Diagnostic-Code continues on indented lines) come whole
            fields: dict[str, str] = {}
            for block in part.get_payload():
                if isinstance(block, Message):
                    for field in ("Status", "Diagnostic-Code"):
                        value = block.get(field)
                        if value is not None and field not in fields:
                            fields[field] = " ".join(str(value).split())
            reason = " ".join(
                x
                for x in (
                    fields.get("Status") and f"status {fields['Status']}",
                    fields.get("Diagnostic-Code"),
                )
                if x
            )
        elif kind in ("message/rfc822", "text/rfc822-headers"):
            text = part.as_string()
            header = re.search(r"^Message-ID:\s*(<[^>]+>)", text, flags=re.M | re.I)
            if header:
                original = header.group(1)
    return original, reason or "delivery failed"
