"""Enqueue throughput of sa_river against a raw psycopg ceiling, measured in one run.

Usage::

    .venv/bin/python benchmarks/insert_bench.py [--database-url URL] [-n 20000] [--rounds 3]

The script creates a scratch database on the server of ``--database-url``, migrates it, runs each
workload ``--rounds`` times and prints the median jobs/s of each side with their ratio. Within a
round the table starts empty and the two sides take turns every few transactions (100 single
inserts, or 2 batches), so background load and checkpoints hit both alike. The scratch database
is dropped at the end. DESIGN.md section 6 sets the targets; timings never go into tests.

Workloads (N is ``-n``; the single-insert workloads use N / 10):

- ``single``: one job per transaction. sa_river: ``sa_river.insert`` in a ``Session`` transaction
  (and, as a second row, on ``engine.begin()``). Ceiling: one psycopg connection, one
  ``INSERT ... VALUES ... RETURNING *`` with ``pg_notify`` per transaction.
- ``batch``: ``sa_river.insert_many`` in batches of 1,000, one transaction each. Ceiling:
  ``INSERT ... SELECT FROM unnest(...) RETURNING *`` with ``pg_notify``.
- ``copy``: ``sa_river.insert_many_fast`` in batches of 1,000. Ceiling: psycopg ``COPY`` and one
  ``pg_notify``.
- ``unique``: ``insert_many`` with ``UniqueOpts(by_args=True)``. Ceiling: the unnest insert with
  sha256 keys computed in Python and ``ON CONFLICT (unique_key) WHERE ... DO UPDATE``.

The ceilings write two columns (``args`` as jsonb, and ``kind``; the unique ceiling adds
``unique_key`` and ``unique_states``), leave the rest to column defaults, notify the insert
channel like sa_river, and fetch the same rows sa_river returns (except COPY, which returns none).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

import sa_river
from sa_river import InsertOpts, JobArgs, UniqueOpts
from sa_river.models import RiverBase

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BATCH_SIZE = 1000
TARGETS = {"single": 0.75, "batch": 0.80, "copy": 0.70, "unique": 0.80}

UNIQUE_PREDICATE = (
    "unique_key IS NOT NULL AND unique_states IS NOT NULL "
    "AND river_job_state_in_bitmask(unique_states, state)"
)
NOTIFY_CHANNEL = "current_schema() || '.river_insert'"

RAW_SINGLE = f"""
WITH ins AS (
    INSERT INTO river_job (args, kind) VALUES (%s::jsonb, %s) RETURNING *
)
SELECT ins.*, pg_notify({NOTIFY_CHANNEL}, json_build_object('queue', ins.queue)::text)
FROM ins
"""

RAW_BATCH = f"""
WITH ins AS (
    INSERT INTO river_job (args, kind)
    SELECT a::jsonb, k FROM unnest(%s::text[], %s::text[]) AS t(a, k)
    RETURNING *
)
SELECT ins.*,
       (SELECT count(pg_notify({NOTIFY_CHANNEL}, json_build_object('queue', q.queue)::text))
        FROM (SELECT DISTINCT queue FROM ins) AS q) AS notified
FROM ins
"""

RAW_UNIQUE = f"""
WITH ins AS (
    INSERT INTO river_job (args, kind, unique_key, unique_states)
    SELECT a::jsonb, k, u, s::bit(8)
    FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[]) AS t(a, k, u, s)
    ON CONFLICT (unique_key) WHERE {UNIQUE_PREDICATE}
    DO UPDATE SET kind = EXCLUDED.kind
    RETURNING *, (xmax <> 0) AS unique_skipped_as_duplicate
)
SELECT ins.*,
       (SELECT count(pg_notify({NOTIFY_CHANNEL}, json_build_object('queue', q.queue)::text))
        FROM (SELECT DISTINCT queue FROM ins WHERE NOT unique_skipped_as_duplicate) AS q)
           AS notified
