"""Work benchmarks (burn-down, continuous, pickup latency) beside the raw-SQL ceiling: a thin
wrapper.

    .venv/bin/python benchmarks/work_bench.py [--database-url URL] [-n 20000] \
        [--processes 2] [--concurrency 100] [--retained 1000000]

Runs ``python -m sa_river bench`` with the work workloads only (``burn-down``, ``continuous``,
``latency``); every other option is passed on. The workloads and their ceilings are described
in :mod:`sa_river.tools.bench.workloads`.
"""

from __future__ import annotations

import sys

from sa_river.cli import main

WORKLOADS = "burn-down,continuous,latency"

if __name__ == "__main__":
    sys.exit(main(["bench", "--workloads", WORKLOADS, *sys.argv[1:]]))
