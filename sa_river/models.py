"""Declarative SQLAlchemy models of River's tables (River schema version 7).

Names, types, defaults, constraints and indexes are River's exactly, so River's Go client, its
CLI and River UI can share these tables with sa_river. The models have a ``MetaData`` of their
own (``RiverBase.metadata``) so they never leak into an application's ``create_all`` or
autogenerate; use :func:`sa_river.migrate.include_name` to keep them out of yours.

The DDL here must stay equal to the shipped migrations: ``tests/integration/test_migrations.py``
compares them.

Example::

    from sqlalchemy import select
    from sa_river.models import RiverJob

    stuck = session.scalars(
        select(RiverJob).where(RiverJob.state == "retryable", RiverJob.attempt > 3)
    ).all()
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    CheckConstraint,
    Enum,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIT, JSONB, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_river.types import JobState

__all__ = [
    "JOB_STATE_ENUM",
    "STATE_IN_BITMASK_FUNCTION",
    "RiverBase",
    "RiverJob",
    "RiverLeader",
    "RiverMigration",
    "RiverNotification",
    "RiverQueue",
    "SaRiverClient",
]

TIMESTAMPTZ = TIMESTAMP(timezone=True)

JOB_STATE_ENUM = Enum(
    JobState,
    name="river_job_state",
    values_callable=lambda states: [s.value for s in states],
    validate_strings=True,
)
"""The ``river_job_state`` PostgreSQL enum, mapped to :class:`~sa_river.types.JobState`."""

STATE_IN_BITMASK_FUNCTION = "river_job_state_in_bitmask"

# River's unique index predicate; ON CONFLICT must repeat it word for word to infer the index.
UNIQUE_INDEX_PREDICATE = (
    "unique_key IS NOT NULL AND unique_states IS NOT NULL "
    "AND river_job_state_in_bitmask(unique_states, state)"
)


class RiverBase(DeclarativeBase):
    """Declarative base of the river tables, with a ``MetaData`` of its own."""

    metadata = MetaData()


class RiverJob(RiverBase):
    """A job: one row of ``river_job``."""

    __tablename__ = "river_job"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    state: Mapped[JobState] = mapped_column(
        JOB_STATE_ENUM, nullable=False, server_default=text("'available'::river_job_state")
    )
    attempt: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, server_default=text("25")
    )
    attempted_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, server_default=text("now()")
    )
    finalized_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    scheduled_at: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, server_default=text("now()")
    )
    priority: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("1"))
    args: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    attempted_by: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(ARRAY(JSONB))
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    # ``metadata`` is taken by the declarative base, hence the attribute name.
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    queue: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'default'::text"))
    tags: Mapped[list[str]] = mapped_column(
        ARRAY(String(255)), nullable=False, server_default=text("'{}'::character varying[]")
    )
    unique_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    unique_states: Mapped[str | None] = mapped_column(BIT(8))

    __table_args__ = (
        CheckConstraint(
            "(finalized_at IS NULL AND state NOT IN ('cancelled', 'completed', 'discarded')) OR "
            "(finalized_at IS NOT NULL AND state IN ('cancelled', 'completed', 'discarded'))",
            name="finalized_or_finalized_at_null",
        ),
        CheckConstraint("max_attempts > 0", name="max_attempts_is_positive"),
        CheckConstraint("priority >= 1 AND priority <= 4", name="priority_in_range"),
        CheckConstraint("char_length(queue) > 0 AND char_length(queue) < 128", name="queue_length"),
        CheckConstraint("char_length(kind) > 0 AND char_length(kind) < 128", name="kind_length"),
        Index("river_job_kind", "kind"),
        Index(
            "river_job_state_and_finalized_at_index",
            "state",
            "finalized_at",
            postgresql_where=text("finalized_at IS NOT NULL"),
        ),
        Index(
            "river_job_prioritized_fetching_index",
            "state",
            "queue",
            "priority",
            "scheduled_at",
            "id",
        ),
        Index("river_job_args_index", "args", postgresql_using="gin"),
        Index("river_job_metadata_index", "metadata", postgresql_using="gin"),
        Index(
            "river_job_unique_idx",
            "unique_key",
            unique=True,
            postgresql_where=text(UNIQUE_INDEX_PREDICATE),
        ),
    )


# The unique index calls this function, so it must exist before the table and go after it.
event.listen(
    RiverJob.__table__,
    "before_create",
    DDL(  # type: ignore[no-untyped-call]
        "CREATE OR REPLACE FUNCTION river_job_state_in_bitmask("
        "bitmask BIT(8), state river_job_state) RETURNS boolean LANGUAGE SQL IMMUTABLE AS $$ "
        "SELECT CASE state "
        "WHEN 'available' THEN get_bit(bitmask, 7) "
        "WHEN 'cancelled' THEN get_bit(bitmask, 6) "
        "WHEN 'completed' THEN get_bit(bitmask, 5) "
        "WHEN 'discarded' THEN get_bit(bitmask, 4) "
        "WHEN 'pending' THEN get_bit(bitmask, 3) "
        "WHEN 'retryable' THEN get_bit(bitmask, 2) "
        "WHEN 'running' THEN get_bit(bitmask, 1) "
        "WHEN 'scheduled' THEN get_bit(bitmask, 0) "
        "ELSE 0 END = 1; $$"
    ).execute_if(dialect="postgresql"),
)
event.listen(
    RiverJob.__table__,
    "after_drop",
    DDL(  # type: ignore[no-untyped-call]
        "DROP FUNCTION IF EXISTS river_job_state_in_bitmask(BIT(8), river_job_state)"
    ).execute_if(dialect="postgresql"),
)


class RiverLeader(RiverBase):
    """The elected leader among all workers sharing the schema (an UNLOGGED table)."""

    __tablename__ = "river_leader"

    elected_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(TIMESTAMPTZ, nullable=False)
    leader_id: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(
        Text, primary_key=True, server_default=text("'default'::text")
    )

    __table_args__ = (
        CheckConstraint("name = 'default'", name="name_length"),
        CheckConstraint(
            "char_length(leader_id) > 0 AND char_length(leader_id) < 128",
            name="leader_id_length",
        ),
        {"prefixes": ["UNLOGGED"]},
    )


class RiverQueue(RiverBase):
    """A queue's shared state: when it was last seen and whether it is paused."""

    __tablename__ = "river_queue"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, server_default=text("now()")
    )
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    paused_at: Mapped[datetime | None] = mapped_column(TIMESTAMPTZ)
    updated_at: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, server_default=text("CURRENT_TIMESTAMP")
    )


