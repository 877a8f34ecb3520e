"""Reading and steering jobs of ``river_job`` (internal): get, list, cancel, retry and delete one
job or every job a :class:`JobFilter` matches, and the counts behind ``python -m sa_river
status``, the demo and the metrics.

Each change is one statement, the bulk ones set-based: a single job and a filter's jobs go
through the same statement builder (:func:`_cancel_statement`, :func:`_retry_statement`), so
their semantics cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    any_,
    case,
    cast,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import bindparam

from sa_river.models import RiverJob
from sa_river.queries.job_row import job_row_from_row
from sa_river.queries.notify import TOPIC_CONTROL, channel_expr, notify_finalized
from sa_river.types import FINALIZED_STATES, JobRow, JobState

__all__ = [
    "ORDER_COLUMNS",
    "JobFilter",
    "OrderBy",
    "job_cancel",
    "job_cancel_many",
    "job_count_by_queue_and_state",
    "job_count_by_state",
    "job_count_with_errors",
    "job_delete",
    "job_delete_many",
    "job_get",
    "job_list",
    "job_list_where",
    "job_retry",
    "job_retry_many",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]

OrderBy = Literal["id", "created_at", "scheduled_at", "finalized_at", "priority"]
ORDER_COLUMNS: tuple[OrderBy, ...] = (
    "id",
    "created_at",
    "scheduled_at",
    "finalized_at",
    "priority",
)
"""What a list can be ordered by; the job id breaks ties."""


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a list or a bulk change applies to: those meeting every condition given.

    ``None`` sets no condition. ``ids``, ``states``, ``queues``, ``kinds`` and ``priorities``
    match a job whose column is any of their values (an empty one matches no job); ``tags``
    matches a job that has every one of them (``tags @> ...``). Time bounds are half-open,
    ``after <= column < before``; a ``finalized_*`` bound leaves out the jobs not finalised.
    Values arrive validated (see ``sa_river.control``); each is sent as a bound parameter.
    """

    ids: tuple[int, ...] | None = None
    states: tuple[JobState, ...] | None = None
    queues: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    priorities: tuple[int, ...] | None = None
    tags: tuple[str, ...] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    scheduled_after: datetime | None = None
    scheduled_before: datetime | None = None
    finalized_after: datetime | None = None
    finalized_before: datetime | None = None

    def is_empty(self) -> bool:
        """Whether no condition at all is set (the filter matches every job)."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions on ``river_job``, one per filter set (all must hold)."""
        c = job_table.c
        conditions: list[ColumnElement[bool]] = []
        if self.ids is not None:
            conditions.append(c.id == any_(literal(list(self.ids), ARRAY(BigInteger))))
        if self.states is not None:
            conditions.append(c.state.in_(self.states) if self.states else false())
        if self.queues is not None:
            conditions.append(c.queue == any_(literal(list(self.queues), ARRAY(Text))))
        if self.kinds is not None:
            conditions.append(c.kind == any_(literal(list(self.kinds), ARRAY(Text))))
        if self.priorities is not None:
            conditions.append(
                c.priority == any_(literal(list(self.priorities), ARRAY(SmallInteger)))
            )
        if self.tags is not None:
            # varchar[] @> varchar[] (no length: a cast to varchar(255) would cut a long tag).
            conditions.append(c.tags.op("@>")(literal(list(self.tags), ARRAY(String()))))
        for column, after, before in (
            (c.created_at, self.created_after, self.created_before),
            (c.scheduled_at, self.scheduled_after, self.scheduled_before),
            (c.finalized_at, self.finalized_after, self.finalized_before),
        ):
            if after is not None:
                conditions.append(column >= after)
            if before is not None:
                conditions.append(column < before)
        return conditions


def job_get(conn: Connection, job_id: int) -> JobRow | None:
    """The job with ``job_id``, or ``None``."""
    row = conn.execute(select(job_table).where(job_table.c.id == job_id)).first()
    return None if row is None else job_row_from_row(row)


_RUNNING = JobState.RUNNING


