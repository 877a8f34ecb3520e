"""The bench's workloads: each runs through sa_river and as its raw-psycopg ceiling.

Every workload runs twice on the same server in the same run: once through sa_river, once as
the minimal raw psycopg loop that does the same work (the *ceiling*); the table shows each
sa_river figure with its ratio to the ceiling. The machine may be shared and noisy, so ratios
measured side by side mean more than absolute numbers; timings never go into tests.

Workloads (N is ``-n``):

- ``enqueue-single``: N jobs, one ``sa_river.insert`` per ``Session`` transaction (the web
  request case). Ceiling: one ``INSERT ... VALUES ... RETURNING *`` with ``pg_notify`` per
  transaction on one psycopg connection.
- ``enqueue-batch``: ``insert_many`` in batches of 1,000. Ceiling: ``INSERT ... SELECT FROM
  unnest(...)`` with ``pg_notify``.
- ``enqueue-unique``: ``insert_many`` of unique jobs (``UniqueOpts(by_args=True)``). Ceiling: the
  unnest insert with sha256 keys computed in Python and ``ON CONFLICT ... DO UPDATE``.
- ``enqueue-copy``: ``insert_many_fast`` (``COPY``) in batches of 1,000. Ceiling: psycopg
  ``COPY`` and one ``pg_notify``.
- ``burn-down``: N no-op jobs are inserted (not timed), then the clock runs from the moment the
  workers may start (their queue is resumed) until every job is ``completed``. sa_river:
  ``python -m sa_river worker`` (``--processes`` > 1: under the supervisor) with
  ``--concurrency`` slots per process. Ceiling: ``--processes`` raw drainer processes, each
  fetching 100 jobs with ``FOR UPDATE SKIP LOCKED`` and completing them with one UPDATE.
- ``continuous``: an inserter (batches of 100) and the workers at once for ``--duration``
  seconds: jobs completed per second, and the backlog left at the end.
- ``latency``: an idle worker, jobs inserted one at a time at about 50 per second,
  enqueue-to-start p50/p95/p99. Ceiling: a raw loop woken by ``LISTEN`` that fetches at once.

Enqueue workloads interleave the two sides in small blocks, so background load and checkpoints
hit both alike; the others alternate which side goes first in each round. After each prefill
the table is ``ANALYZE``d, as autovacuum would have done in a live system. ``--retained N``
first fills N finalised rows (completed an hour ago) to show that fetching stays index-backed:
the fetch statement's ``EXPLAIN`` is printed with the table.

Every run uses scratch databases created on the server (``CREATE DATABASE``) and dropped at the
end; with no URL at all, the embedded PostgreSQL of ``sa_river[embedded]`` is the server.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

import sa_river
from sa_river import migrate
from sa_river.args import JobArgs
from sa_river.options import DEFAULT_UNIQUE_STATES, InsertOpts, UniqueOpts
from sa_river.queries.notify import CURRENT_SCHEMA_SQL, TOPIC_INSERT, listen_statement
from sa_river.tools.bench import sql
from sa_river.tools.bench.report import BenchOptions, Result
from sa_river.tools.bench.scratch import execute, raw_connect, scalar
from sa_river.tools.progress import Progress
from sa_river.unique import states_bitmask
from sa_river.urls import libpq_dsn, url_text
from sa_river.workers import Job, Workers

__all__ = [
    "BENCH_WORKERS",
    "bench_burn_down",
    "bench_continuous",
    "bench_enqueue",
    "bench_latency",
    "prefill",
    "reset_work",
]

BATCH_SIZE = 1000
RAW_FETCH_LIMIT = 100
CONTINUOUS_BATCH = 100
LATENCY_RATE = 50.0
_POLL = 0.005
_READY_TIMEOUT = 60.0
_WORK_TIMEOUT = 600.0
_UNIQUE_STATES_BITS = states_bitmask(DEFAULT_UNIQUE_STATES)


# -- the jobs ------------------------------------------------------------------------------------


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


BENCH_WORKERS = Workers()
"""The registry the bench's worker processes run (``--app`` of :class:`WorkerProcesses`)."""


