"""``[plugins.whatsapp]``: the WhatsApp Business number and how the channel paces itself."""

from __future__ import annotations

from pathlib import Path

import attrs

from switchboard import CoreSettings


@attrs.define
class WhatsAppSettings:
    """``[plugins.whatsapp]`` (see docs/whatsapp.md)."""

    phone_number_id: str  # the business number's id (not the number itself)
    access_token: str = attrs.field(repr=False)  # a system user's permanent token
    app_secret: str = attrs.field(repr=False)  # signs the webhooks (X-Hub-Signature-256)
    verify_token: str = attrs.field(repr=False)  # you choose it; Meta echoes it when subscribing
    api_version: str = "23.0"
    # where Graph API requests go: Meta's, or an egress proxy (the tests' stand-in)
    graph_url: str = "https://graph.facebook.com"
    window_hours: float = 24.0  # free-form messages only this long after the customer's last
    preview_url: bool = False  # link previews in text messages
    messages_per_second: float = 80.0  # the number's throughput (Cloud API default 80)
    per_recipient_seconds: float = 1.0  # at least this long between two messages to one person
    max_concurrency: int = 8  # requests in flight at once
    max_file_bytes: int = 16 * 1024 * 1024  # inbound media larger than this are not kept
    files_dir: str = "whatsapp-files"  # relative to the recordings' parent folder
    request_timeout: float = 20.0

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        if not self.phone_number_id.isdigit():
            problems.append("phone_number_id: the number's id (digits), not the number")
        if len(self.app_secret) < 16:
            problems.append("app_secret: the Meta app's secret (32 hex characters)")
        if len(self.verify_token) < 8:
            problems.append("verify_token: at least 8 characters")
        if not self.graph_url.startswith(("http://", "https://")):
            problems.append(f"graph_url: an http(s) URL, got {self.graph_url!r}")
        if self.messages_per_second <= 0 or self.max_concurrency < 1:
            problems.append("messages_per_second and max_concurrency: above 0")
        if self.window_hours <= 0:
            problems.append("window_hours: above 0")
        return problems
