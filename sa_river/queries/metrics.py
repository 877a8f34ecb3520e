"""Statements behind the metrics of ``sa_river.contrib.prometheus`` (internal).

Cost: :func:`job_count_unfinalized` counts only the jobs not yet finalized (``available``,
``pending``, ``retryable``, ``running``, ``scheduled``). ``state`` leads the
``river_job_prioritized_fetching_index`` (``state, queue, priority, scheduled_at, id``), so
PostgreSQL reads just those states' entries of that index (an index-only scan where the
visibility map allows) and never the finalized jobs, however many ``completed`` rows the
table keeps. Its cost grows with the backlog of unfinished jobs, not with the table.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, func, select

from sa_river.models import RiverJob, RiverQueue
from sa_river.types import JobState

__all__ = ["UNFINALIZED_STATES", "job_count_unfinalized", "queue_list_names"]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]
queue_table: Table = RiverQueue.__table__  # type: ignore[assignment]

UNFINALIZED_STATES: tuple[JobState, ...] = (
    JobState.AVAILABLE,
    JobState.PENDING,
    JobState.RETRYABLE,
    JobState.RUNNING,
    JobState.SCHEDULED,
)
"""The states a job is in until it is finalized (completed, cancelled or discarded)."""

_COUNT_UNFINALIZED = (
    select(job_table.c.state, job_table.c.queue, func.count())
    .where(job_table.c.state.in_(UNFINALIZED_STATES))
    # The index's column order, so the counts can be read off it in order.
    .group_by(job_table.c.state, job_table.c.queue)
)


def job_count_unfinalized(conn: Connection) -> dict[str, dict[JobState, int]]:
    """``queue -> state -> count`` of the jobs not yet finalized; absent means zero."""
    counts: dict[str, dict[JobState, int]] = {}
    for state, queue, n in conn.execute(_COUNT_UNFINALIZED):
        counts.setdefault(queue, {})[JobState(state)] = int(n)
    return counts


def queue_list_names(conn: Connection) -> list[str]:
    """The names of the queues in ``river_queue`` (those workers registered), sorted."""
    return list(conn.execute(select(queue_table.c.name).order_by(queue_table.c.name)).scalars())
