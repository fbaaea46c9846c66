"""The Odoo plugin's own table (migration in ``migrations/``)."""

from __future__ import annotations

import sqlalchemy as sa

from switchboard.crm import links_table

metadata = sa.MetaData()

#: Our contacts, calls and messages to Odoo's partners, leads and chatter messages.
links_t = links_table(metadata, "odoo_link")
