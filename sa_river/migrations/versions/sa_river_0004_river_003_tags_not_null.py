"""River schema version 3: ``river_job.tags`` defaults to ``'{}'`` and is never NULL.

Revision ID: sa_river_0004
Revises: sa_river_0003
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "sa_river_0004"
down_revision: str | Sequence[str] | None = "sa_river_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RIVER_VERSION = 3


def upgrade() -> None:
    op.execute("ALTER TABLE river_job ALTER COLUMN tags SET DEFAULT '{}'")
    op.execute("UPDATE river_job SET tags = '{}' WHERE tags IS NULL")
    op.execute("ALTER TABLE river_job ALTER COLUMN tags SET NOT NULL")
    op.execute(
        "INSERT INTO river_migration (line, version) "
        f"VALUES ('main', {RIVER_VERSION}) ON CONFLICT (line, version) DO NOTHING"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM river_migration WHERE line = 'main' AND version = {RIVER_VERSION}")
    op.execute("ALTER TABLE river_job ALTER COLUMN tags DROP NOT NULL")
    op.execute("ALTER TABLE river_job ALTER COLUMN tags DROP DEFAULT")