class RiverNotification(RiverBase):
    """River 7's notification outbox; unused on PostgreSQL, kept for schema parity."""

    __tablename__ = "river_notification"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, server_default=text("now()")
    )
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    topic: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (
        CheckConstraint("length(topic) > 0 AND length(topic) < 128", name="topic_length"),
        Index("river_notification_created_at_idx", "created_at"),
        Index("river_notification_topic_id_idx", "topic", "id"),
    )


class RiverMigration(RiverBase):
    """River's own migration bookkeeping: which River versions of which line are applied."""

    __tablename__ = "river_migration"

    line: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, server_default=text("now()")
    )

    __table_args__ = (
        PrimaryKeyConstraint("line", "version"),
        CheckConstraint("char_length(line) > 0 AND char_length(line) < 128", name="line_length"),
        CheckConstraint("version >= 1", name="version_gte_1"),
    )


class SaRiverClient(RiverBase):
    """sa_river's own heartbeat table (not River's): one row per live worker runner.

    UNLOGGED: after a database crash the rows vanish, as a dead worker's row should. The
    rescuer treats a running job whose ``attempted_by`` runner has no fresh heartbeat here as
    abandoned.
    """

    __tablename__ = "sa_river_client"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    hostname: Mapped[str] = mapped_column(Text, nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    queues: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")
    )
    started_at: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, server_default=text("now()")
    )
    heartbeat_at: Mapped[datetime] = mapped_column(
        TIMESTAMPTZ, nullable=False, server_default=text("now()")
    )

    __table_args__ = (
        CheckConstraint("char_length(id) > 0 AND char_length(id) < 128", name="id_length"),
        {"prefixes": ["UNLOGGED"]},
    )
