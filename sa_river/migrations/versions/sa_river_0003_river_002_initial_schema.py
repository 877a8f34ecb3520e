"""River schema version 2: the ``river_job_state`` enum, ``river_job`` and ``river_leader``.

Revision ID: sa_river_0003
Revises: sa_river_0002
Create Date: 2025-01-01

Departure from River: the enum is created with ``pending`` already in place (River adds it in
version 4 with ``ALTER TYPE ... ADD VALUE``). PostgreSQL refuses to use an enum value added in
the same transaction -- even when the type itself is new -- and version 6's
``river_job_state_in_bitmask`` names ``'pending'``, so River's order cannot run from an empty
database in one transaction (``with engine.begin() as conn: upgrade(conn)``). With the value
created here, version 4's ``ADD VALUE IF NOT EXISTS`` is a no-op. The extra value is harmless to
River 2-3 (they never write it) and is exactly the state River itself leaves after downgrading
version 4, which cannot remove it.

River's ``river_notify`` trigger (``pg_notify('river_insert', ...)`` on every available insert)
is created here as River did, and dropped again in version 4.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "sa_river_0003"
down_revision: str | Sequence[str] | None = "sa_river_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RIVER_VERSION = 2


def upgrade() -> None:
    op.execute(
        """
        CREATE TYPE river_job_state AS ENUM (
            'available',
            'cancelled',
            'completed',
            'discarded',
            'pending',
            'retryable',
            'running',
            'scheduled'
        )
        """
    )
    op.execute(
        """
        CREATE TABLE river_job (
            id bigserial PRIMARY KEY,
            state river_job_state NOT NULL DEFAULT 'available',
            attempt smallint NOT NULL DEFAULT 0,
            max_attempts smallint NOT NULL,
            attempted_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            finalized_at timestamptz,
            scheduled_at timestamptz NOT NULL DEFAULT now(),
            priority smallint NOT NULL DEFAULT 1,
            args jsonb,
            attempted_by text[],
            errors jsonb[],
            kind text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}',
            queue text NOT NULL DEFAULT 'default',
            tags varchar(255)[],
            CONSTRAINT finalized_or_finalized_at_null CHECK (
                (state IN ('cancelled', 'completed', 'discarded') AND finalized_at IS NOT NULL)
                OR finalized_at IS NULL
            ),
            CONSTRAINT max_attempts_is_positive CHECK (max_attempts > 0),
            CONSTRAINT priority_in_range CHECK (priority >= 1 AND priority <= 4),
            CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
            CONSTRAINT kind_length CHECK (char_length(kind) > 0 AND char_length(kind) < 128)
        )
        """
    )
    op.execute("CREATE INDEX river_job_kind ON river_job USING btree (kind)")
    op.execute(
        "CREATE INDEX river_job_state_and_finalized_at_index ON river_job "
        "USING btree (state, finalized_at) WHERE finalized_at IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX river_job_prioritized_fetching_index ON river_job "
        "USING btree (state, queue, priority, scheduled_at, id)"
    )
    op.execute("CREATE INDEX river_job_args_index ON river_job USING gin (args)")
    op.execute("CREATE INDEX river_job_metadata_index ON river_job USING gin (metadata)")
    op.execute(
        """
        CREATE FUNCTION river_job_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.state = 'available' THEN
                -- Coalesced per transaction by PostgreSQL, so keep the payload general.
                PERFORM pg_notify('river_insert', json_build_object('queue', NEW.queue)::text);
            END IF;
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER river_notify AFTER INSERT ON river_job "
        "FOR EACH ROW EXECUTE PROCEDURE river_job_notify()"
    )
    op.execute(
        """
        CREATE UNLOGGED TABLE river_leader (
            elected_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            leader_id text NOT NULL,
            name text PRIMARY KEY,
            CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128),
            CONSTRAINT leader_id_length
                CHECK (char_length(leader_id) > 0 AND char_length(leader_id) < 128)
        )
        """
    )
    op.execute(
        "INSERT INTO river_migration (line, version) "
        f"VALUES ('main', {RIVER_VERSION}) ON CONFLICT (line, version) DO NOTHING"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM river_migration WHERE line = 'main' AND version = {RIVER_VERSION}")
    op.execute("DROP TABLE river_leader")
    op.execute("DROP TABLE river_job")  # with its indexes and the river_notify trigger
    op.execute("DROP FUNCTION river_job_notify()")
    op.execute("DROP TYPE river_job_state")
