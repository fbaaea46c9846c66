"""{{ cookiecutter.plugin_name }}: the gateway's replies

Revision ID: {{ cookiecutter.package[12:] }}_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "{{ cookiecutter.package[12:] }}_0001"
down_revision = None  # a plugin's history starts on its own; the core's is already applied
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "{{ cookiecutter.package[12:] }}_gateway_reply",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("{{ cookiecutter.package[12:] }}_gateway_reply")
