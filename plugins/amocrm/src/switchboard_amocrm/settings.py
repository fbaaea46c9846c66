"""``[plugins.amocrm]``: the account, the integration's OAuth keys, agents to users."""

from __future__ import annotations

from pathlib import Path

import attrs

from switchboard import CoreSettings
from switchboard.crm import CrmPush, check_agent_names


@attrs.define
class AmoCrmSettings:
    """``[plugins.amocrm]`` (see docs/crm-amocrm.md)."""

    base_url: str  # the account's address, https://SUBDOMAIN.amocrm.ru (or .kommo.com)
    # an OAuth integration: its keys, and the first refresh token (or a one-time code);
    # the rotating pair is then kept in the plugin's table
    client_id: str | None = None
    client_secret: str | None = attrs.field(default=None, repr=False)
    redirect_uri: str | None = None
    authorization_code: str | None = attrs.field(default=None, repr=False)
    refresh_token: str | None = attrs.field(default=None, repr=False)
    # or a long-lived token (amoCRM's "long-lived token" of a private integration)
    long_lived_token: str | None = attrs.field(default=None, repr=False)
    #: Refresh the access token this long before it expires.
    refresh_before_s: float = 3600.0
    #: Agent name: amoCRM user id (checked against amoCRM at the connector's start).
    users: dict[str, int] = attrs.Factory(dict)
    push: CrmPush = attrs.Factory(CrmPush)
    create_contacts: bool = True  # a contact amoCRM lacks is created for its notes
    unsorted_for_unknown: bool = True  # unknown callers' calls become unsorted SIP leads
    pipeline_id: int | None = None  # where unsorted leads go (None: the main pipeline)
    recording_link_days: float = 30.0  # how long the recording link on a call works
    source: str = "Switchboard"  # the calls' source as amoCRM shows it
    requests_per_second: float = 7.0  # amoCRM's limit per integration
    lookup_cache_s: float = 60.0  # resolve_contact's answers are kept this long
    request_timeout: float = 10.0

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        if not self.base_url.startswith(("http://", "https://")):
            problems.append(f"base_url: an http(s) URL, got {self.base_url!r}")
        oauth = self.client_id and self.client_secret and self.redirect_uri
        if self.long_lived_token is None and not oauth:
            problems.append(
                "give long_lived_token, or client_id, client_secret and redirect_uri "
                "(with refresh_token or authorization_code for the first start)"
            )
        problems += check_agent_names(self.users, core, "users")
        if self.requests_per_second <= 0:
            problems.append("requests_per_second: above 0")
        return problems
