"""SIP messages: a strict parser with precise errors, and builders.

pyVoIP's own parser (``pyVoIP.SIP.SIPMessage``) keeps only the first of repeated headers
(so a proxy's ``Record-Route`` set is lost), fails on compact header names, on a header
without a space after the colon, on a body that contains a blank line, and raises
``IndexError`` on a malformed request line (pyVoIP issues #154, #175, #301). This module
replaces it for everything on the wire; every failure is a :class:`SipParseError` that
says what is wrong.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

import attrs

#: RFC 3261 7.3.3 compact forms.
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
}
CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Record-Route",
        "Route",
        "Max-Forwards",
        "Expires",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Allow",
        "Supported",
        "User-Agent",
        "Event",
    )
}
REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
# ASCII digits only (str.isdigit takes "²" and "¹", which int() then refuses), bounded:
# a CSeq number is below 2**31 (RFC 3261 8.1.1.5), a Content-Length below our size limit
CSEQ_NUMBER = re.compile(r"[0-9]{1,10}")
LENGTH = re.compile(r"[0-9]{1,9}")
STATUS = re.compile(r"[1-6][0-9][0-9]")
SENT_BY = re.compile(r"(\[[^\]]*\]|[^:\[\]]+)(?::([0-9]{1,5}))?")  # host or [v6], port
# control characters other than tab: a bare CR or a NUL inside a header would be echoed
# into our responses (we copy Via, From, To...)
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


class SipParseError(ValueError):
    """A datagram that is not a well-formed SIP message; the text says what is wrong."""


def canonical(name: str) -> str:
    low = name.strip().lower()
    if low in COMPACT:
        return COMPACT[low]
    return CANONICAL.get(low, name.strip())


@attrs.define
class SipMessage:
    """A parsed request (``method`` set) or response (``status`` set)."""

    method: str | None
    uri: str | None
    status: int | None
    reason: str | None
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        name = canonical(name)
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, repeated headers and comma lists flattened in order."""
        name = canonical(name)
        out: list[str] = []
        for key, value in self.headers:
            if key == name:
                out.extend(split_commas(value))
        return out

    def first(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self.first("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method); :func:`parse` checked both, so this cannot fail on a parsed
        message."""
        num, method = self.first("CSeq").split()
        return int(num), method.upper()

    @property
    def branch(self) -> str:
        return param(self.get_all("Via")[0], "branch") or ""

    @property
    def from_tag(self) -> str:
        return param(self.first("From"), "tag") or ""

    @property
    def to_tag(self) -> str:
        return param(self.first("To"), "tag") or ""

    def to_bytes(self) -> bytes:
        if self.method is not None:
            start = f"{self.method} {self.uri} SIP/2.0"
        else:
            start = f"SIP/2.0 {self.status} {self.reason}"
        return serialize(start, self.headers, self.body)


def serialize(start: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start]
    lines.extend(f"{k}: {v}" for k, v in headers if k != "Content-Length")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and not quoted and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if current:
        parts.append("".join(current).strip())
    return [p for p in parts if p]


def param(value: str, name: str) -> str | None:
    """A ``;name=value`` parameter of a header (outside the ``<uri>``)."""
    tail = value.rsplit(">", 1)[-1] if ">" in value else value
    for part in tail.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip()
    return None


def uri_of(value: str) -> str:
    """The URI of a name-addr (``"Bob" <sip:bob@host>;tag=x`` → ``sip:bob@host``)."""
    if "<" in value:
        start = value.index("<") + 1
        end = value.find(">", start)
        if end < 0:
            raise SipParseError(f"unclosed '<' in {value!r}")
        return value[start:end].strip()
    return value.split(";", 1)[0].strip()


def display_name(value: str) -> str | None:
    if "<" not in value:
        return None
    name = value[: value.index("<")].strip().strip('"').strip()
    return name or None


def user_of(uri: str) -> str | None:
    """The user part of a sip: URI (``sip:101@pbx`` → ``101``), or None."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0]
    if "@" not in rest:
        return None
    return rest.split("@", 1)[0] or None


def parse(data: bytes, max_size: int = 65_535) -> SipMessage:
    """Parse one datagram. Raises :class:`SipParseError` with the reason, whatever is
    wrong with it (a case the checks below miss still comes out as that error, so the
    caller counts and answers it like any other)."""
    try:
        return _parse(data, max_size)
    except SipParseError:
        raise
    except (ValueError, IndexError, KeyError) as exc:
        raise SipParseError(f"unreadable ({type(exc).__name__}: {exc})") from None


def _parse(data: bytes, max_size: int) -> SipMessage:
    if len(data) > max_size:
        raise SipParseError(f"message of {len(data)} bytes exceeds the {max_size}-byte limit")
    if not data.strip(b"\r\n\x00 "):
        raise SipParseError("empty datagram (keep-alive)")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise SipParseError("no blank line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"headers are not UTF-8 ({exc.reason} at byte {exc.start})") from None
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    headers: list[tuple[str, str]] = []
    for n, raw in enumerate(lines):
        if CONTROL.search(raw):
            raise SipParseError(f"a control character in line {n + 1} ({raw[:60]!r})")
    for raw in lines[1:]:
        if not raw.strip():
            continue
        if raw[0] in " \t":  # folded continuation (RFC 3261 7.3.1)
            if not headers:
                raise SipParseError("continuation line before any header")
            key, value = headers[-1]
            headers[-1] = (key, value + " " + raw.strip())
            continue
        name, colon, value = raw.partition(":")
        if not colon or not TOKEN.match(name.strip()):
            raise SipParseError(f"malformed header line {raw[:60]!r}")
        headers.append((canonical(name), value.strip()))
    parts = start.split(" ", 2)
    if start.startswith("SIP/"):
        if len(parts) < 2 or parts[0] != "SIP/2.0":
            raise SipParseError(f"unsupported status line {start[:60]!r}")
        if not STATUS.fullmatch(parts[1]):
            raise SipParseError(f"bad status code in {start[:60]!r}")
        msg = SipMessage(
            None, None, int(parts[1]), parts[2] if len(parts) > 2 else "", headers, b""
        )
    else:
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not TOKEN.match(parts[0]):
            raise SipParseError(f"malformed request line {start[:60]!r}")
        if ":" not in parts[1]:
            raise SipParseError(f"bad Request-URI {parts[1][:60]!r}")
        msg = SipMessage(parts[0].upper(), parts[1], None, None, headers, b"")
    for name in REQUIRED:
        if not msg.get(name):
            raise SipParseError(f"missing or empty {name} header")
    if not msg.get_all("Via"):
        raise SipParseError("empty Via header")
    cseq = msg.first("CSeq").split()
    if len(cseq) != 2 or not CSEQ_NUMBER.fullmatch(cseq[0]) or int(cseq[0]) >= 2**31:
        raise SipParseError(f"malformed CSeq {msg.first('CSeq')[:60]!r}")
    if not TOKEN.match(cseq[1]):
        raise SipParseError(f"malformed CSeq method {cseq[1][:60]!r}")
    if msg.method is not None and cseq[1].upper() != msg.method:
        raise SipParseError(f"CSeq method {cseq[1]} does not match {msg.method}")
    length_text = msg.get("Content-Length")
    if length_text is not None:
        if not LENGTH.fullmatch(length_text):
            raise SipParseError(f"bad Content-Length {length_text[:60]!r}")
        length = int(length_text)
        if length > len(body):
            raise SipParseError(
                f"Content-Length {length} but only {len(body)} body bytes (truncated?)"
            )
        body = body[:length]
    msg.body = body
    return msg


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def response(
    request: SipMessage,
    status: int,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    reason: str | None = None,
) -> bytes:
    """A response to ``request``: Via, From, To (with our tag), Call-ID, CSeq copied, and
    the Record-Route set copied on dialog-creating responses (RFC 3261 12.1.1; pyVoIP's
    ``gen_answer`` leaves it out, so in-dialog requests through a proxy fail)."""
    out: list[tuple[str, str]] = [("Via", v) for v in request.get_all("Via")]
    out.append(("From", request.first("From")))
    to = request.first("To")
    if to_tag and param(to, "tag") is None:
        to = f"{to};tag={to_tag}"
    out.append(("To", to))
    out.append(("Call-ID", request.call_id))
    out.append(("CSeq", request.first("CSeq")))
    if request.method == "INVITE" and 100 < status < 300:
        out.extend(("Record-Route", rr) for rr in request.get_all("Record-Route"))
    out.extend(headers)
    return serialize(f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}", out, body)


def reply_address(request: SipMessage, source: tuple[str, int]) -> tuple[str, int]:
    """Where the responses to ``request`` go (RFC 3261 18.2.2 over UDP, with RFC 3581):
    the address it came from, and, unless its top Via asks for ``rport``, the port that
    Via's sent-by names (5060 when it names none)."""
    via = request.get_all("Via")[0]
    if param(via, "rport") is not None:
        return source
    parts = via.split(None, 1)
    sent_by = parts[1].split(";", 1)[0].strip() if len(parts) == 2 else ""
    found = SENT_BY.fullmatch(sent_by)
    port = int(found.group(2)) if found and found.group(2) else 5060
    return source[0], port if 0 < port < 65536 else 5060


def safe_response(data: bytes, status: int, reason: str) -> bytes | None:
    """A response to a datagram we could not fully parse, if it holds enough to address
    one (Via, From, To, Call-ID, CSeq); else None (the datagram is dropped)."""
    try:
        text = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    except Exception:  # pragma: no cover - decode with "replace" does not raise
        return None
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].startswith("SIP/"):
        return None  # never answer a response
    found: dict[str, list[str]] = {}
    for raw in lines[1:]:
        name, colon, value = raw.partition(":")
        if colon and TOKEN.match(name.strip() or "-"):
            # never echo a control character (a bare CR would split our answer's header)
            found.setdefault(canonical(name), []).append(CONTROL.sub(" ", value).strip())
    if not all(found.get(n) for n in REQUIRED):
        return None
    out = [("Via", v) for v in found["Via"]]
    out += [(n, found[n][0]) for n in ("From", "To", "Call-ID", "CSeq")]
    clean = reason.replace("\r", " ").replace("\n", " ")[:120]
    return serialize(f"SIP/2.0 {status} {clean}", out)