@BENCH_WORKERS.handler(BenchJob)
def _noop(job: Job[BenchJob]) -> None:
    return None


def _job_dict(i: int) -> dict[str, Any]:
    return {"user_id": i, "email": f"user{i}@example.com", "template": "welcome"}


def _encode(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"))


# -- enqueue workloads ------------------------------------------------------------------------

Unit = Callable[[], None]


def _chunks(items: Sequence[Any], size: int = BATCH_SIZE) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _sa_insert_session(engine: Engine, job: JobArgs) -> None:
    with Session(engine) as session, session.begin():
        sa_river.insert(session, job)


def _sa_insert_many(engine: Engine, jobs: Sequence[JobArgs]) -> None:
    with Session(engine) as session, session.begin():
        sa_river.insert_many(session, jobs)


def _sa_insert_many_fast(engine: Engine, jobs: Sequence[JobArgs]) -> None:
    with Session(engine) as session, session.begin():
        sa_river.insert_many_fast(session, jobs)


def _raw_single(conn: psycopg.Connection[Any], d: dict[str, Any]) -> None:
    with conn.transaction():
        conn.execute(sql.RAW_SINGLE, (_encode(d), BenchJob.kind)).fetchone()


def _raw_batch(conn: psycopg.Connection[Any], chunk: Sequence[dict[str, Any]]) -> None:
    with conn.transaction():
        args = [_encode(d) for d in chunk]
        conn.execute(sql.RAW_BATCH, (args, [BenchJob.kind] * len(chunk))).fetchall()


def _raw_unique(conn: psycopg.Connection[Any], chunk: Sequence[dict[str, Any]]) -> None:
    encoded = [_encode(d) for d in chunk]
    # The key a hand-written queue would compute in Python: sha256 of the kind and the args
    # with sorted keys. The two sides use different ids, so they never share a key.
    prefix = f"&kind={BenchUniqueJob.kind}&args="
    keys = [
        hashlib.sha256(
            (prefix + json.dumps(d, separators=(",", ":"), sort_keys=True)).encode()
        ).digest()
        for d in chunk
    ]
    with conn.transaction():
        conn.execute(
            sql.RAW_UNIQUE,
            (encoded, [BenchUniqueJob.kind] * len(chunk), keys, [_UNIQUE_STATES_BITS] * len(chunk)),
        ).fetchall()


def _raw_copy(conn: psycopg.Connection[Any], chunk: Sequence[dict[str, Any]]) -> None:
    with conn.transaction():
        with conn.cursor() as cur, cur.copy(sql.RAW_COPY) as copy:
            for d in chunk:
                copy.write_row((_encode(d), BenchJob.kind))
        conn.execute(sql.RAW_NOTIFY, ("default",))


def _run_units(units: Sequence[Unit]) -> float:
    start = time.perf_counter()
    for unit in units:
        unit()
    return time.perf_counter() - start


def _enqueue_units(
    workload: str, engine: Engine, raw: psycopg.Connection[Any], n: int
) -> tuple[list[Unit], list[Unit], int]:
    """sa_river's and the ceiling's units (one transaction each), and the block size.

    The sides use different args (ids 0..n-1 and n..2n-1) so unique keys never collide.
    """
    ours, theirs = range(n), range(n, 2 * n)
    if workload == "enqueue-single":
        return (
            [partial(_sa_insert_session, engine, BenchJob(**_job_dict(i))) for i in ours],
            [partial(_raw_single, raw, _job_dict(i)) for i in theirs],
            100,
        )
    if workload == "enqueue-batch":
        sa_fn: Callable[[Engine, Sequence[JobArgs]], None] = _sa_insert_many
        raw_fn: Callable[[psycopg.Connection[Any], Sequence[dict[str, Any]]], None] = _raw_batch
        job_cls: type[JobArgs] = BenchJob
    elif workload == "enqueue-unique":
        sa_fn, raw_fn, job_cls = _sa_insert_many, _raw_unique, BenchUniqueJob
    else:
        sa_fn, raw_fn, job_cls = _sa_insert_many_fast, _raw_copy, BenchJob
    return (
        [partial(sa_fn, engine, c) for c in _chunks([job_cls(**_job_dict(i)) for i in ours])],
        [partial(raw_fn, raw, c) for c in _chunks([_job_dict(i) for i in theirs])],
        2,
    )


def bench_enqueue(url: URL, workload: str, n: int, rounds: int, progress: Progress) -> Result:
    """Median jobs/s of each side; the sides take turns every ``block`` units."""
    engine = create_engine(url, pool_size=2)
    raw = psycopg.connect(libpq_dsn(url))
    try:
        ours, theirs, block = _enqueue_units(workload, engine, raw, n)
        execute(url, sql.TRUNCATE_JOBS)
        _run_units(ours[:block])  # warm up: statement caches, prepared statements, the pool
        _run_units(theirs[:block])
        ours_rates, theirs_rates = [], []
        for r in range(rounds):
            progress.show(f"{workload}: round {r + 1}/{rounds}")
            execute(url, sql.TRUNCATE_JOBS, "VACUUM river_job")
            ours_time = theirs_time = 0.0
            for b, start in enumerate(range(0, len(ours), block)):
                pair = (ours[start : start + block], theirs[start : start + block])
                if (b + r) % 2:
                    theirs_time += _run_units(pair[1])
                    ours_time += _run_units(pair[0])
                else:
                    ours_time += _run_units(pair[0])
                    theirs_time += _run_units(pair[1])
            written = int(scalar(url, "SELECT count(*) FROM river_job"))
            if written != 2 * n:
                raise RuntimeError(f"{workload}: expected {2 * n} jobs, found {written}")
            ours_rates.append(n / ours_time)
            theirs_rates.append(n / theirs_time)
    finally:
        raw.close()
        engine.dispose()
    return Result(
        workload,
        "jobs/s",
        statistics.median(ours_rates),
        statistics.median(theirs_rates),
        jobs=n,
    )


# -- work: helpers ------------------------------------------------------------------------------


def prefill(url: URL, n: int) -> None:
    """Insert n no-op jobs through COPY (not timed) and ANALYZE."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        for start in range(0, n, 5000):
            jobs = [BenchJob(**_job_dict(i)) for i in range(start, min(n, start + 5000))]
            sa_river.insert_many_fast(engine, jobs)
    finally:
        engine.dispose()
    execute(url, "ANALYZE river_job")


def _wait_drained(url: URL, timeout: float = _WORK_TIMEOUT) -> float:
    """Seconds until no job of the default queue is available or running."""
    started = time.perf_counter()
    with raw_connect(url) as conn:
        while True:
            row = conn.execute(sql.PENDING_WORK_EXISTS).fetchone()
            if row is not None and not row[0]:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"jobs still pending after {timeout:g}s")
            time.sleep(_POLL)


def reset_work(url: URL, floor: int) -> None:
    """Remove the jobs a workload added above the retained rows, and tidy the table."""
    with raw_connect(url) as conn:
        conn.execute(sql.CLEANUP_ABOVE, (floor,))
        conn.execute("DELETE FROM sa_river_client")
        conn.execute("UPDATE river_queue SET paused_at = NULL")
        conn.execute("VACUUM ANALYZE river_job")


def _states_above(url: URL, floor: int) -> dict[str, int]:
    with raw_connect(url) as conn:
        return {s: int(c) for s, c in conn.execute(sql.COUNT_STATES_ABOVE, (floor,)).fetchall()}


class WorkerProcesses:
    """``python -m sa_river worker`` for the bench's no-op jobs, in a child process.

    With ``processes`` > 1 it is the supervisor (``--processes``), which runs that many
    runner processes. ``start`` returns once every runner has heartbeated.
    """

    def __init__(self, url: URL, *, processes: int, concurrency: int) -> None:
        self.url = url
        self.processes = processes
        argv = [
            sys.executable,
            "-m",
            "sa_river",
            "worker",
            "--app",
            "sa_river.tools.bench.workloads:BENCH_WORKERS",
            "--queue",
            f"default={concurrency}",
            "--log-level",
            "WARNING",
        ]
        if processes > 1:
            argv += ["--processes", str(processes)]
        self.argv = argv
        # By environment, never argv: anyone on the host can read a process's argv.
        self.env = {**os.environ, migrate.DATABASE_URL_ENV: url_text(url)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"the worker exited with {self.proc.returncode}: {err}")
            if self._ready():
                time.sleep(0.1)  # the producers start right after the first heartbeat
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.processes} worker process(es) not up after {_READY_TIMEOUT}s")

    def _ready(self) -> bool:
        """Every runner has heartbeated and LISTENs (so the resume NOTIFY reaches it)."""
        with raw_connect(self.url) as conn:
            beats = conn.execute(sql.COUNT_CLIENTS).fetchone()
            listening = conn.execute(sql.COUNT_LISTENERS).fetchone()
        return (
            beats is not None
            and listening is not None
            and int(beats[0]) >= self.processes
            and int(listening[0]) >= self.processes
        )

    def stop(self, timeout: float = 60.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        self.proc = None


def _raw_drainer(
    url_text: str,
    until_empty: bool,
    ready: Any,
    go: Any,
    stop: Any,
) -> None:
    """The ceiling's worker: fetch 100 with SKIP LOCKED, complete them in one UPDATE."""
    with psycopg.connect(libpq_dsn(make_url(url_text)), autocommit=True) as conn:
        conn.execute("SELECT 1")
        ready.release()
        go.wait()
        while not stop.is_set():
            rows = conn.execute(sql.RAW_FETCH, (RAW_FETCH_LIMIT,)).fetchall()
            if not rows:
                if until_empty:
                    return
                time.sleep(0.002)
                continue
            conn.execute(sql.RAW_COMPLETE, ([r[0] for r in rows],))


class RawDrainers:
    """``processes`` raw drainer processes (spawned, so nothing is shared with this one)."""

    def __init__(self, url: URL, *, processes: int, until_empty: bool) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready = ctx.Semaphore(0)
        self._go = ctx.Event()
        self._stop = ctx.Event()
        self._procs = [
            ctx.Process(
                target=_raw_drainer,
                args=(url_text(url), until_empty, self._ready, self._go, self._stop),
                daemon=True,
            )
            for _ in range(processes)
        ]

    def start(self) -> None:
        for proc in self._procs:
            proc.start()
        for _ in self._procs:
            if not self._ready.acquire(timeout=_READY_TIMEOUT):
                raise TimeoutError("raw drainer processes not ready")

    def go(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


# -- work workloads ---------------------------------------------------------------------------


def _burn_down_sa_river(url: URL, opts: BenchOptions, floor: int) -> float:
    prefill(url, opts.n)
    # The workers start on a paused queue; the clock starts when it is resumed (the resume
    # NOTIFY wakes them), so process start-up is not timed, as the ceiling's is not.
    engine = create_engine(url, poolclass=NullPool)
    workers = WorkerProcesses(url, processes=opts.processes, concurrency=opts.concurrency)
    try:
        sa_river.pause_queue(engine, "default")
        workers.start()
        sa_river.resume_queue(engine, "default")
        elapsed = _wait_drained(url)
    finally:
        workers.stop()
        engine.dispose()
    _check_completed(url, floor, opts.n, "burn-down (sa_river)")
    return opts.n / elapsed


def _burn_down_ceiling(url: URL, opts: BenchOptions, floor: int) -> float:
    prefill(url, opts.n)
    drainers = RawDrainers(url, processes=opts.processes, until_empty=True)
    try:
        drainers.start()
        drainers.go()
        elapsed = _wait_drained(url)
    finally:
        drainers.stop()
    _check_completed(url, floor, opts.n, "burn-down (ceiling)")
    return opts.n / elapsed


def _check_completed(url: URL, floor: int, n: int, what: str) -> None:
    states = _states_above(url, floor)
    if states.get("completed", 0) != n or sum(states.values()) != n:
        raise RuntimeError(f"{what}: expected {n} completed jobs, found {states}")


def _alternate(
    round_index: int, ours: Callable[[], Any], theirs: Callable[[], Any], reset: Callable[[], None]
) -> tuple[Any, Any]:
    """Run both sides of one round, the ceiling first on odd rounds; reset after each side."""
    if round_index % 2:
        theirs_result = theirs()
        reset()
        ours_result = ours()
    else:
        ours_result = ours()
        reset()
        theirs_result = theirs()
    reset()
    return ours_result, theirs_result


def bench_burn_down(url: URL, opts: BenchOptions, floor: int, progress: Progress) -> Result:
    ours_rates, theirs_rates = [], []
    for r in range(opts.rounds):
        progress.show(f"burn-down: round {r + 1}/{opts.rounds}")
        ours, theirs = _alternate(
            r,
            lambda: _burn_down_sa_river(url, opts, floor),
            lambda: _burn_down_ceiling(url, opts, floor),
            lambda: reset_work(url, floor),
        )
        ours_rates.append(ours)
        theirs_rates.append(theirs)
    return Result(
        "burn-down",
        "jobs/s",
        statistics.median(ours_rates),
        statistics.median(theirs_rates),
        jobs=opts.n,
        note=f"{opts.processes} process(es) x {opts.concurrency} slots",
    )


class _Inserter:
    """Inserts batches of 100 no-op jobs as fast as it can, on a thread of this process."""

    def __init__(self, url: URL, *, raw: bool) -> None:
        self._url = url
        self._raw = raw
        self._stop = threading.Event()
        self.inserted = 0
        self._thread = threading.Thread(target=self._run, name="bench-inserter", daemon=True)

    def _run(self) -> None:
        i = 0
        if self._raw:
            with psycopg.connect(libpq_dsn(self._url)) as conn:
                while not self._stop.is_set():
                    _raw_batch(conn, [_job_dict(i + k) for k in range(CONTINUOUS_BATCH)])
                    i += CONTINUOUS_BATCH
                    self.inserted = i
            return
        engine = create_engine(self._url, pool_size=1)
        try:
            while not self._stop.is_set():
                jobs = [BenchJob(**_job_dict(i + k)) for k in range(CONTINUOUS_BATCH)]
                _sa_insert_many(engine, jobs)
                i += CONTINUOUS_BATCH
                self.inserted = i
        finally:
            engine.dispose()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _continuous_side(url: URL, opts: BenchOptions, floor: int, *, raw: bool) -> dict[str, float]:
    if raw:
        drainers = RawDrainers(url, processes=opts.processes, until_empty=False)
        drainers.start()
        drainers.go()
        stop_workers: Callable[[], None] = drainers.stop
    else:
        workers = WorkerProcesses(url, processes=opts.processes, concurrency=opts.concurrency)
        workers.start()
        stop_workers = workers.stop
    inserter = _Inserter(url, raw=raw)
    try:
        inserter.start()
        started = time.perf_counter()
        time.sleep(opts.duration)
        with raw_connect(url) as conn:
            row = conn.execute(sql.COUNT_COMPLETED_ABOVE, (floor,)).fetchone()
            elapsed = time.perf_counter() - started
        completed = int(row[0]) if row else 0
        inserted = inserter.inserted
    finally:
        inserter.stop()
        stop_workers()
    return {
        "completed_per_s": completed / elapsed,
        "inserted_per_s": inserted / elapsed,
        "backlog": max(inserted - completed, 0),
    }


def bench_continuous(url: URL, opts: BenchOptions, floor: int, progress: Progress) -> Result:
    ours_runs, theirs_runs = [], []
    for r in range(opts.rounds):
        progress.show(f"continuous: round {r + 1}/{opts.rounds} ({2 * opts.duration:g}s)")
        ours, theirs = _alternate(
            r,
            lambda: _continuous_side(url, opts, floor, raw=False),
            lambda: _continuous_side(url, opts, floor, raw=True),
            lambda: reset_work(url, floor),
        )
        ours_runs.append(ours)
        theirs_runs.append(theirs)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    backlog, raw_backlog = median(ours_runs, "backlog"), median(theirs_runs, "backlog")
    inserted = median(ours_runs, "inserted_per_s")
    raw_inserted = median(theirs_runs, "inserted_per_s")
    return Result(
        "continuous",
        "jobs/s",
        median(ours_runs, "completed_per_s"),
        median(theirs_runs, "completed_per_s"),
        note=f"backlog {backlog:,.0f} (ceiling {raw_backlog:,.0f}); "
        f"inserted {inserted:,.0f}/s (ceiling {raw_inserted:,.0f}/s)",
        extra={
            "backlog": backlog,
            "ceiling_backlog": raw_backlog,
            "inserted_per_s": round(inserted, 1),
            "ceiling_inserted_per_s": round(raw_inserted, 1),
            "duration_s": opts.duration,
        },
    )


def _insert_timed(
    url: URL,
    samples: int,
    latencies: list[float],
    listening: Callable[[float], bool],
    listener: str,
) -> None:
    """Once the consumer is ``listening`` (it LISTENs, so no insert goes unheard), insert
    ``samples`` latency jobs at about LATENCY_RATE per second, then wait (30 s at most) until
    the consumer has recorded a latency for each in ``latencies``.

    Both sides insert through sa_river: only the consumer differs, so the difference in
    latency is the consumer's.
    """
    if not listening(_READY_TIMEOUT):
        raise TimeoutError(f"{listener} did not come up")
    engine = create_engine(url, pool_size=1)
    try:
        interval = 1.0 / LATENCY_RATE
        next_at = time.perf_counter()
        for _ in range(samples):
            sa_river.insert(engine, ("bench_latency", {"t": time.perf_counter()}))
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        deadline = time.monotonic() + 30
        while len(latencies) < samples and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        engine.dispose()


def _latency_sa_river(url: URL, samples: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    workers = Workers()

    @workers.handler("bench_latency")
    def timed(job: Job[dict[str, Any]]) -> None:
        latencies.append(time.perf_counter() - float(job.args["t"]))

    worker = sa_river.Worker(url, workers, {"default": concurrency})
    worker.start()
    try:
        _insert_timed(
            url, samples, latencies, worker.wait_listening, "the worker's LISTEN connection"
        )
    finally:
        worker.stop()
    return latencies


def _latency_ceiling(url: URL, samples: int) -> list[float]:
    latencies: list[float] = []
    ready = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        with raw_connect(url) as conn:
            schema = conn.execute(CURRENT_SCHEMA_SQL).fetchone()
            conn.execute(listen_statement(f"{schema[0] if schema else 'public'}.{TOPIC_INSERT}"))
            ready.set()
            while not stop.is_set():
                for _ in conn.notifies(timeout=0.2, stop_after=1):
                    pass
                rows = conn.execute(sql.RAW_FETCH, (RAW_FETCH_LIMIT,)).fetchall()
                now = time.perf_counter()
                latencies.extend(now - float(args["t"]) for _, args in rows)
                if rows:
                    conn.execute(sql.RAW_COMPLETE, ([r[0] for r in rows],))

    thread = threading.Thread(target=listen, name="bench-raw-listener", daemon=True)
    thread.start()
    try:
        _insert_timed(url, samples, latencies, ready.wait, "the raw LISTEN connection")
    finally:
        stop.set()
        thread.join(10)
    return latencies


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * p))] * 1000.0


def bench_latency(url: URL, opts: BenchOptions, floor: int, progress: Progress) -> list[Result]:
    samples = max(20, int(LATENCY_RATE * opts.duration / 2))
    ours_runs: list[list[float]] = []
    theirs_runs: list[list[float]] = []
    for r in range(opts.rounds):
        progress.show(f"latency: round {r + 1}/{opts.rounds} ({samples} jobs per side)")
        ours, theirs = _alternate(
            r,
            lambda: _latency_sa_river(url, samples, opts.concurrency),
            lambda: _latency_ceiling(url, samples),
            lambda: reset_work(url, floor),
        )
        ours_runs.append(ours)
        theirs_runs.append(theirs)
    results = []
    for name, p in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        ours_ms = statistics.median(_percentile(run, p) for run in ours_runs)
        theirs_ms = statistics.median(_percentile(run, p) for run in theirs_runs)
        results.append(
            Result(
                f"latency {name}",
                "ms",
                ours_ms,
                theirs_ms,
                jobs=samples,
                note="enqueue to handler start" if name == "p50" else "",
            )
        )
    return results
