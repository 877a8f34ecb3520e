"""sa_river's own worker heartbeat table, ``sa_river_client`` (not part of River's schema).

Revision ID: sa_river_0009
Revises: sa_river_0008
Create Date: 2026-11-23

Each worker runner keeps one row here and touches ``heartbeat_at`` every few seconds, so the
rescuer can tell a job whose worker died from one that is merely slow. UNLOGGED like River's
leader table: after a crash the rows vanish, which is what a dead worker's row should do.
River's tables are left exactly as River defines them; River ignores this table.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "sa_river_0009"
down_revision: str | Sequence[str] | None = "sa_river_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE UNLOGGED TABLE sa_river_client (
            id text PRIMARY KEY,
            hostname text NOT NULL,
            pid integer NOT NULL,
            queues text[] NOT NULL DEFAULT '{}'::text[],
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT id_length CHECK (char_length(id) > 0 AND char_length(id) < 128)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE sa_river_client")
