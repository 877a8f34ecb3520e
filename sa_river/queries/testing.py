"""Statements only :mod:`sa_river.testing` runs (internal).

The test helpers otherwise use the real statements: the scheduler's
:func:`~sa_river.queries.maintenance.job_schedule`, the worker's
:func:`~sa_river.queries.job_fetch.job_get_available` and
:func:`~sa_river.queries.job_outcome.job_set_state_if_running_many`. What is here exists
because tests need something a running system never does: time that moves faster than the
database's clock (:func:`job_bring_due`), a list of queues to drain
(:func:`job_queues_with_available`), the kinds to name in a failed assertion
(:func:`job_count_by_kind`), and working exactly the jobs an insert just wrote
(:func:`job_get_available_by_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Connection, Table, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP
from sqlalchemy.sql import bindparam

from sa_river.models import RiverJob
from sa_river.queries.job_fetch import running_values
from sa_river.queries.job_row import job_row_from_row
from sa_river.types import JobRow, JobState

__all__ = [
    "job_bring_due",
    "job_count_by_kind",
    "job_get_available_by_ids",
    "job_queues_with_available",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]

_BRING_DUE = (
    update(job_table)
    .where(
        job_table.c.state == JobState.AVAILABLE,
        job_table.c.scheduled_at > func.now(),
        job_table.c.scheduled_at <= bindparam("until", type_=TIMESTAMP(timezone=True)),
    )
    .values(scheduled_at=func.now())
)


def job_bring_due(conn: Connection, *, until: datetime) -> int:
    """Move ``scheduled_at`` of available jobs due by ``until`` back to ``now()``; how many.

    The fetch compares ``scheduled_at`` with the database's ``now()``, which a test cannot move:
    this makes a job that is due on a test's moved clock due in the database too.
    """
    return conn.execute(_BRING_DUE, {"until": until}).rowcount


def job_queues_with_available(
    conn: Connection, *, queues: Sequence[str] | None = None
) -> list[str]:
    """Queues holding available jobs due now, most urgent first (best priority, then oldest).

    Paused queues are included: the fetch itself skips them.
    """
    query = (
        select(job_table.c.queue)
        .where(job_table.c.state == JobState.AVAILABLE, job_table.c.scheduled_at <= func.now())
        .group_by(job_table.c.queue)
        .order_by(
            func.min(job_table.c.priority), func.min(job_table.c.scheduled_at), job_table.c.queue
        )
    )
    if queues is not None:
        query = query.where(job_table.c.queue.in_(list(queues)))
    return [str(q) for q in conn.execute(query).scalars()]


def job_count_by_kind(conn: Connection) -> dict[str, int]:
    """How many jobs of each kind there are, by kind."""
    query = (
        select(job_table.c.kind, func.count()).group_by(job_table.c.kind).order_by(job_table.c.kind)
    )
    return {str(kind): int(n) for kind, n in conn.execute(query)}


_FETCH_BY_IDS = (
    update(job_table)
    .where(
        job_table.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))),
        job_table.c.state == JobState.AVAILABLE,
    )
    .values(**running_values())
    .returning(*job_table.c)
)


def job_get_available_by_ids(
    conn: Connection, ids: Sequence[int], *, client_id: str
) -> list[JobRow]:
    """Mark the given jobs running for ``client_id``, as the fetch would; those still available.

    Ignores queue pauses and ``scheduled_at``: this is how an inline insert runs its own jobs at
    once. Rows come back in id order.
    """
    if not ids:
        return []
    rows = conn.execute(_FETCH_BY_IDS, {"ids": list(ids), "client_id": client_id}).all()
    return sorted((job_row_from_row(r) for r in rows), key=lambda row: row.id)
