"""The ``EXPLAIN`` of sa_river's own fetch statement, and the index its locking scan uses.

The bench prints the plan beside its table (with ``--retained N`` finalised rows it shows that
fetching stays index-backed at scale), and a test asserts the index by reading the same plan.
The statement explained is the worker's own (:func:`~sa_river.queries.job_fetch.
fetch_statement`), never a copy, so the plan shown is the plan the workers get.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from sa_river.queries.job_fetch import fetch_statement
from sa_river.types import JobState

__all__ = ["fetch_plan_index", "job_fetch_plan"]


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
