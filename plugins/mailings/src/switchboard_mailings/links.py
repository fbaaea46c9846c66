"""Signed links of mailing recipients: the open pixel, the click redirect and the
unsubscribe link (RFC 2369 ``List-Unsubscribe``, RFC 8058 one-click), served under ``/t/``.

A token names one message and is signed (HMAC-SHA256 with ``link_secret``), so it cannot
be forged for another recipient; a click link signs its target too. Tokens name the
message's interaction id (``m<id>.<sig>``); tokens of mailings made before 0.2 named the
recipient row (``<id>.<sig>``) and still work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from html import escape, unescape
from urllib.parse import quote

HREF = re.compile(r'href="(https?://[^"]+)"', re.IGNORECASE)


class Links:
    """Signed tracking and unsubscribe links."""

    def __init__(self, public_url: str, secret: str) -> None:
        self.base = public_url.rstrip("/")
        self.secret = secret.encode()

    def _sig(self, text: str) -> str:
        digest = hmac.new(self.secret, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:12]).decode().rstrip("=")

    def token(self, interaction_id: int) -> str:
        """The token of the mailing message ``interaction_id``."""
        return f"m{interaction_id}.{self._sig(f'm{interaction_id}')}"

    def parse(self, token: str) -> tuple[str, int] | None:
        """What a genuine token names: ``("interaction_id", id)``, or ``("id", id)`` of
        the recipient row for a token made before 0.2; None for a forged one."""
        head, _, sig = token.partition(".")
        if head.startswith("m") and head[1:].isdigit() and len(head) <= 12:
            column, number, signed = "interaction_id", head[1:], head
        elif head.isdigit() and len(head) <= 11:
            column, number, signed = "id", head, f"r{head}"
        else:
            return None
        return (column, int(number)) if hmac.compare_digest(sig, self._sig(signed)) else None

    def url_sig(self, token: str, url: str) -> str:
        return self._sig(f"{token}\n{url}")

    def open_url(self, token: str) -> str:
        return f"{self.base}/t/{token}/open.gif"

    def click_url(self, token: str, url: str) -> str:
        return f"{self.base}/t/{token}/click?u={quote(url, safe='')}&s={self.url_sig(token, url)}"

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.base}/t/{token}/unsubscribe"

    def track_html(self, token: str, html: str) -> str:
        """Links through the click redirect, and the open pixel before ``</body>``.

        An ``href`` is HTML: its entities (``&amp;``) are decoded before the target is
        signed, and the redirect link is escaped again where it is written."""
        html = HREF.sub(
            lambda m: f'href="{escape(self.click_url(token, unescape(m.group(1))))}"', html
        )
        pixel = f'<img src="{self.open_url(token)}" width="1" height="1" alt="">'
        if "</body>" in html:
            return html.replace("</body>", pixel + "</body>", 1)
        return html + pixel
