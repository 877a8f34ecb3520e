"""SQL of the bench: the raw-psycopg ceilings and the bench's chores, as plain strings.

The ceilings are what a minimal hand-written queue does, run on a plain psycopg connection with
no sa_river code in the loop; that is their point. They write only the columns they must
(``args`` and ``kind``; the unique ceiling adds ``unique_key`` and ``unique_states``), leave
the rest to column defaults and notify the insert channel like sa_river does, so a ratio
against them measures what sa_river adds.

What is a rule of the schema rather than a choice of the ceiling is taken from the package, so
the ceiling cannot drift from it: the unique index's predicate (``ON CONFLICT`` must repeat it
word for word to infer the index) and the name of the insert channel.
"""

from __future__ import annotations

from sa_river.models import UNIQUE_INDEX_PREDICATE
from sa_river.queries.notify import TOPIC_INSERT

__all__ = [
    "CLEANUP_ABOVE",
    "COUNT_CLIENTS",
    "COUNT_COMPLETED_ABOVE",
    "COUNT_LISTENERS",
    "COUNT_STATES_ABOVE",
    "FILL_RETAINED",
    "MAX_ID",
    "PENDING_WORK_EXISTS",
    "RAW_BATCH",
    "RAW_COMPLETE",
    "RAW_COPY",
    "RAW_FETCH",
    "RAW_NOTIFY",
    "RAW_SINGLE",
    "RAW_UNIQUE",
    "TRUNCATE_JOBS",
]

_CHANNEL = f"current_schema() || '.{TOPIC_INSERT}'"

# -- enqueue ceilings -------------------------------------------------------------------------

RAW_SINGLE = f"""
WITH ins AS (
    INSERT INTO river_job (args, kind) VALUES (%s::jsonb, %s) RETURNING *
)
SELECT ins.*, pg_notify({_CHANNEL}, json_build_object('queue', ins.queue)::text)
FROM ins
"""

RAW_BATCH = f"""
WITH ins AS (
    INSERT INTO river_job (args, kind)
    SELECT a::jsonb, k FROM unnest(%s::text[], %s::text[]) AS t(a, k)
    RETURNING *
)
SELECT ins.*,
       (SELECT count(pg_notify({_CHANNEL}, json_build_object('queue', q.queue)::text))
        FROM (SELECT DISTINCT queue FROM ins) AS q) AS notified
FROM ins
"""

RAW_UNIQUE = f"""
WITH ins AS (
    INSERT INTO river_job (args, kind, unique_key, unique_states)
    SELECT a::jsonb, k, u, s::bit(8)
    FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[]) AS t(a, k, u, s)
    ON CONFLICT (unique_key) WHERE {UNIQUE_INDEX_PREDICATE}
    DO UPDATE SET kind = EXCLUDED.kind
    RETURNING *, (xmax <> 0) AS unique_skipped_as_duplicate
)
SELECT ins.*,
       (SELECT count(pg_notify({_CHANNEL}, json_build_object('queue', q.queue)::text))
        FROM (SELECT DISTINCT queue FROM ins WHERE NOT unique_skipped_as_duplicate) AS q)
           AS notified
FROM ins
"""

RAW_COPY = "COPY river_job (args, kind) FROM STDIN"
RAW_NOTIFY = f"SELECT pg_notify({_CHANNEL}, json_build_object('queue', %s::text)::text)"

# -- work ceilings ----------------------------------------------------------------------------

RAW_FETCH = """
WITH locked AS (
    SELECT id FROM river_job
    WHERE state = 'available' AND queue = 'default' AND scheduled_at <= now()
    ORDER BY priority, scheduled_at, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE river_job SET state = 'running', attempt = attempt + 1, attempted_at = now()
FROM locked WHERE river_job.id = locked.id
RETURNING river_job.id, river_job.args
"""

RAW_COMPLETE = """
UPDATE river_job SET state = 'completed', finalized_at = now()
WHERE id = ANY(%s::bigint[]) AND state = 'running'
"""

# -- chores -------------------------------------------------------------------------------------

TRUNCATE_JOBS = "TRUNCATE river_job RESTART IDENTITY"
MAX_ID = "SELECT coalesce(max(id), 0) FROM river_job"

FILL_RETAINED = """
INSERT INTO river_job (state, attempt, attempted_at, attempted_by, created_at, finalized_at,
                       scheduled_at, args, kind)
SELECT 'completed', 1, now() - interval '1 hour', ARRAY['bench'], now() - interval '2 hours',
       now() - interval '1 hour', now() - interval '2 hours', jsonb_build_object('i', i),
       'bench_retained'
FROM generate_series(1, %s) AS i
"""
"""Finalised rows that stand for history: completed an hour ago, so no cleaner removes them."""

PENDING_WORK_EXISTS = """
SELECT EXISTS (
    SELECT 1 FROM river_job WHERE state IN ('available', 'running') AND queue = 'default'
)
"""

COUNT_COMPLETED_ABOVE = "SELECT count(*) FROM river_job WHERE id > %s AND state = 'completed'"
COUNT_STATES_ABOVE = "SELECT state::text, count(*) FROM river_job WHERE id > %s GROUP BY 1"
CLEANUP_ABOVE = "DELETE FROM river_job WHERE id > %s"
COUNT_CLIENTS = "SELECT count(*) FROM sa_river_client"
COUNT_LISTENERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %%'
"""
"""Backends of this database whose last statement was a LISTEN: workers' notifier connections."""
