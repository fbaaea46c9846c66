"""The amoCRM plugin's own tables (migration in ``migrations/``)."""

from __future__ import annotations

import sqlalchemy as sa

from switchboard import UTCDateTime
from switchboard.crm import links_table

metadata = sa.MetaData()

#: Our contacts, calls and messages to amoCRM's contacts, calls, unsorted leads and notes.
links_t = links_table(metadata, "amocrm_link")

#: The OAuth pair amoCRM rotates: one row, replaced in one transaction on each refresh
#: (the old refresh token stops working once the new one is issued).
token_t = sa.Table(
    "amocrm_token",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("access_token", sa.Text, nullable=False),
    sa.Column("refresh_token", sa.Text, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)
