"""River schema version 1: the ``river_migration`` table.

Revision ID: sa_river_0002
Revises: sa_river_0001
Create Date: 2025-01-01

Simplification: River's version 1 created ``river_migration(id, created_at, version)`` and its
version 5 reshaped it to ``(line, version)``. sa_river only ever records line ``main``, so it
creates the final shape here and leaves the table alone in version 5.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "sa_river_0002"
down_revision: str | Sequence[str] | None = "sa_river_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RIVER_VERSION = 1


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE river_migration (
            line text NOT NULL,
            version bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT line_length CHECK (char_length(line) > 0 AND char_length(line) < 128),
            CONSTRAINT version_gte_1 CHECK (version >= 1),
            PRIMARY KEY (line, version)
        )
        """
    )
    op.execute(
        "INSERT INTO river_migration (line, version) "
        f"VALUES ('main', {RIVER_VERSION}) ON CONFLICT (line, version) DO NOTHING"
    )


def downgrade() -> None:
    op.execute("DROP TABLE river_migration")
