"""River schema version 6: unique jobs by state bitmask (``river_job_unique_idx``).

Revision ID: sa_river_0007
Revises: sa_river_0006
Create Date: 2025-01-01

The old ``river_job_kind_unique_key_idx`` is dropped; the downgrade recreates it, which fails if
jobs inserted under version 6 share a ``(kind, unique_key)`` (possible when their states were
outside each other's bitmask).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "sa_river_0007"
down_revision: str | Sequence[str] | None = "sa_river_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RIVER_VERSION = 6

UNSAFE_NEW_ENUM_VALUE_USAGE = "55P04"  # SQLSTATE


def _require_pending_committed() -> None:
    """Fail clearly if ``'pending'`` was added to the enum in this same transaction.

    That happens when a database whose versions 2-3 came from River is upgraded past version 4
    in one transaction: the function below names ``'pending'`` and PostgreSQL refuses to use a
    new enum value before it is committed.
    """
    if op.get_context().as_sql:
        return
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.execute(sa.text("SELECT 'pending'::river_job_state"))
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != UNSAFE_NEW_ENUM_VALUE_USAGE:
            raise
        raise CommandError(
            "river_job_state gained 'pending' in this same transaction (sa_river_0005) and "
            "PostgreSQL cannot use it before commit: upgrade to sa_river_0005 and commit first, "
            "or migrate on a connection that is not in a transaction (sa_river.migrate.upgrade "
            "then commits after each revision)"
        ) from exc


def upgrade() -> None:
    _require_pending_committed()
    op.execute(
        """
        CREATE FUNCTION river_job_state_in_bitmask(bitmask BIT(8), state river_job_state)
        RETURNS boolean
        LANGUAGE SQL
        IMMUTABLE
        AS $$
            SELECT CASE state
                WHEN 'available' THEN get_bit(bitmask, 7)
                WHEN 'cancelled' THEN get_bit(bitmask, 6)
                WHEN 'completed' THEN get_bit(bitmask, 5)
                WHEN 'discarded' THEN get_bit(bitmask, 4)
                WHEN 'pending' THEN get_bit(bitmask, 3)
                WHEN 'retryable' THEN get_bit(bitmask, 2)
                WHEN 'running' THEN get_bit(bitmask, 1)
                WHEN 'scheduled' THEN get_bit(bitmask, 0)
                ELSE 0
            END = 1;
        $$
        """
    )
    op.execute("ALTER TABLE river_job ADD COLUMN unique_states BIT(8)")
    op.execute(
        "CREATE UNIQUE INDEX river_job_unique_idx ON river_job (unique_key) "
        "WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL "
        "AND river_job_state_in_bitmask(unique_states, state)"
    )
    op.execute("DROP INDEX river_job_kind_unique_key_idx")
    op.execute(
        "INSERT INTO river_migration (line, version) "
        f"VALUES ('main', {RIVER_VERSION}) ON CONFLICT (line, version) DO NOTHING"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM river_migration WHERE line = 'main' AND version = {RIVER_VERSION}")
    op.execute(
        "CREATE UNIQUE INDEX river_job_kind_unique_key_idx ON river_job (kind, unique_key) "
        "WHERE unique_key IS NOT NULL"
    )
    op.execute("DROP INDEX river_job_unique_idx")
    op.execute("ALTER TABLE river_job DROP COLUMN unique_states")
    op.execute("DROP FUNCTION river_job_state_in_bitmask(BIT(8), river_job_state)")
