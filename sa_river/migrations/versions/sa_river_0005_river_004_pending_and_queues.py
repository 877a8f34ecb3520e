"""River schema version 4: ``pending`` state, non-null args, ``river_queue``, one leader name.

Revision ID: sa_river_0005
Revises: sa_river_0004
Create Date: 2025-01-01

``ADD VALUE IF NOT EXISTS 'pending'`` is a no-op on databases built by sa_river (``sa_river_0003``
creates the enum with it, see there); it adds the value on a database whose versions 2-3 came
from River. PostgreSQL cannot use a value added in the same transaction, which is why
``sa_river.migrate`` runs one transaction per revision when it owns the connection.

The downgrade leaves ``pending`` in the enum: PostgreSQL cannot drop an enum value, and River's
own downgrade leaves it too. It restores every other object of version 3 exactly (River's own
down script also drops ``metadata``'s NOT NULL and default, which version 2 had created; sa_river
keeps them, as version 3 had them).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "sa_river_0005"
down_revision: str | Sequence[str] | None = "sa_river_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RIVER_VERSION = 4


def upgrade() -> None:
    op.execute("ALTER TABLE river_job ALTER COLUMN args SET DEFAULT '{}'")
    op.execute("UPDATE river_job SET args = '{}' WHERE args IS NULL")
    op.execute("ALTER TABLE river_job ALTER COLUMN args SET NOT NULL")
    op.execute("ALTER TABLE river_job ALTER COLUMN args DROP DEFAULT")

    op.execute("UPDATE river_job SET metadata = '{}' WHERE metadata IS NULL")
    op.execute("ALTER TABLE river_job ALTER COLUMN metadata SET NOT NULL")

    op.execute("ALTER TYPE river_job_state ADD VALUE IF NOT EXISTS 'pending' AFTER 'discarded'")

    op.execute("ALTER TABLE river_job DROP CONSTRAINT finalized_or_finalized_at_null")
    op.execute(
        """
        ALTER TABLE river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK (
            (finalized_at IS NULL AND state NOT IN ('cancelled', 'completed', 'discarded'))
            OR (finalized_at IS NOT NULL AND state IN ('cancelled', 'completed', 'discarded'))
        )
        """
    )

    op.execute("DROP TRIGGER river_notify ON river_job")
    op.execute("DROP FUNCTION river_job_notify()")

    op.execute(
        """
        CREATE TABLE river_queue (
            name text PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now(),
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            paused_at timestamptz,
            updated_at timestamptz NOT NULL
        )
        """
    )

    op.execute(
        """
        ALTER TABLE river_leader
            ALTER COLUMN name SET DEFAULT 'default',
            DROP CONSTRAINT name_length,
            ADD CONSTRAINT name_length CHECK (name = 'default')
        """
    )
    op.execute(
        "INSERT INTO river_migration (line, version) "
        f"VALUES ('main', {RIVER_VERSION}) ON CONFLICT (line, version) DO NOTHING"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM river_migration WHERE line = 'main' AND version = {RIVER_VERSION}")
    op.execute(
        """
        ALTER TABLE river_leader
            ALTER COLUMN name DROP DEFAULT,
            DROP CONSTRAINT name_length,
            ADD CONSTRAINT name_length CHECK (char_length(name) > 0 AND char_length(name) < 128)
        """
    )

    op.execute("DROP TABLE river_queue")

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

    op.execute("ALTER TABLE river_job DROP CONSTRAINT finalized_or_finalized_at_null")
    op.execute(
        """
        ALTER TABLE river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK (
            (state IN ('cancelled', 'completed', 'discarded') AND finalized_at IS NOT NULL)
            OR finalized_at IS NULL
        )
        """
    )

    # 'pending' stays in river_job_state (see the module docstring).

    op.execute("ALTER TABLE river_job ALTER COLUMN args DROP NOT NULL")
