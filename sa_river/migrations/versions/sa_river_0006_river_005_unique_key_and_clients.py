"""River schema version 5: ``river_job.unique_key``, ``river_client``, ``river_client_queue``.

Revision ID: sa_river_0006
Revises: sa_river_0005
Create Date: 2025-01-01

River's version 5 also reshaped ``river_migration`` to ``(line, version)``; sa_river created it
in that shape already (``sa_river_0002``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "sa_river_0006"
down_revision: str | Sequence[str] | None = "sa_river_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RIVER_VERSION = 5


def upgrade() -> None:
    op.execute("ALTER TABLE river_job ADD COLUMN unique_key bytea")
    op.execute(
        "CREATE UNIQUE INDEX river_job_kind_unique_key_idx ON river_job (kind, unique_key) "
        "WHERE unique_key IS NOT NULL"
    )
    op.execute(
        """
        CREATE UNLOGGED TABLE river_client (
            id text PRIMARY KEY NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            metadata jsonb NOT NULL DEFAULT '{}',
            paused_at timestamptz,
            updated_at timestamptz NOT NULL,
            CONSTRAINT name_length CHECK (char_length(id) > 0 AND char_length(id) < 128)
        )
        """
    )
    op.execute(
        """
        CREATE UNLOGGED TABLE river_client_queue (
            river_client_id text NOT NULL REFERENCES river_client (id) ON DELETE CASCADE,
            name text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            max_workers bigint NOT NULL DEFAULT 0,
            metadata jsonb NOT NULL DEFAULT '{}',
            num_jobs_completed bigint NOT NULL DEFAULT 0,
            num_jobs_running bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL,
            PRIMARY KEY (river_client_id, name),
            CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128),
            CONSTRAINT num_jobs_completed_zero_or_positive CHECK (num_jobs_completed >= 0),
            CONSTRAINT num_jobs_running_zero_or_positive CHECK (num_jobs_running >= 0)
        )
        """
    )
    op.execute(
        "INSERT INTO river_migration (line, version) "
        f"VALUES ('main', {RIVER_VERSION}) ON CONFLICT (line, version) DO NOTHING"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM river_migration WHERE line = 'main' AND version = {RIVER_VERSION}")
    op.execute("DROP TABLE river_client_queue")
    op.execute("DROP TABLE river_client")
    op.execute("DROP INDEX river_job_kind_unique_key_idx")
    op.execute("ALTER TABLE river_job DROP COLUMN unique_key")
