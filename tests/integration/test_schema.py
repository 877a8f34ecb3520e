"""The migrated database is River's schema version 7, fact by fact.

The expected facts below are literal data written from River's DDL (as PostgreSQL prints it back
through ``format_type``, ``pg_get_expr``, ``pg_get_constraintdef`` and ``pg_get_indexdef``), not
derived from ``sa_river.models`` or the migrations: a change to either that drifts from River's
schema fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

pytestmark = pytest.mark.timeout(60)

TSTZ = "timestamp with time zone"

COLUMNS: dict[str, list[tuple[str, str, bool, str | None]]] = {
    # (name, type, not null, default)
    "river_job": [
        ("id", "bigint", True, "nextval('river_job_id_seq'::regclass)"),
        ("state", "river_job_state", True, "'available'::river_job_state"),
        ("attempt", "smallint", True, "0"),
        ("max_attempts", "smallint", True, "25"),
        ("attempted_at", TSTZ, False, None),
        ("created_at", TSTZ, True, "now()"),
        ("finalized_at", TSTZ, False, None),
        ("scheduled_at", TSTZ, True, "now()"),
        ("priority", "smallint", True, "1"),
        ("args", "jsonb", True, None),
        ("attempted_by", "text[]", False, None),
        ("errors", "jsonb[]", False, None),
        ("kind", "text", True, None),
        ("metadata", "jsonb", True, "'{}'::jsonb"),
        ("queue", "text", True, "'default'::text"),
        ("tags", "character varying(255)[]", True, "'{}'::character varying[]"),
        ("unique_key", "bytea", False, None),
        ("unique_states", "bit(8)", False, None),
    ],
    "river_leader": [
        ("elected_at", TSTZ, True, None),
        ("expires_at", TSTZ, True, None),
        ("leader_id", "text", True, None),
        ("name", "text", True, "'default'::text"),
    ],
    "river_migration": [
        ("line", "text", True, None),
        ("version", "bigint", True, None),
        ("created_at", TSTZ, True, "now()"),
    ],
    "river_notification": [
        ("id", "bigint", True, "nextval('river_notification_id_seq'::regclass)"),
        ("created_at", TSTZ, True, "now()"),
        ("payload", "text", True, None),
        ("topic", "text", True, None),
    ],
    "river_queue": [
        ("name", "text", True, None),
        ("created_at", TSTZ, True, "now()"),
        ("metadata", "jsonb", True, "'{}'::jsonb"),
        ("paused_at", TSTZ, False, None),
        ("updated_at", TSTZ, True, "CURRENT_TIMESTAMP"),
    ],
    "sa_river_client": [
        ("id", "text", True, None),
        ("hostname", "text", True, None),
        ("pid", "integer", True, None),
        ("queues", "text[]", True, "'{}'::text[]"),
        ("started_at", TSTZ, True, "now()"),
        ("heartbeat_at", TSTZ, True, "now()"),
    ],
}

FINALIZED_STATES = (
    "ARRAY['cancelled'::river_job_state, 'completed'::river_job_state, "
    "'discarded'::river_job_state]"
)

CONSTRAINTS: dict[str, dict[str, str]] = {
    "river_job": {
        "finalized_or_finalized_at_null": (
            f"CHECK ((((finalized_at IS NULL) AND (state <> ALL ({FINALIZED_STATES}))) OR "
            f"((finalized_at IS NOT NULL) AND (state = ANY ({FINALIZED_STATES})))))"
        ),
        "kind_length": "CHECK (((char_length(kind) > 0) AND (char_length(kind) < 128)))",
        "max_attempts_is_positive": "CHECK ((max_attempts > 0))",
        "priority_in_range": "CHECK (((priority >= 1) AND (priority <= 4)))",
        "queue_length": "CHECK (((char_length(queue) > 0) AND (char_length(queue) < 128)))",
        "river_job_pkey": "PRIMARY KEY (id)",
    },
    "river_leader": {
        "leader_id_length": (
            "CHECK (((char_length(leader_id) > 0) AND (char_length(leader_id) < 128)))"
        ),
        "name_length": "CHECK ((name = 'default'::text))",
        "river_leader_pkey": "PRIMARY KEY (name)",
    },
    "river_migration": {
        "line_length": "CHECK (((char_length(line) > 0) AND (char_length(line) < 128)))",
        "river_migration_pkey": "PRIMARY KEY (line, version)",
        "version_gte_1": "CHECK ((version >= 1))",
    },
    "river_notification": {
        "river_notification_pkey": "PRIMARY KEY (id)",
        "topic_length": "CHECK (((length(topic) > 0) AND (length(topic) < 128)))",
    },
    "river_queue": {
        "river_queue_pkey": "PRIMARY KEY (name)",
    },
    "sa_river_client": {
        "id_length": "CHECK (((char_length(id) > 0) AND (char_length(id) < 128)))",
        "sa_river_client_pkey": "PRIMARY KEY (id)",
    },
}

INDEXES: dict[str, dict[str, str]] = {
    "river_job": {
        "river_job_args_index": "CREATE INDEX river_job_args_index ON public.river_job "
        "USING gin (args)",
        "river_job_kind": "CREATE INDEX river_job_kind ON public.river_job USING btree (kind)",
        "river_job_metadata_index": "CREATE INDEX river_job_metadata_index ON public.river_job "
        "USING gin (metadata)",
        "river_job_pkey": "CREATE UNIQUE INDEX river_job_pkey ON public.river_job USING btree (id)",
        "river_job_prioritized_fetching_index": "CREATE INDEX "
        "river_job_prioritized_fetching_index ON public.river_job "
        "USING btree (state, queue, priority, scheduled_at, id)",
        "river_job_state_and_finalized_at_index": "CREATE INDEX "
        "river_job_state_and_finalized_at_index ON public.river_job "
        "USING btree (state, finalized_at) WHERE (finalized_at IS NOT NULL)",
        "river_job_unique_idx": "CREATE UNIQUE INDEX river_job_unique_idx ON public.river_job "
        "USING btree (unique_key) WHERE ((unique_key IS NOT NULL) AND "
        "(unique_states IS NOT NULL) AND river_job_state_in_bitmask(unique_states, state))",
    },
    "river_leader": {
        "river_leader_pkey": "CREATE UNIQUE INDEX river_leader_pkey ON public.river_leader "
        "USING btree (name)",
    },
    "river_migration": {
        "river_migration_pkey": "CREATE UNIQUE INDEX river_migration_pkey "
        "ON public.river_migration USING btree (line, version)",
    },
    "river_notification": {
        "river_notification_created_at_idx": "CREATE INDEX river_notification_created_at_idx "
        "ON public.river_notification USING btree (created_at)",
        "river_notification_pkey": "CREATE UNIQUE INDEX river_notification_pkey "
        "ON public.river_notification USING btree (id)",
        "river_notification_topic_id_idx": "CREATE INDEX river_notification_topic_id_idx "
        "ON public.river_notification USING btree (topic, id)",
    },
    "river_queue": {
        "river_queue_pkey": "CREATE UNIQUE INDEX river_queue_pkey ON public.river_queue "
        "USING btree (name)",
    },
    "sa_river_client": {
        "sa_river_client_pkey": "CREATE UNIQUE INDEX sa_river_client_pkey "
        "ON public.sa_river_client USING btree (id)",
    },
}

JOB_STATES = [
    "available",
    "cancelled",
    "completed",
    "discarded",
    "pending",
    "retryable",
    "running",
    "scheduled",
]


@pytest.fixture
def conn(db_url: URL) -> Iterator[sa.Connection]:
    engine = sa.create_engine(db_url, poolclass=NullPool)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def rows(conn: sa.Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sa.text(sql), params)]


def test_exactly_the_river_tables_and_the_version_table(conn: sa.Connection) -> None:
    found = rows(
        conn,
        "SELECT relname, relpersistence FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY relname",
    )
    assert found == [
        ("river_job", "p"),
        ("river_leader", "u"),  # UNLOGGED
        ("river_migration", "p"),
        ("river_notification", "p"),
        ("river_queue", "p"),
        ("sa_river_alembic_version", "p"),
        ("sa_river_client", "u"),  # UNLOGGED, sa_river's own heartbeats
    ]


@pytest.mark.parametrize("table", sorted(COLUMNS))
def test_columns(conn: sa.Connection, table: str) -> None:
    found = rows(
        conn,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        table=table,
    )
    assert found == COLUMNS[table]


@pytest.mark.parametrize("table", sorted(CONSTRAINTS))
def test_constraints(conn: sa.Connection, table: str) -> None:
    found = rows(
        conn,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = CAST(:table AS regclass) ORDER BY conname",
        table=table,
    )
    assert dict(found) == CONSTRAINTS[table]


@pytest.mark.parametrize("table", sorted(INDEXES))
def test_indexes(conn: sa.Connection, table: str) -> None:
    found = rows(
        conn,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename = :table ORDER BY indexname",
        table=table,
    )
    assert dict(found) == INDEXES[table]


def test_job_state_enum_values_in_order(conn: sa.Connection) -> None:
    found = rows(
        conn,
        "SELECT enumlabel FROM pg_enum WHERE enumtypid = 'river_job_state'::regtype "
        "ORDER BY enumsortorder",
    )
    assert [label for (label,) in found] == JOB_STATES


def test_state_in_bitmask_function_is_immutable_sql(conn: sa.Connection) -> None:
    found = rows(
        conn,
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid), "
        "format_type(p.prorettype, NULL), l.lanname, p.provolatile "
        "FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
        "WHERE p.pronamespace = 'public'::regnamespace ORDER BY p.proname",
    )
    assert found == [
        (
            "river_job_state_in_bitmask",
            "bitmask bit, state river_job_state",
            "boolean",
            "sql",
            "i",  # IMMUTABLE, so it may appear in the unique index's predicate
        )
    ]


def test_no_triggers_left_from_river_2(conn: sa.Connection) -> None:
    found = rows(
        conn,
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = 'river_job'::regclass",
    )
    assert found == []


def test_state_in_bitmask_with_the_default_unique_states(conn: sa.Connection) -> None:
    # 11110101: available, completed, pending, retryable, running, scheduled (River's default).
    found = rows(
        conn,
        "SELECT s::text, river_job_state_in_bitmask(B'11110101', s) "
        "FROM unnest(enum_range(NULL::river_job_state)) AS s",
    )
    assert dict(found) == {
        "available": True,
        "cancelled": False,
        "completed": True,
        "discarded": False,
        "pending": True,
        "retryable": True,
        "running": True,
        "scheduled": True,
    }


def test_state_in_bitmask_one_bit_per_state(conn: sa.Connection) -> None:
    for position, state in enumerate(JOB_STATES):
        mask = "".join("1" if i == 7 - position else "0" for i in range(8))
        found = rows(
            conn,
            "SELECT s::text FROM unnest(enum_range(NULL::river_job_state)) AS s "
            "WHERE river_job_state_in_bitmask(CAST(:mask AS bit(8)), s)",
            mask=mask,
        )
        assert found == [(state,)], mask


def test_unique_index_applies_only_to_states_in_the_bitmask(conn: sa.Connection) -> None:
    insert = sa.text(
        "INSERT INTO river_job (args, kind, state, finalized_at, unique_key, unique_states) "
        "VALUES ('{}', 'k', CAST(:state AS river_job_state), "
        "CASE WHEN :final THEN now() END, '\\x01', B'11110101')"
    )
    with conn.begin():
        conn.execute(insert, {"state": "cancelled", "final": True})  # outside the bitmask
        conn.execute(insert, {"state": "available", "final": False})
    with pytest.raises(sa.exc.IntegrityError, match="river_job_unique_idx"), conn.begin():
        conn.execute(insert, {"state": "pending", "final": False})
