"""River schema version 7: drop the client tables, defaults, ``river_notification``.

Revision ID: sa_river_0008
Revises: sa_river_0007
Create Date: 2025-01-01

``river_notification`` is River's notification outbox (for drivers without LISTEN/NOTIFY);
unused on PostgreSQL, kept so the schema is River's version 7.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "sa_river_0008"
down_revision: str | Sequence[str] | None = "sa_river_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RIVER_VERSION = 7


def upgrade() -> None:
    op.execute("DROP TABLE river_client_queue")
    op.execute("DROP TABLE river_client")
    op.execute("ALTER TABLE river_job ALTER COLUMN max_attempts SET DEFAULT 25")
    op.execute("ALTER TABLE river_queue ALTER COLUMN updated_at SET DEFAULT CURRENT_TIMESTAMP")
    op.execute(
        """
        CREATE TABLE river_notification (
            id bigserial PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now(),
            payload text NOT NULL,
            topic text NOT NULL,
            CONSTRAINT topic_length CHECK (length(topic) > 0 AND length(topic) < 128)
        )
        """
    )
    op.execute("CREATE INDEX river_notification_created_at_idx ON river_notification (created_at)")
    op.execute("CREATE INDEX river_notification_topic_id_idx ON river_notification (topic, id)")
    op.execute(
        "INSERT INTO river_migration (line, version) "
        f"VALUES ('main', {RIVER_VERSION}) ON CONFLICT (line, version) DO NOTHING"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM river_migration WHERE line = 'main' AND version = {RIVER_VERSION}")
    op.execute("DROP TABLE river_notification")
    op.execute("ALTER TABLE river_queue ALTER COLUMN updated_at DROP DEFAULT")
    op.execute("ALTER TABLE river_job ALTER COLUMN max_attempts DROP DEFAULT")
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
