"""``[plugins.odoo]``: the Odoo database, the API key's user, agents to Odoo users."""

from __future__ import annotations

from pathlib import Path

import attrs

from switchboard import CoreSettings
from switchboard.crm import CrmPush, check_agent_names


@attrs.define
class OdooSettings:
    """``[plugins.odoo]`` (see docs/crm-odoo.md)."""

    url: str  # the Odoo server, https://mycompany.odoo.com
    database: str  # the database name
    login: str  # the user the API key belongs to
    api_key: str = attrs.field(repr=False)  # Preferences > Account Security > New API Key
    #: Agent name: Odoo user id (res.users; checked against Odoo at the connector's start).
    users: dict[str, int] = attrs.Factory(dict)
    push: CrmPush = attrs.Factory(CrmPush)
    create_partners: bool = True  # a writer Odoo does not know becomes a partner
    leads_for_unknown: bool = False  # an unknown caller's call also opens a CRM lead
    attach_recordings: bool = True  # the WAV as an attachment on the call's chatter note
    max_recording_bytes: int = 25 * 1024 * 1024  # larger ones get a link instead
    recording_link_days: float = 30.0  # the link's life when one is given
    requests_per_second: float = 20.0
    lookup_cache_s: float = 60.0
    request_timeout: float = 20.0

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        if not self.url.startswith(("http://", "https://")):
            problems.append(f"url: an http(s) URL, got {self.url!r}")
        if not self.database or not self.login or not self.api_key:
            problems.append("database, login and api_key: all three are needed")
        problems += check_agent_names(self.users, core, "users")
        if self.requests_per_second <= 0:
            problems.append("requests_per_second: above 0")
        return problems
