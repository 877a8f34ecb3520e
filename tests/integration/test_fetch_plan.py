"""The fetch stays index-backed with many finalised rows retained.

About 20,000 completed rows and a few available ones, ANALYZEd: the plan of the fetch
statement locks through ``river_job_prioritized_fetching_index``, never a table scan.
"""

from __future__ import annotations

from sqlalchemy import Engine

import sa_river
from sa_river.tools.bench import sql as bench_sql
from sa_river.tools.bench.plan import fetch_plan_index, job_fetch_plan


def test_fetch_uses_the_prioritized_fetching_index_with_retained_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(bench_sql.FILL_RETAINED, (20_000,))
    sa_river.insert_many(engine, [("noop", {"i": i}) for i in range(50)])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE river_job")
        plan = job_fetch_plan(conn, queue="default", limit=100)
    assert fetch_plan_index(plan) == "river_job_prioritized_fetching_index", "\n".join(plan)
    assert not any("Seq Scan on river_job" in line for line in plan), "\n".join(plan)


def test_fetch_plan_index_reads_the_plan_shapes() -> None:
    assert fetch_plan_index(["Seq Scan on river_job  (cost=0.00..1.00 rows=1 width=8)"]) is None
    assert (
        fetch_plan_index(["  ->  Bitmap Index Scan on river_job_kind  (cost=0.00..4.00 rows=1)"])
        == "river_job_kind"
    )
    assert (
        fetch_plan_index(
            [
                "  ->  Index Scan using river_queue_pkey on river_queue  (cost=0.15..8.17)",
                "  ->  Index Scan using river_job_prioritized_fetching_index on river_job "
                "river_job_1  (cost=0.15..8.17 rows=1 width=24)",
            ]
        )
        == "river_job_prioritized_fetching_index"
    )
