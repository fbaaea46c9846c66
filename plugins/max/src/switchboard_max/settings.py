"""``[plugins.max]``: the MAX bot, its token, and how updates reach the runner."""

from __future__ import annotations

from pathlib import Path

import attrs

from switchboard import CoreSettings


@attrs.define
class MaxSettings:
    """``[plugins.max]`` (see docs/max.md)."""

    token: str = attrs.field(repr=False)  # the bot's token (sent as is in Authorization)
    mode: str = "longpoll"  # "longpoll" (GET /updates) or "webhook" (MAX posts to the runner)
    webhook_url: str | None = None  # webhook: the public HTTPS URL of /max/webhook
    secret: str = attrs.field(default="", repr=False)  # webhook: X-Max-Bot-Api-Secret
    api_url: str = "https://platform-api2.max.ru"  # an egress proxy; the tests' stand-in
    poll_timeout: int = 30  # seconds a GET /updates waits for updates
    requests_per_second: float = 20.0  # sends a second at most
    per_recipient_seconds: float = 0.0  # at least this long between two messages to one user
    max_concurrency: int = 4  # sends in flight at once
    max_file_bytes: int = 20 * 1024 * 1024  # larger attachments are not downloaded
    files_dir: str = "max-files"  # relative to the recordings' parent folder
    request_timeout: float = 20.0

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        if len(self.token) < 16:
            problems.append("token: the bot's token (MAX's platform: Chat bots → Settings)")
        if self.mode not in ("longpoll", "webhook"):
            problems.append(f"mode: 'longpoll' or 'webhook', not {self.mode!r}")
        if self.mode == "webhook":
            if not (self.webhook_url or "").startswith("https://"):
                problems.append("webhook mode needs webhook_url (https://.../max/webhook)")
            if (
                not 5 <= len(self.secret) <= 256
                or not self.secret.replace("-", "").replace("_", "").isalnum()
            ):
                problems.append("webhook mode needs a secret: 5-256 letters, digits, - or _")
        if not self.api_url.startswith(("http://", "https://")):
            problems.append(f"api_url: an http(s) URL, got {self.api_url!r}")
        if self.requests_per_second <= 0 or self.max_concurrency < 1:
            problems.append("requests_per_second and max_concurrency: above 0")
        if not 0 <= self.poll_timeout <= 90:
            problems.append("poll_timeout: 0 to 90 seconds")
        return problems