def _cancel_statement(where: Sequence[ColumnElement[bool]], returning: Sequence[Any]) -> Any:
    """Cancel the jobs meeting every condition of ``where``: those not running at once,
    running ones cooperatively; finalised ones are left alone. Selects ``returning`` (which
    must include ``id``, ``queue`` and ``state``) of each job reached, with the notifications
    sent."""
    is_running = job_table.c.state == _RUNNING
    updated = (
        update(job_table)
        .where(*where, job_table.c.state.notin_(sorted(FINALIZED_STATES)))
        .values(
            state=case((is_running, job_table.c.state), else_=JobState.CANCELLED),
            finalized_at=case((is_running, job_table.c.finalized_at), else_=func.now()),
            metadata=job_table.c.metadata.op("||")(
                func.jsonb_build_object(literal("cancel_attempted_at", Text), func.now())
            ),
        )
        .returning(*returning)
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
    # Jobs cancelled at once are finalised: whoever waits for them (wait_for) hears of it.
    finalized = notify_finalized(updated)
    return select(updated, notified.label("notified"), finalized.label("finalized"))


_CANCEL = _cancel_statement(
    [job_table.c.id == bindparam("cancel_id", type_=BigInteger)], list(job_table.c)
)


def job_cancel(conn: Connection, job_id: int) -> JobRow | None:
    """Cancel a job: at once if it is not running, cooperatively (NOTIFY) if it is.

    A finalised job is returned unchanged; ``None`` if there is no such job.
    """
    row = conn.execute(_CANCEL, {"cancel_id": job_id}).first()
    return job_row_from_row(row) if row is not None else job_get(conn, job_id)


def job_cancel_many(conn: Connection, where: JobFilter) -> list[int]:
    """Cancel every job ``where`` matches as :func:`job_cancel` cancels one (one statement,
    one notification per unfinished job); the ids reached, running or not, in order."""
    statement = _cancel_statement(
        where.conditions(), [job_table.c.id, job_table.c.queue, job_table.c.state]
    )
    return sorted(row.id for row in conn.execute(statement))


def _retry_statement(where: Sequence[ColumnElement[bool]]) -> Any:
    """Make the jobs meeting every condition of ``where`` available now, as River's JobRetry
    does: not a running job, nor an available one already due (it would only lose its place
    in the queue); a job out of attempts (a discarded one) gets one more."""
    c = job_table.c
    return (
        update(job_table)
        .where(
            *where,
            c.state != _RUNNING,
            ~and_(c.state == JobState.AVAILABLE, c.scheduled_at < func.now()),
        )
        .values(
            state=JobState.AVAILABLE,
            scheduled_at=func.now(),
            finalized_at=None,
            max_attempts=case((c.attempt >= c.max_attempts, c.attempt + 1), else_=c.max_attempts),
        )
    )


_RETRY = _retry_statement([job_table.c.id == bindparam("retry_id", type_=BigInteger)]).returning(
    *job_table.c
)


def job_retry(conn: Connection, job_id: int) -> JobRow | None:
    """Make a job that is not running available now; a discarded job gets one more attempt.

    A running job, and an available one already due, are returned unchanged; ``None`` if
    there is no such job.
    """
    row = conn.execute(_RETRY, {"retry_id": job_id}).first()
    return job_row_from_row(row) if row is not None else job_get(conn, job_id)


def job_retry_many(conn: Connection, where: JobFilter) -> list[int]:
    """Retry every job ``where`` matches as :func:`job_retry` retries one (one statement); the
    ids of the jobs made available, in order."""
    statement = _retry_statement(where.conditions()).returning(job_table.c.id)
    return sorted(row.id for row in conn.execute(statement))


def _delete_statement() -> Any:
    # Lock the job first, as River's JobDelete does: FOR UPDATE waits for a transaction that
    # is changing it and then reads its latest state, so a refusal names the state the job
    # really has (a plain read would give the state as of the statement's start).
    locked = (
        select(job_table.c.id, job_table.c.state)
        .where(job_table.c.id == bindparam("delete_id", type_=BigInteger))
        .with_for_update()
        .cte("locked")
    )
    deleted = (
        delete(job_table)
        .where(job_table.c.id.in_(select(locked.c.id).where(locked.c.state != _RUNNING)))
        .returning(*job_table.c)
        .cte("deleted")
    )
    return select(locked.c.state.label("current_state"), deleted).select_from(
        locked.outerjoin(deleted, deleted.c.id == locked.c.id)
    )


_DELETE = _delete_statement()


def job_delete(conn: Connection, job_id: int) -> JobRow | JobState | None:
    """Delete a job that is not running: its row as it was; for a running job, which is left
    in place, its state; ``None`` if there is no such job."""
    row = conn.execute(_DELETE, {"delete_id": job_id}).first()
    if row is None:
        return None
    if row.id is None:
        return JobState(row.current_state)
    return job_row_from_row(row)


def job_delete_many(conn: Connection, where: JobFilter, *, limit: int | None = None) -> list[int]:
    """Delete every job ``where`` matches except running ones (one statement), or the
    ``limit`` lowest ids of them; the ids deleted, in order."""
    conditions = [*where.conditions(), job_table.c.state != _RUNNING]
    if limit is None:
        statement = delete(job_table).where(*conditions)
    else:
        # FOR UPDATE re-reads a row another transaction changed and checks it again, so a job
        # that started running meanwhile is not chosen.
        chosen = (
            select(job_table.c.id)
            .where(*conditions)
            .order_by(job_table.c.id)
            .limit(limit)
            .with_for_update()
            .cte("chosen")
        )
        statement = delete(job_table).where(job_table.c.id.in_(select(chosen.c.id)))
    return sorted(row.id for row in conn.execute(statement.returning(job_table.c.id)))


def job_list(
    conn: Connection,
    *,
    states: Sequence[JobState] | None = None,
    queues: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[JobRow]:
    """Jobs matching the filters in id order, ``limit`` at a time after ``after_id`` (keyset).

    An empty or missing filter does not filter (see :func:`job_list_where` for the rest).
    """
    where = JobFilter(
        states=tuple(JobState(s) for s in states) if states else None,
        queues=tuple(queues) if queues else None,
        kinds=tuple(kinds) if kinds else None,
    )
    after = None if after_id is None else (after_id, after_id)
    return job_list_where(conn, where, after=after, limit=limit)


def job_list_where(
    conn: Connection,
    where: JobFilter,
    *,
    order_by: OrderBy = "id",
    descending: bool = False,
    after: tuple[Any, int] | None = None,
    limit: int = 100,
) -> list[JobRow]:
    """Jobs ``where`` matches, ordered by ``order_by`` then id (both descending if asked),
    ``limit`` at a time: ``after`` is the ``(order_by value, id)`` of the last job of the
    previous page (keyset paging).

    ``finalized_at`` is null for jobs not finalised: they come after every finalised job in
    either direction, in id order.
    """
    column = job_table.c[order_by]
    key = job_table.c.id.desc() if descending else job_table.c.id.asc()
    if order_by == "id":
        ordering = [key]
    elif order_by == "finalized_at":
        ordering = [(column.desc() if descending else column.asc()).nulls_last(), key]
    else:
        ordering = [column.desc() if descending else column.asc(), key]
    query = select(job_table).where(*where.conditions()).order_by(*ordering).limit(limit)
    if after is not None:
        query = query.where(_after(order_by, descending, *after))
    return [job_row_from_row(r) for r in conn.execute(query)]


def _after(order_by: OrderBy, descending: bool, value: Any, after_id: int) -> ColumnElement[bool]:
    """The keyset condition: jobs that come after the one keyed ``(value, after_id)``."""
    c = job_table.c
    column = c[order_by]
    last_id = literal(after_id, BigInteger)

    def past(left: Any, right: Any) -> ColumnElement[bool]:
        return left < right if descending else left > right  # type: ignore[no-any-return]

    if order_by == "id":
        return past(c.id, last_id)
    if value is None:  # finalized_at, in the tail of jobs not finalised, which comes last
        return and_(column.is_(None), past(c.id, last_id))
    later = past(tuple_(column, c.id), tuple_(literal(value, column.type), last_id))
    return or_(later, column.is_(None)) if order_by == "finalized_at" else later


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
