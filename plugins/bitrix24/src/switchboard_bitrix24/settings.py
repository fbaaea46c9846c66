"""``[plugins.bitrix24]``: the portal, the local application's keys, agents to users."""

from __future__ import annotations

from pathlib import Path

import attrs

from switchboard import CoreSettings
from switchboard.crm import CrmPush, check_agent_names


@attrs.define
class Bitrix24Settings:
    """``[plugins.bitrix24]`` (see docs/crm-bitrix24.md)."""

    portal_url: str  # the portal, https://mycompany.bitrix24.ru
    # a local application (server side): its keys; the tokens come with its installation
    client_id: str | None = None
    client_secret: str | None = attrs.field(default=None, repr=False)
    # or an inbound webhook (…/rest/1/xxxx/): contacts, messages and emails only, since
    # Bitrix24 takes telephony.externalcall.* from applications alone
    webhook_url: str | None = attrs.field(default=None, repr=False)
    #: Where Bitrix24 renews an application's tokens.
    oauth_url: str = "https://oauth.bitrix.info"
    #: Agent name: Bitrix24 user id (checked against Bitrix24 at the connector's start).
    users: dict[str, int] = attrs.Factory(dict)
    #: The Bitrix24 user a call is registered for when none of its agents has one.
    default_user: int | None = None
    push: CrmPush = attrs.Factory(CrmPush)
    create_for_unknown: bool = True  # Bitrix24 creates a lead for an unknown caller (CRM_CREATE)
    create_contacts: bool = True  # a writer Bitrix24 does not know becomes a contact
    show_card: bool = True  # Bitrix24's call card pops for the agents a call rings for
    click_to_call: bool = True  # take OnExternalCallStart: calls started in Bitrix24
    line_number: str | None = None  # LINE_NUMBER on registered calls (your external line)
    requests_per_second: float = 2.0  # Bitrix24 drains its request bucket at 2 a second
    lookup_cache_s: float = 60.0
    request_timeout: float = 15.0
    max_recording_bytes: int = 50 * 1024 * 1024  # larger ones go as a link (RECORD_URL)
    recording_link_days: float = 30.0

    @property
    def app(self) -> bool:
        return self.webhook_url is None

    def check_config(self, core: CoreSettings, base_dir: Path | None) -> list[str]:
        problems = []
        for key in ("portal_url", "oauth_url"):
            if not getattr(self, key).startswith(("http://", "https://")):
                problems.append(f"{key}: an http(s) URL, got {getattr(self, key)!r}")
        if self.webhook_url is None and not (self.client_id and self.client_secret):
            problems.append("give client_id and client_secret (a local application)")
        if self.webhook_url is not None and (self.push.calls or self.push.recordings):
            problems.append(
                "webhook_url: Bitrix24 takes telephony.externalcall.* only from an "
                "application; use client_id and client_secret, or set push.calls and "
                "push.recordings to false"
            )
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("http://", "https://")
        ):
            problems.append("webhook_url: an http(s) URL")
        problems += check_agent_names(self.users, core, "users")
        if self.requests_per_second <= 0:
            problems.append("requests_per_second: above 0")
        return problems
