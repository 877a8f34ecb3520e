"""Work benchmarks: burn-down throughput and pickup latency, beside the raw-SQL ceiling.

    python benchmarks/work_bench.py [--database-url URL] [-n 20000] [--concurrency 100]

Each workload runs on a fresh scratch database. The ceiling is a minimal psycopg loop doing
only what a queue must: fetch 100 with FOR UPDATE SKIP LOCKED and complete them with one
batched UPDATE (burn-down), and a LISTEN-woken fetch (latency). Figures are ratios against the
ceiling measured in the same run; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from typing import Any

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

import sa_river
from sa_river import migrate

RAW_FETCH = """
WITH locked AS (
  SELECT id FROM river_job
  WHERE state = 'available' AND queue = 'default' AND scheduled_at <= now()
  ORDER BY priority, scheduled_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
UPDATE river_job SET state = 'running', attempt = attempt + 1, attempted_at = now()
FROM locked WHERE river_job.id = locked.id RETURNING river_job.id, river_job.args
"""
RAW_COMPLETE = """
UPDATE river_job SET state = 'completed', finalized_at = now()
WHERE id = ANY(%s) AND state = 'running'
"""


def dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class ScratchDatabase:
    def __init__(self, server: URL) -> None:
        self.server = server
        self.name = f"sa_river_bench_{uuid.uuid4().hex[:8]}"
        self.url = server.set(database=self.name)

    def __enter__(self) -> ScratchDatabase:
        with psycopg.connect(dsn(self.server), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        engine = create_engine(self.url, poolclass=NullPool)
        with engine.begin() as conn:
            migrate.upgrade(conn)
        engine.dispose()
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(dsn(self.server), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def prefill(url: URL, n: int) -> None:
    engine = create_engine(url, poolclass=NullPool)
    for start in range(0, n, 5000):
        sa_river.insert_many_fast(
            engine, [("noop", {"i": i}) for i in range(start, min(n, start + 5000))]
        )
    engine.dispose()


def count_completed(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM river_job WHERE state = 'completed'").fetchone()
    return int(row[0]) if row else 0


def wait_completed(url: URL, n: int, timeout: float = 600) -> float:
    started = time.perf_counter()
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        while count_completed(conn) < n:
            if time.perf_counter() - started > timeout:
                raise TimeoutError("burn-down did not finish")
            time.sleep(0.02)
    return time.perf_counter() - started


def burn_down_raw(url: URL, n: int, threads: int = 2) -> float:
    prefill(url, n)

    def drain() -> None:
        with psycopg.connect(dsn(url), autocommit=True) as conn:
            while True:
                with conn.transaction():
                    rows = conn.execute(RAW_FETCH, (100,)).fetchall()
                if not rows:
                    return
                with conn.transaction():
                    conn.execute(RAW_COMPLETE, ([r[0] for r in rows],))

    started = time.perf_counter()
    workers = [threading.Thread(target=drain) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        assert count_completed(conn) == n
    return n / elapsed


def burn_down_sa_river(url: URL, n: int, concurrency: int) -> float:
    prefill(url, n)
    workers = sa_river.Workers()
    workers.add("noop", lambda job: None)
    worker = sa_river.Worker(url, workers, {"default": concurrency}, fetch_cooldown=0.005)
    started = time.perf_counter()
    worker.start()
    try:
        elapsed = wait_completed(url, n)
    finally:
        worker.stop()
    return n / (elapsed if elapsed else time.perf_counter() - started)


def latency_raw(url: URL, samples: int) -> list[float]:
    latencies: list[float] = []
    done = threading.Event()

    def listen() -> None:
        with psycopg.connect(dsn(url), autocommit=True) as conn:
            conn.execute('LISTEN "public.river_insert"')
            ready.set()
            while len(latencies) < samples:
                for _ in conn.notifies(timeout=0.5, stop_after=1):
                    break
                with conn.transaction():
                    rows = conn.execute(RAW_FETCH, (10,)).fetchall()
                now = time.time()
                latencies.extend(now - float(args["t"]) for _, args in rows)
                if rows:
                    with conn.transaction():
                        conn.execute(RAW_COMPLETE, ([r[0] for r in rows],))
        done.set()

    ready = threading.Event()
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    ready.wait(10)
    _insert_timed(url, samples)
    done.wait(60)
    return latencies


def latency_sa_river(url: URL, samples: int) -> list[float]:
    latencies: list[float] = []
    workers = sa_river.Workers()

    @workers.handler("timed")
    def timed(job: sa_river.Job[dict[str, Any]]) -> None:
        latencies.append(time.time() - float(job.args["t"]))

    worker = sa_river.Worker(url, workers, {"default": 10})
    worker.start()
    worker.wait_listening()
    try:
        _insert_timed(url, samples, kind="timed")
        deadline = time.monotonic() + 60
        while len(latencies) < samples and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    return latencies


def _insert_timed(url: URL, samples: int, kind: str = "noop") -> None:
    engine = create_engine(url, pool_size=1)
    for _ in range(samples):
        sa_river.insert(engine, (kind, {"t": time.time()}))
        time.sleep(0.02)
    engine.dispose()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    server = make_url(opts.database_url).set(drivername="postgresql+psycopg")
    results: dict[str, Any] = {}
    with ScratchDatabase(server) as db:
        results["burn_down_ceiling"] = burn_down_raw(db.url, opts.n)
    with ScratchDatabase(server) as db:
        results["burn_down"] = burn_down_sa_river(db.url, opts.n, opts.concurrency)
    with ScratchDatabase(server) as db:
        raw = latency_raw(db.url, opts.samples)
    with ScratchDatabase(server) as db:
        ours = latency_sa_river(db.url, opts.samples)
    results["latency_ceiling_ms"] = {"p50": pct(raw, 0.5), "p99": pct(raw, 0.99)}
    results["latency_ms"] = {"p50": pct(ours, 0.5), "p99": pct(ours, 0.99)}
    if opts.json:
        print(json.dumps(results, indent=2))
        return
    ratio = results["burn_down"] / results["burn_down_ceiling"]
    print(f"{'workload':<22}{'sa_river':>14}{'ceiling':>14}{'ratio':>8}")
    print(
        f"{'burn-down jobs/s':<22}{results['burn_down']:>14,.0f}"
        f"{results['burn_down_ceiling']:>14,.0f}{ratio:>8.2f}"
    )
    for p in ("p50", "p99"):
        ours_ms, raw_ms = results["latency_ms"][p], results["latency_ceiling_ms"][p]
        print(f"{'pickup ' + p + ' ms':<22}{ours_ms:>14.1f}{raw_ms:>14.1f}{ours_ms / raw_ms:>8.2f}")
    print(f"(n={opts.n}, concurrency={opts.concurrency}, latency samples={opts.samples})")


if __name__ == "__main__":
    main()
