"""Statements of the periodic job enqueuer (internal).

A periodic run is an ordinary unique job whose metadata holds ``{"periodic_job": <name>}``; the
latest run already enqueued is therefore ``max(scheduled_at)`` over the jobs of that kind
containing that metadata, which the ``river_job_kind`` b-tree and the ``river_job_metadata_index``
GIN index (``@>``) answer without a scan of the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, Text, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import bindparam

from sa_river.models import RiverJob

__all__ = ["PERIODIC_METADATA_KEY", "periodic_last_runs"]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]

PERIODIC_METADATA_KEY = "periodic_job"
"""The metadata key naming the periodic job a run belongs to."""


def _last_runs_statement() -> Any:
    wanted = (
        func.unnest(
            bindparam("kinds", type_=ARRAY(Text)),
            bindparam("names", type_=ARRAY(Text)),
        )
        .table_valued("kind", "name", with_ordinality="ordinality")
        .render_derived(name="wanted")
    )
    last_run = (
        select(func.max(job_table.c.scheduled_at))
        .where(
            job_table.c.kind == wanted.c.kind,
            job_table.c.metadata.contains(
                func.jsonb_build_object(literal(PERIODIC_METADATA_KEY, Text), wanted.c.name)
            ),
        )
        .correlate(wanted)
        .scalar_subquery()
    )
    return (
        select(func.now().label("now"), last_run.label("last_run"))
        .select_from(wanted)
        .order_by(wanted.c.ordinality)
    )


_LAST_RUNS = _last_runs_statement()
_NOW = select(func.now())


def periodic_last_runs(
    conn: Connection, jobs: Sequence[tuple[str, str]]
) -> tuple[datetime, list[datetime | None]]:
    """The database's ``now()`` and, for each ``(kind, name)``, its latest enqueued run time.

    ``None`` for a periodic job that has no run in the table. One round trip for all jobs.
    """
    if not jobs:
        return conn.execute(_NOW).scalar_one(), []
    rows = conn.execute(
        _LAST_RUNS, {"kinds": [k for k, _ in jobs], "names": [n for _, n in jobs]}
    ).all()
    return rows[0].now, [r.last_run for r in rows]
