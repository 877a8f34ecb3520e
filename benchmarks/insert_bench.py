"""Enqueue throughput of sa_river beside a raw psycopg ceiling: a thin wrapper.

    .venv/bin/python benchmarks/insert_bench.py [--database-url URL] [-n 20000] [--rounds 3]

Runs ``python -m sa_river bench`` with the enqueue workloads only (``enqueue-single``,
``enqueue-batch``, ``enqueue-unique``, ``enqueue-copy``); every other option is passed on.
The workloads and their ceilings are described in :mod:`sa_river.tools.bench.workloads`.
"""

from __future__ import annotations

import sys

from sa_river.cli import main

WORKLOADS = "enqueue-single,enqueue-batch,enqueue-unique,enqueue-copy"

if __name__ == "__main__":
    sys.exit(main(["bench", "--workloads", WORKLOADS, *sys.argv[1:]]))
