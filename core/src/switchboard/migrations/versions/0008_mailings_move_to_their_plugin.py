"""mailings, lists and unsubscribes move to the mailings plugin (switchboard-mailings)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 22:30:00

Migration 0003 made the four tables in the core. They belong to the mailings plugin now,
whose own migration (``mailings_0001``) makes them where they are missing and adopts them
where they are. Here the core lets go of them without losing anything: tables holding
rows are kept as they are (the plugin adopts them; without the plugin they stay unused,
as any uninstalled plugin's tables do), empty ones are dropped, so a new database holds
only the core's tables.
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the referencing table first, so each drop leaves no dangling foreign key
TABLES = ("mailing_recipient", "mailing", "list_member", "unsubscribe")


def upgrade() -> None:
    conn = op.get_bind()
    present = set(sa.inspect(conn).get_table_names())
    if not set(TABLES) <= present:
        return  # already let go of
    counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
    if any(counts.values()):
        return  # data: the mailings plugin adopts the tables as they are
    for t in TABLES:
        op.drop_table(t)


def downgrade() -> None:
    conn = op.get_bind()
    if "mailing" in sa.inspect(conn).get_table_names():
        return  # kept (they held data) or made again by the mailings plugin
    importlib.import_module(
        "switchboard.migrations.versions.0003_mailing_lists_and_mailings"
    ).upgrade()
