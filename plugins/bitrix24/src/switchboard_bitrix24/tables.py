"""The Bitrix24 plugin's own tables (migration in ``migrations/``)."""

from __future__ import annotations

import sqlalchemy as sa

from switchboard import UTCDateTime
from switchboard.crm import links_table

metadata = sa.MetaData()

#: Our contacts, calls and messages to Bitrix24's contacts, calls (CALL_ID) and comments;
#: also click-to-call requests from Bitrix24 waiting for their call (kind ``dial``).
links_t = links_table(metadata, "bitrix24_link")

#: The application's installation: its tokens (renewed and rotated, one row, replaced in
#: one transaction), where its REST calls go, and the token Bitrix24 signs events with.
install_t = sa.Table(
    "bitrix24_install",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("member_id", sa.String(64), nullable=False),
    sa.Column("domain", sa.String(255), nullable=False),
    sa.Column("client_endpoint", sa.String(500), nullable=False),
    sa.Column("application_token", sa.String(128), nullable=False),
    sa.Column("access_token", sa.Text, nullable=False),
    sa.Column("refresh_token", sa.Text, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("events_bound", sa.Boolean, nullable=False),
)
