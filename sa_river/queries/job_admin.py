"""Reading and steering single jobs of ``river_job`` (internal): get, list, cancel, retry and the
counts behind ``python -m sa_river status``, the demo and the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Table,
    Text,
    case,
    cast,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import bindparam

from sa_river.models import RiverJob
from sa_river.queries.job_row import job_row_from_row
from sa_river.queries.notify import TOPIC_CONTROL, channel_expr
from sa_river.types import FINALIZED_STATES, JobRow, JobState

__all__ = [
    "job_cancel",
    "job_count_by_queue_and_state",
    "job_count_by_state",
    "job_count_with_errors",
    "job_get",
    "job_list",
    "job_retry",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]


def job_get(conn: Connection, job_id: int) -> JobRow | None:
    """The job with ``job_id``, or ``None``."""
    row = conn.execute(select(job_table).where(job_table.c.id == job_id)).first()
    return None if row is None else job_row_from_row(row)


def _cancel_statement() -> Any:
    is_running = job_table.c.state == JobState.RUNNING
    updated = (
        update(job_table)
        .where(
            job_table.c.id == bindparam("cancel_id", type_=BigInteger),
            job_table.c.state.notin_(sorted(FINALIZED_STATES)),
        )
        .values(
            state=case((is_running, job_table.c.state), else_=JobState.CANCELLED),
            finalized_at=case((is_running, job_table.c.finalized_at), else_=func.now()),
            metadata=job_table.c.metadata.op("||")(
                func.jsonb_build_object(literal("cancel_attempted_at", Text), func.now())
            ),
        )
        .returning(*job_table.c)
        .cte("updated")
    )
    # River's payload, byte for byte, sent as River sends it: for every job the cancel found
    # unfinished, running or not (a producer that does not run it ignores it). River's
    # producers act only on a cancel that names their queue.
    notified = select(
        func.count(
            func.pg_notify(
                channel_expr(TOPIC_CONTROL),
                cast(
                    func.json_build_object(
                        literal("action", Text),
                        literal("cancel", Text),
                        literal("job_id", Text),
                        updated.c.id,
                        literal("queue", Text),
                        updated.c.queue,
                    ),
                    Text,
                ),
            )
        )
    ).scalar_subquery()
    return select(updated, notified.label("notified"))


_CANCEL = _cancel_statement()


def job_cancel(conn: Connection, job_id: int) -> JobRow | None:
    """Cancel a job: at once if it is not running, cooperatively (NOTIFY) if it is.

    A finalised job is returned unchanged; ``None`` if there is no such job.
    """
    row = conn.execute(_CANCEL, {"cancel_id": job_id}).first()
    return job_row_from_row(row) if row is not None else job_get(conn, job_id)


def job_retry(conn: Connection, job_id: int) -> JobRow | None:
    """Make a job that is not running available now; a discarded job gets one more attempt."""
    row = conn.execute(
        update(job_table)
        .where(job_table.c.id == job_id, job_table.c.state != JobState.RUNNING)
        .values(
            state=JobState.AVAILABLE,
            scheduled_at=func.now(),
            finalized_at=None,
            max_attempts=case(
                (
                    job_table.c.attempt >= job_table.c.max_attempts,
                    job_table.c.attempt + 1,
                ),
                else_=job_table.c.max_attempts,
            ),
        )
        .returning(*job_table.c)
    ).first()
    return job_row_from_row(row) if row is not None else job_get(conn, job_id)


def job_list(
    conn: Connection,
    *,
    states: Sequence[JobState] | None = None,
    queues: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[JobRow]:
    """Jobs matching the filters in id order, ``limit`` at a time after ``after_id`` (keyset)."""
    query = select(job_table).order_by(job_table.c.id).limit(limit)
    if states:
        query = query.where(job_table.c.state.in_([JobState(s) for s in states]))
    if queues:
        query = query.where(job_table.c.queue.in_(list(queues)))
    if kinds:
        query = query.where(job_table.c.kind.in_(list(kinds)))
    if after_id is not None:
        query = query.where(job_table.c.id > after_id)
    return [job_row_from_row(r) for r in conn.execute(query)]


def job_count_by_state(
    conn: Connection, *, kinds: Sequence[str] | None = None, ids: Sequence[int] | None = None
) -> dict[JobState, int]:
    """How many jobs are in each state (of the given kinds, or among the given ids)."""
    query = select(job_table.c.state, func.count()).group_by(job_table.c.state)
    if kinds:
        query = query.where(job_table.c.kind.in_(list(kinds)))
    if ids is not None:
        query = query.where(job_table.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))))
    return {JobState(state): int(n) for state, n in conn.execute(query, {"ids": list(ids or ())})}


def job_count_with_errors(conn: Connection, ids: Sequence[int]) -> int:
    """How many of the given jobs have at least one recorded error."""
    query = select(func.count()).where(
        job_table.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))),
        job_table.c.errors.isnot(None),
    )
    return int(conn.execute(query, {"ids": list(ids)}).scalar_one())


def job_count_by_queue_and_state(
    conn: Connection, *, states: Sequence[JobState] | None = None
) -> dict[str, dict[JobState, int]]:
    """``queue -> state -> count`` of the jobs (in the given ``states``); absent means zero.

    For ``python -m sa_river status`` (every state) and the metrics (the unfinalized states).
    Cost: ``state`` leads the ``river_job_prioritized_fetching_index`` (``state, queue,
    priority, scheduled_at, id``), so with ``states`` PostgreSQL reads just those states'
    entries of that index (an index-only scan where the visibility map allows): counting the
    unfinalized states never reads the finalized jobs, however many ``completed`` rows the
    table keeps, and costs with the backlog of unfinished jobs, not with the table.
    """
    query = (
        select(job_table.c.state, job_table.c.queue, func.count())
        # The index's column order, so the counts can be read off it in order.
        .group_by(job_table.c.state, job_table.c.queue)
    )
    if states is not None:
        query = query.where(job_table.c.state.in_([JobState(s) for s in states]))
    counts: dict[str, dict[JobState, int]] = {}
    for state, queue, n in conn.execute(query):
        counts.setdefault(queue, {})[JobState(state)] = int(n)
    return counts
