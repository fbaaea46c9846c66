"""``[plugins.mailings]``: where the signed unsubscribe and tracking links point."""

from __future__ import annotations

from pathlib import Path

import attrs

from switchboard import CoreSettings


@attrs.define
class MailingSettings:
    """``[plugins.mailings]`` (until 0.2 these sat among the core's settings). Without both keys
    lists work and mailings are refused (their links could not be signed)."""

    public_url: str | None = None  # where recipients reach the runner's /t/ links
    link_secret: str | None = attrs.field(default=None, repr=False)  # signs the links

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            problems.append(f"public_url: expected an http(s) URL, got {self.public_url!r}")
        if self.link_secret is not None and len(self.link_secret) < 16:
            problems.append("link_secret: too short (at least 16 characters)")
        return problems