FROM ins
"""

RAW_COPY = "COPY river_job (args, kind) FROM STDIN"
RAW_NOTIFY = f"SELECT pg_notify({NOTIFY_CHANNEL}, json_build_object('queue', %s::text)::text)"

DEFAULT_UNIQUE_STATES_BITS = "11110101"


class BenchJob(JobArgs, kind="bench_noop"):
    """A small job, typical of what applications enqueue."""

    user_id: int
    email: str
    template: str = "welcome"


class BenchUniqueJob(
    JobArgs, kind="bench_unique", insert_opts=InsertOpts(unique=UniqueOpts(by_args=True))
):
    """The same job, unique by its args through the class defaults."""

    user_id: int
    email: str
    template: str = "welcome"


def job_dict(i: int) -> dict[str, Any]:
    return {"user_id": i, "email": f"user{i}@example.com", "template": "welcome"}


# -- scratch database ----------------------------------------------------------------------


def libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_scratch_database(admin_url: URL) -> URL:
    name = f"sa_river_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.set(database=name)


def drop_scratch_database(admin_url: URL, url: URL) -> None:
    with psycopg.connect(libpq_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def migrate(engine: Engine) -> str:
    """Create the river tables; returns how."""
    try:
        migrate_module: Any = importlib.import_module("sa_river.migrate")
    except ImportError:
        migrate_module = None
    if migrate_module is not None and hasattr(migrate_module, "upgrade"):
        with engine.begin() as conn:
            migrate_module.upgrade(conn)
        if inspect(engine).has_table("river_job"):
            return "sa_river.migrate.upgrade"
        why = "sa_river.migrate.upgrade created no river_job"
    else:
        why = "sa_river.migrate not available"
    RiverBase.metadata.create_all(engine)
    return f"RiverBase.metadata.create_all ({why})"


def truncate(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE river_job RESTART IDENTITY"))
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM river_job"))


def count_jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM river_job")).scalar_one())


# -- workloads: each builds a list of units; one unit is one transaction ------------------------
#
# The two sides use different args (ids 0..n-1 for sa_river, n..2n-1 for the ceiling), so their
# unique keys never collide when they share the table within a round.

Unit = Callable[[], None]


def batches(items: Sequence[Any], size: int = BATCH_SIZE) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def encode(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"))


def _sa_insert_session(engine: Engine, job: JobArgs) -> None:
    with Session(engine) as session, session.begin():
        sa_river.insert(session, job)


def _sa_insert_connection(engine: Engine, job: JobArgs) -> None:
    with engine.begin() as conn:
        sa_river.insert(conn, job)


def _sa_insert_many(engine: Engine, jobs: Sequence[JobArgs]) -> None:
    with Session(engine) as session, session.begin():
        sa_river.insert_many(session, jobs)


def _sa_insert_many_fast(engine: Engine, jobs: Sequence[JobArgs]) -> None:
    with Session(engine) as session, session.begin():
        sa_river.insert_many_fast(session, jobs)


def sa_single(engine: Engine, ids: range, *, session: bool = True) -> list[Unit]:
    fn = _sa_insert_session if session else _sa_insert_connection
    return [partial(fn, engine, BenchJob(**job_dict(i))) for i in ids]


def sa_batch(engine: Engine, ids: range, job_cls: type[JobArgs] = BenchJob) -> list[Unit]:
    chunks = batches([job_cls(**job_dict(i)) for i in ids])
    return [partial(_sa_insert_many, engine, chunk) for chunk in chunks]


def sa_copy(engine: Engine, ids: range) -> list[Unit]:
    chunks = batches([BenchJob(**job_dict(i)) for i in ids])
    return [partial(_sa_insert_many_fast, engine, chunk) for chunk in chunks]


def _raw_single(conn: psycopg.Connection[Any], d: dict[str, Any]) -> None:
    with conn.transaction():
        conn.execute(RAW_SINGLE, (encode(d), "bench_noop")).fetchone()


def _raw_batch(conn: psycopg.Connection[Any], chunk: Sequence[dict[str, Any]]) -> None:
    with conn.transaction():
        args = [encode(d) for d in chunk]
        conn.execute(RAW_BATCH, (args, ["bench_noop"] * len(chunk))).fetchall()


def _raw_unique(conn: psycopg.Connection[Any], chunk: Sequence[dict[str, Any]]) -> None:
    encoded = [encode(d) for d in chunk]
    keys = [
        hashlib.sha256(
            (
                "&kind=bench_unique&args=" + json.dumps(d, separators=(",", ":"), sort_keys=True)
            ).encode()
        ).digest()
        for d in chunk
    ]
    with conn.transaction():
        conn.execute(
            RAW_UNIQUE,
            (
                encoded,
                ["bench_unique"] * len(chunk),
                keys,
                [DEFAULT_UNIQUE_STATES_BITS] * len(chunk),
            ),
        ).fetchall()


def _raw_copy(conn: psycopg.Connection[Any], chunk: Sequence[dict[str, Any]]) -> None:
    with conn.transaction():
        with conn.cursor() as cur, cur.copy(RAW_COPY) as copy:
            for d in chunk:
                copy.write_row((encode(d), "bench_noop"))
        conn.execute(RAW_NOTIFY, ("default",))


def raw_single(conn: psycopg.Connection[Any], ids: range) -> list[Unit]:
    return [partial(_raw_single, conn, job_dict(i)) for i in ids]


def raw_batched(
    fn: Callable[[psycopg.Connection[Any], Sequence[dict[str, Any]]], None],
    conn: psycopg.Connection[Any],
    ids: range,
) -> list[Unit]:
    return [partial(fn, conn, chunk) for chunk in batches([job_dict(i) for i in ids])]


# -- measurement -----------------------------------------------------------------------------


@dataclass
class Result:
    workload: str
    jobs: int
    sa_river: float
    ceiling: float

    @property
    def ratio(self) -> float:
        return self.sa_river / self.ceiling


def run_units(units: Sequence[Unit]) -> float:
    start = time.perf_counter()
    for unit in units:
        unit()
    return time.perf_counter() - start


def measure(
    engine: Engine,
    name: str,
    jobs: int,
    ours: Sequence[Unit],
    ceiling: Sequence[Unit],
    rounds: int,
    block: int,
) -> Result:
    """Median jobs/s of each side; the sides alternate every ``block`` units.

    Interleaving in small blocks (rather than timing one side, then the other) means that
    background load and checkpoints hit both sides alike.
    """
    truncate(engine)
    run_units(ours[:block])  # warm up: statement caches, prepared statements, the pool
    run_units(ceiling[:block])
    ours_rates, ceiling_rates = [], []
    for r in range(rounds):
        truncate(engine)
        ours_time = ceiling_time = 0.0
        for b, start in enumerate(range(0, len(ours), block)):
            if (b + r) % 2:
                ceiling_time += run_units(ceiling[start : start + block])
                ours_time += run_units(ours[start : start + block])
            else:
                ours_time += run_units(ours[start : start + block])
                ceiling_time += run_units(ceiling[start : start + block])
        written = count_jobs(engine)
        if written != 2 * jobs:
            raise RuntimeError(f"{name}: expected {2 * jobs} jobs, found {written}")
        ours_rates.append(jobs / ours_time)
        ceiling_rates.append(jobs / ceiling_time)
    return Result(
        workload=name,
        jobs=jobs,
        sa_river=statistics.median(ours_rates),
        ceiling=statistics.median(ceiling_rates),
    )


def run_all(url: URL, n: int, rounds: int) -> list[Result]:
    single_n = max(n // 10, 1)
    engine = create_engine(url)
    raw = psycopg.connect(libpq_dsn(url))
    ours_ids, raw_ids = range(n), range(n, 2 * n)
    ours_single, raw_single_ids = range(single_n), range(single_n, 2 * single_n)
    try:
        return [
            measure(
                engine,
                "single (Session)",
                single_n,
                sa_single(engine, ours_single),
                raw_single(raw, raw_single_ids),
                rounds,
                block=100,
            ),
            measure(
                engine,
                "single (Connection)",
                single_n,
                sa_single(engine, ours_single, session=False),
                raw_single(raw, raw_single_ids),
                rounds,
                block=100,
            ),
            measure(
                engine,
                "batch insert_many",
                n,
                sa_batch(engine, ours_ids),
                raw_batched(_raw_batch, raw, raw_ids),
                rounds,
                block=2,
            ),
            measure(
                engine,
                "copy insert_many_fast",
                n,
                sa_copy(engine, ours_ids),
                raw_batched(_raw_copy, raw, raw_ids),
                rounds,
                block=2,
            ),
            measure(
                engine,
                "unique insert_many",
                n,
                sa_batch(engine, ours_ids, BenchUniqueJob),
                raw_batched(_raw_unique, raw, raw_ids),
                rounds,
                block=2,
            ),
        ]
    finally:
        raw.close()
        engine.dispose()


def target_of(workload: str) -> float:
    for prefix, target in TARGETS.items():
        if workload.startswith(prefix):
            return target
    raise KeyError(workload)


def print_table(results: list[Result], rounds: int, how: str) -> None:
    print(f"sa_river {sa_river.__version__}; schema by {how}; median of {rounds} rounds")
    header = f"{'workload':<24}{'jobs':>8}{'sa_river j/s':>15}{'ceiling j/s':>14}"
    header += f"{'ratio':>8}{'target':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        ceiling = f"{r.ceiling:,.0f}"
        ratio = f"{r.ratio:.2f}"
        target = target_of(r.workload)
        flag = "" if r.ratio >= target else "  below target"
        print(
            f"{r.workload:<24}{r.jobs:>8}{r.sa_river:>15,.0f}{ceiling:>14}"
            f"{ratio:>8}{target:>8.2f}{flag}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_URL,
        help="a server to create the scratch database on (default: %(default)s)",
    )
    parser.add_argument(
        "-n",
        type=int,
        default=20000,
        help="jobs per batch workload; single-insert workloads use n/10 (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per workload (median)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    if args.n < BATCH_SIZE or args.rounds < 1:
        parser.error(f"-n must be at least {BATCH_SIZE} and --rounds at least 1")

    admin_url = make_url(args.database_url)
    if admin_url.drivername in ("postgresql", "postgres"):
        admin_url = admin_url.set(drivername="postgresql+psycopg")
    url = create_scratch_database(admin_url)
    try:
        engine = create_engine(url)
        try:
            how = migrate(engine)
        finally:
            engine.dispose()
        results = run_all(url, args.n, args.rounds)
    finally:
        drop_scratch_database(admin_url, url)

    if args.json:
        payload = {
            "sa_river_version": sa_river.__version__,
            "schema": how,
            "rounds": args.rounds,
            "results": [
                {
                    "workload": r.workload,
                    "jobs": r.jobs,
                    "sa_river_jobs_per_s": round(r.sa_river, 1),
                    "ceiling_jobs_per_s": round(r.ceiling, 1),
                    "ratio": round(r.ratio, 3),
                    "target": target_of(r.workload),
                }
                for r in results
            ],
        }
        json.dump(payload, sys.stdout, indent=2)
        print()
    else:
        print_table(results, args.rounds, how)
    return 0


if __name__ == "__main__":
    sys.exit(main())
