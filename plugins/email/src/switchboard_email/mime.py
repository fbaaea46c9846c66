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


def _header(msg: Message, name: str, problems: list[str]) -> str | None:
    """A header's (decoded) value. The standard library's header parser raises on some
    malformed values (IndexError, HeaderParseError: found by fuzzing); then the raw value
    is taken, and the problem noted, so the message is still stored."""
    try:
        value = msg.get(name)
        return None if value is None else str(value)
    except Exception as exc:
        problems.append(f"{name}: unreadable ({type(exc).__name__})")
        for key, raw in msg.raw_items():
            if key.lower() == name.lower():
                return str(raw)
        return None


def _envelope(msg: Message, problems: list[str]) -> dict[str, Any]:
    """The sender, ids and subject of a message, however it was parsed."""
    try:
        name, address = email.utils.parseaddr(_header(msg, "From", problems) or "")
    except (TypeError, ValueError, IndexError) as exc:  # a header the parser cannot read
        problems.append(f"From: {exc}")
        name, address = "", ""
    message_ids = _ids(_header(msg, "Message-ID", problems))
    return {
        "message_id": message_ids[0] if message_ids else None,
        "sender": address or None,
        "sender_name": name or None,
        "subject": _header(msg, "Subject", problems),
        "in_reply_to": tuple(
            dict.fromkeys(
                _ids(_header(msg, "In-Reply-To", problems))
                + _ids(_header(msg, "References", problems))
            )
        ),
    }


def _plainly(raw: bytes, problem: str) -> Parsed:
    """A message the standard parser cannot take apart, read as the old (compat32) parser
    reads it: its headers as they are and its first text part, without attachments."""
    msg = email.message_from_bytes(raw)  # compat32: lenient, no header objects
    problems = [problem]
    envelope = _envelope(msg, problems)
    text = None
    for part in msg.walk():
        if not part.is_multipart() and part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                text = payload.decode("utf-8", errors="replace")
                break
    return Parsed(
        **envelope,
        text=text.strip() if text else None,
        attachments=(),
        problems=tuple(problems),
    )


def parse(raw: bytes) -> Parsed:
    """Everything we keep of a message. Whatever part of it cannot be read is left out
    and said in ``problems``; the rest is kept."""
    problems: list[str] = []
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as exc:  # the modern parser gives up on some Content-Type values
        return _plainly(raw, f"structure unreadable ({type(exc).__name__}: {exc})")
    assert isinstance(msg, EmailMessage)
    for defect in msg.defects:
        problems.append(f"defect: {type(defect).__name__}")
    envelope = _envelope(msg, problems)
    text = None
    attachments: list[Attachment] = []
    bounce_of = bounce_reason = None
    try:
        if (
            msg.get_content_type() == "multipart/report"
            and msg.get_param("report-type") == "delivery-status"
        ):
            bounce_of, bounce_reason = _bounce(msg)
    except Exception as exc:  # an unreadable report: kept as a plain message
        problems.append(f"delivery report: {type(exc).__name__}: {exc}")
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
        if body is not None:
            text = _text(body, problems)
            if body.get_content_type() == "text/html":
                text = re.sub(r"<[^>]+>", " ", text)
    except Exception as exc:
        problems.append(f"body: {type(exc).__name__}: {exc}")
    for part in msg.walk():
        try:
            filename = part.get_filename()
            if filename and not part.is_multipart():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    attachments.append(
                        Attachment(
                            Path(filename).name or "attachment", part.get_content_type(), payload
                        )
                    )
        except Exception as exc:  # one unreadable part: the others are kept
            problems.append(f"a part: {type(exc).__name__}: {exc}")
    return Parsed(
        **envelope,
        text=text.strip() if text else None,
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
