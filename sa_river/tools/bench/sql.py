"""SQL of ``python -m sa_river bench`` (internal): the raw-psycopg ceilings and bench chores.

The ceilings are what a minimal hand-written queue does, as plain SQL strings run on a plain
psycopg connection: they write only the columns they must (``args`` and ``kind``; the unique
ceiling adds ``unique_key`` and ``unique_states``), leave the rest to column defaults and notify
the insert channel like sa_river does, so a ratio against them measures what sa_river adds.
The bench also reports the ``EXPLAIN`` of sa_river's own fetch statement
(:func:`job_fetch_plan`) and the index its locking scan uses (:func:`fetch_plan_index`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from sa_river.queries.job_fetch import fetch_statement
from sa_river.types import JobState

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
    "fetch_plan_index",
    "job_fetch_plan",
]

_UNIQUE_PREDICATE = (
    "unique_key IS NOT NULL AND unique_states IS NOT NULL "
    "AND river_job_state_in_bitmask(unique_states, state)"
)
_CHANNEL = "current_schema() || '.river_insert'"

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
    ON CONFLICT (unique_key) WHERE {_UNIQUE_PREDICATE}
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


def job_fetch_plan(conn: Connection, *, queue: str = "default", limit: int = 100) -> list[str]:
    """``EXPLAIN`` of the fetch statement (not run: nothing is locked or changed)."""
    compiled = fetch_statement().compile(dialect=conn.dialect)
    params = compiled.construct_params(
        {"fetch_queue": queue, "fetch_limit": limit, "client_id": "explain"}
    )
    values = {k: v.value if isinstance(v, JobState) else v for k, v in params.items()}
    rows = conn.exec_driver_sql(f"EXPLAIN {compiled.string}", values).all()
    return [str(r[0]) for r in rows]


def fetch_plan_index(plan: Sequence[str]) -> str | None:
    """The index the fetch's locking scan uses, or ``None`` when it scans the table."""
    for line in plan:  # the locking scan is the plan's first scan of river_job
        words = line.replace("->", " ").split()
        if "Scan" not in words:
            continue
        if words[:3] == ["Bitmap", "Index", "Scan"] and words[4].startswith("river_job_"):
            return words[4]
        if "using" in words and "on" in words and words[words.index("on") + 1] == "river_job":
            return words[words.index("using") + 1]
        if words[:2] == ["Seq", "Scan"] and words[3] == "river_job":
            return None
    return None
