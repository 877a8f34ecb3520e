"""One bench run from start to end: scratch databases, the workloads in order, the report.

Also how the bench picks its server (:func:`default_server_url`) and prints (:func:`bench_main`),
shared by ``python -m sa_river bench`` and the scripts in ``benchmarks/``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from sa_river import migrate
from sa_river.tools.bench import sql
from sa_river.tools.bench.plan import fetch_plan_index, job_fetch_plan
from sa_river.tools.bench.report import BenchOptions, BenchReport, Result, render_table
from sa_river.tools.bench.scratch import ScratchDatabases, raw_connect, scalar
from sa_river.tools.bench.workloads import (
    bench_burn_down,
    bench_continuous,
    bench_enqueue,
    bench_latency,
    prefill,
    reset_work,
)
from sa_river.tools.progress import Progress

__all__ = ["bench_main", "default_server_url", "run_bench"]


def _fill_retained(url: URL, n: int) -> None:
    with raw_connect(url) as conn:
        for start in range(0, n, 200_000):
            conn.execute(sql.FILL_RETAINED, (min(200_000, n - start),))
        conn.execute("VACUUM ANALYZE river_job")


def _fetch_plan(url: URL) -> list[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return job_fetch_plan(conn)
    finally:
        engine.dispose()


def _steps(opts: BenchOptions) -> int:
    work = [w for w in opts.workloads if not w.startswith("enqueue")]
    enqueue = [w for w in opts.workloads if w.startswith("enqueue")]
    return len(enqueue) + len(work) + (1 if work else 0)


def run_bench(opts: BenchOptions, progress_stream: TextIO | None = None) -> BenchReport:
    """Run the chosen workloads on scratch databases of ``opts.server_url``."""
    started = time.monotonic()
    progress = Progress(progress_stream, _steps(opts), timed=True)
    databases = ScratchDatabases(opts.server_url)
    results: list[Result] = []
    plan: list[str] = []
    try:
        progress.show("creating scratch databases")
        enqueue = [w for w in opts.workloads if w.startswith("enqueue")]
        if enqueue:
            url = databases.create()
            for workload in enqueue:
                results.append(bench_enqueue(url, workload, opts.n, opts.rounds, progress))
                progress.advance()
            databases.drop(url)
        work = [w for w in opts.workloads if not w.startswith("enqueue")]
        if work:
            url = databases.create()
            if opts.retained:
                progress.show(f"filling {opts.retained:,} retained finalised rows")
                _fill_retained(url, opts.retained)
            floor = int(scalar(url, sql.MAX_ID))
            # The plan the workers get: retained rows, a backlog of N jobs, fresh statistics.
            progress.show("EXPLAIN of the fetch statement")
            prefill(url, opts.n)
            plan = _fetch_plan(url)
            reset_work(url, floor)
            progress.advance()
            if "burn-down" in work:
                results.append(bench_burn_down(url, opts, floor, progress))
                progress.advance()
            if "continuous" in work:
                results.append(bench_continuous(url, opts, floor, progress))
                progress.advance()
            if "latency" in work:
                results.extend(bench_latency(url, opts, floor, progress))
                progress.advance()
            databases.drop(url)
    finally:
        progress.show("dropping scratch databases")
        databases.drop_all()
        progress.close()
    return BenchReport(
        options=opts,
        results=results,
        fetch_plan=plan,
        fetch_index=fetch_plan_index(plan) if plan else None,
        retained=opts.retained,
        seconds=time.monotonic() - started,
    )


@contextmanager
def _quiet_logging() -> Iterator[None]:
    root = logging.getLogger("sa_river")
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


def bench_main(opts: BenchOptions, out: TextIO, err: TextIO | None, as_json: bool) -> int:
    """Run and print; used by the CLI and the scripts in ``benchmarks/``."""
    with _quiet_logging():
        report = run_bench(opts, err)
    if as_json:
        print(json.dumps(report.to_json(), indent=2), file=out)
    else:
        print(render_table(report), file=out)
    return 0


def default_server_url(database_url: str | None) -> tuple[URL, str | None]:
    """The server to bench on, and a note when it is the embedded one."""
    url_text = database_url or migrate.database_url_from_env()
    note = None
    if not url_text:
        from sa_river.embedded import EMBEDDED_DATA_DIR_DEFAULT, embedded_database_url

        url_text = embedded_database_url()
        note = (
            "no database URL given: benchmarking an embedded PostgreSQL "
            f"(data in {Path(EMBEDDED_DATA_DIR_DEFAULT)}/)"
        )
    url = make_url(url_text)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url, note
