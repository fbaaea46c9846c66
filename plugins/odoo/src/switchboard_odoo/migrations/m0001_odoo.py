"""odoo: the external-id map

Revision ID: odoo_0001
Revises:
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

from alembic import op

from switchboard.crm import links_columns

revision: str = "odoo_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("odoo_link", *links_columns())


def downgrade() -> None:
    op.drop_table("odoo_link")
