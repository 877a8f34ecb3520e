"""Statements behind the metrics of ``sa_river.contrib.prometheus`` (internal).

The job counts themselves come from
:func:`~sa_river.queries.job_admin.job_count_by_queue_and_state`, limited to
:data:`UNFINALIZED_STATES`.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, select

from sa_river.models import RiverQueue
from sa_river.types import FINALIZED_STATES, JobState

__all__ = ["UNFINALIZED_STATES", "queue_list_names"]

queue_table: Table = RiverQueue.__table__  # type: ignore[assignment]

UNFINALIZED_STATES: tuple[JobState, ...] = tuple(
    sorted(s for s in JobState if s not in FINALIZED_STATES)
)
"""The states a job is in until it is finalized (completed, cancelled or discarded)."""


def queue_list_names(conn: Connection) -> list[str]:
    """The names of the queues in ``river_queue`` (those workers registered), sorted."""
    return list(conn.execute(select(queue_table.c.name).order_by(queue_table.c.name)).scalars())
