"""``[plugins.vk]``: the VK community, its token, and how updates reach the runner."""

from __future__ import annotations

from pathlib import Path

import attrs

from switchboard import CoreSettings


@attrs.define
class VkSettings:
    """``[plugins.vk]`` (see docs/vk.md)."""

    group_id: int  # the community's id (digits, without the minus)
    access_token: str = attrs.field(repr=False)  # a community token with messages access
    mode: str = "longpoll"  # "longpoll" (no public URL) or "callback" (VK posts to the runner)
    confirmation_code: str = attrs.field(default="", repr=False)  # callback: VK's code to echo
    secret: str = attrs.field(default="", repr=False)  # callback: the secret key VK sends
    api_url: str = "https://api.vk.com"  # where API requests go (an egress proxy, a stand-in)
    api_version: str = "5.199"
    long_poll_wait: int = 25  # seconds a long poll request waits for updates
    requests_per_second: float = 20.0  # VK's limit for a community token
    per_recipient_seconds: float = 0.0  # at least this long between two messages to one person
    max_concurrency: int = 4  # sends in flight at once
    max_file_bytes: int = 20 * 1024 * 1024  # larger attachments are not downloaded
    files_dir: str = "vk-files"  # relative to the recordings' parent folder
    request_timeout: float = 20.0

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        if self.group_id <= 0:
            problems.append("group_id: the community's id (a positive number)")
        if len(self.access_token) < 16:
            problems.append("access_token: the community's token (Manage → API usage)")
        if self.mode not in ("longpoll", "callback"):
            problems.append(f"mode: 'longpoll' or 'callback', not {self.mode!r}")
        if self.mode == "callback" and (not self.confirmation_code or len(self.secret) < 8):
            problems.append("callback mode needs confirmation_code and a secret (8+ characters)")
        if not self.api_url.startswith(("http://", "https://")):
            problems.append(f"api_url: an http(s) URL, got {self.api_url!r}")
        if self.requests_per_second <= 0 or self.max_concurrency < 1:
            problems.append("requests_per_second and max_concurrency: above 0")
        if not 1 <= self.long_poll_wait <= 90:
            problems.append("long_poll_wait: 1 to 90 seconds")
        return problems
