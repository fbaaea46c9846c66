"""``[plugins.meta]``: the Meta app, its Facebook Pages and their Instagram accounts."""

from __future__ import annotations

from pathlib import Path

import attrs

from switchboard import CoreSettings


@attrs.define
class PageSettings:
    """One ``[[plugins.meta.pages]]``: a Facebook Page the app manages."""

    id: str  # the Page's id
    access_token: str = attrs.field(repr=False)  # a Page access token (never expiring)
    messenger: bool = True  # take the Page's Messenger conversations
    instagram_id: str | None = None  # the Instagram professional account linked to the Page


@attrs.define
class MetaSettings:
    """``[plugins.meta]`` (see docs/meta.md)."""

    app_secret: str = attrs.field(repr=False)  # signs the webhooks (X-Hub-Signature-256)
    verify_token: str = attrs.field(repr=False)  # you choose it; Meta echoes it when subscribing
    pages: list[PageSettings] = attrs.field(factory=list)
    api_version: str = "23.0"
    # where Graph API requests go: Meta's, or an egress proxy (the tests' stand-in)
    graph_url: str = "https://graph.facebook.com"
    window_hours: float = 24.0  # the standard messaging window after the person's last message
    human_agent: bool = False  # the Page is approved for Human Agent: 7 days, tag HUMAN_AGENT
    keep_unsent: bool = False  # keep the text and files of a message its sender unsent
    profile_names: bool = True  # name new contacts through the profile API
    messages_per_second: float = 40.0  # sends per second, per channel
    per_recipient_seconds: float = 0.0  # at least this long between two messages to one person
    max_concurrency: int = 8  # requests in flight at once, per channel
    max_file_bytes: int = 25 * 1024 * 1024  # inbound attachments larger than this are not kept
    files_dir: str = "meta-files"  # relative to the recordings' parent folder
    request_timeout: float = 20.0

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        if len(self.app_secret) < 16:
            problems.append("app_secret: the Meta app's secret (32 hex characters)")
        if len(self.verify_token) < 8:
            problems.append("verify_token: at least 8 characters")
        if not self.pages:
            problems.append("pages: at least one [[plugins.meta.pages]] (id, access_token)")
        seen: set[str] = set()
        for n, page in enumerate(self.pages):
            for what, ident in (("id", page.id), ("instagram_id", page.instagram_id)):
                if ident is None:
                    continue
                if not ident.isdigit():
                    problems.append(f"pages[{n}].{what}: digits (Meta's id), got {ident!r}")
                elif ident in seen:
                    problems.append(f"pages[{n}].{what}: {ident} is named twice")
                seen.add(ident)
            if not page.messenger and page.instagram_id is None:
                problems.append(f"pages[{n}]: neither messenger nor instagram_id")
        if not self.graph_url.startswith(("http://", "https://")):
            problems.append(f"graph_url: an http(s) URL, got {self.graph_url!r}")
        if self.messages_per_second <= 0 or self.max_concurrency < 1:
            problems.append("messages_per_second and max_concurrency: above 0")
        if self.window_hours <= 0:
            problems.append("window_hours: above 0")
        return problems
