"""Smoke test of ``python -m sa_river bench``: every workload produces a figure and a ratio.

Tiny sizes keep it quick; the numbers themselves are never asserted (timings never go into
tests), only that each row is there and is a finite positive number.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

from sqlalchemy.engine import URL

from sa_river.tools.bench.report import WORKLOADS

EXPECTED_ROWS = {
    "enqueue-single",
    "enqueue-batch",
    "enqueue-unique",
    "enqueue-copy",
    "burn-down",
    "continuous",
    "latency p50",
    "latency p95",
    "latency p99",
}


def test_bench_smoke(server_url: URL) -> None:
    url = server_url.render_as_string(hide_password=False)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sa_river", "bench", "-n", "200", "--duration", "1"),
            *("--rounds", "1", "--json", "--database-url", url),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    rows = {r["workload"]: r for r in report["results"]}
    assert set(rows) == EXPECTED_ROWS
    assert {w for w in WORKLOADS if w != "latency"} <= set(rows)
    for name, row in rows.items():
        for key in ("sa_river", "ceiling", "ratio"):
            value = row[key]
            assert isinstance(value, int | float), (name, key, value)
            assert math.isfinite(value), (name, key, value)
            assert value > 0, (name, key, value)
    # With 200 rows a sequential scan is the cheaper plan; test_fetch_plan.py checks the index.
    assert report["fetch_plan"], "the fetch statement's EXPLAIN is reported"
    assert "burn-down" in done.stderr  # progress went to stderr
