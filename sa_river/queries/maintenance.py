"""Statements of the leader-only maintenance services (internal).

One function per service round: :func:`job_schedule` (scheduler), :func:`job_rescue` and
:func:`client_delete_stale` (rescuer), :func:`job_delete_finalized` (cleaner) and
:func:`queue_delete_idle` (queue cleaner). Each locks what it changes with ``FOR UPDATE SKIP
LOCKED``, so it never waits on a worker or a user holding a job, and each changes at most
``limit`` rows per call so that a large backlog is worked through in short transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Float,
    Integer,
    Table,
    Text,
    and_,
    case,
    cast,
    delete,
    func,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import bindparam

from sa_river.models import JOB_STATE_ENUM, RiverJob, RiverQueue, SaRiverClient
from sa_river.queries.notify import notify_insert
from sa_river.types import FINALIZED_STATES, JobState

__all__ = [
    "RESCUED_STUCK",
    "RESCUED_WORKER_LOST",
    "UNIQUE_CONFLICT_METADATA",
    "ScheduleResult",
    "client_delete_stale",
    "job_delete_finalized",
    "job_rescue",
    "job_schedule",
    "queue_delete_idle",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]
queue_table: Table = RiverQueue.__table__  # type: ignore[assignment]
client_table: Table = SaRiverClient.__table__  # type: ignore[assignment]

UNIQUE_CONFLICT_METADATA = {"unique_key_conflict": "scheduler_discarded"}
"""Merged into the metadata of a job the scheduler discards as a unique duplicate (River's)."""

RESCUED_WORKER_LOST = "rescued: worker lost"
RESCUED_STUCK = "rescued: stuck"


def _seconds(name: str) -> ColumnElement[Any]:
    """An ``interval`` of the bound number of seconds ``name``."""
    return func.make_interval(0, 0, 0, 0, 0, 0, bindparam(name, type_=Float))


def _state(state: JobState) -> ColumnElement[Any]:
    return cast(literal(state.value, Text), JOB_STATE_ENUM)


def _in_bitmask(bitmask: ColumnElement[Any], state: ColumnElement[Any]) -> ColumnElement[bool]:
    return func.river_job_state_in_bitmask(bitmask, state, type_=Boolean)


# --- scheduler -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleResult:
    """What one :func:`job_schedule` call changed."""

    available_ids: list[int]
    available_queues: list[str]
    discarded_ids: list[int]

    @property
    def changed(self) -> int:
        return len(self.available_ids) + len(self.discarded_ids)


def _schedule_statement() -> Any:
    j = job_table
    # 1. Lock the due jobs, most urgent first; rows a worker or user holds are skipped.
    due = (
        select(j.c.id, j.c.state, j.c.priority, j.c.scheduled_at, j.c.unique_key, j.c.unique_states)
        .where(
            j.c.state.in_([JobState.RETRYABLE, JobState.SCHEDULED]),
            j.c.scheduled_at <= func.now() + _seconds("sched_lookahead"),
        )
        .order_by(j.c.priority, j.c.scheduled_at, j.c.id)
        .limit(bindparam("sched_limit", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    keyed = and_(due.c.unique_key.isnot(None), due.c.unique_states.isnot(None))
    # A job enters the unique index as ``available`` only when its bitmask covers that state.
    unique_when_available = and_(
        keyed, _in_bitmask(due.c.unique_states, _state(JobState.AVAILABLE))
    )
    # ... and holds its key already when its current state is covered.
    holds_key = and_(keyed, _in_bitmask(due.c.unique_states, due.c.state))
    # 2. Rank due jobs sharing a key. A candidate that already holds the key wins (it may keep
    # it; another one taking it first would collide with it mid-statement), then the most
    # urgent one.
    ranked = select(
        due.c.id,
        unique_when_available.label("is_unique"),
        func.row_number()
        .over(
            partition_by=[unique_when_available, due.c.unique_key],
            order_by=[holds_key.desc(), due.c.priority, due.c.scheduled_at, due.c.id],
        )
        .label("key_rank"),
        due.c.unique_key,
        due.c.unique_states,
    ).cte("ranked")
    # 3. A unique candidate conflicts when another due job with its key ranks first, or when a
    # live row other than itself holds the key (``id <> candidate.id``: a job never conflicts
    # with itself). The
    # predicate repeats the unique index's, so the probe is an index lookup.
    other = j.alias("holder")
    held_by_another = (
        select(literal(1))
        .select_from(other)
        .where(
            other.c.unique_key == ranked.c.unique_key,
            other.c.id != ranked.c.id,
            other.c.unique_key.isnot(None),
            other.c.unique_states.isnot(None),
            _in_bitmask(other.c.unique_states, other.c.state),
        )
        .exists()
    )
    decided = select(
        ranked.c.id,
        and_(ranked.c.is_unique, or_(ranked.c.key_rank > 1, held_by_another)).label("conflict"),
        _in_bitmask(ranked.c.unique_states, _state(JobState.DISCARDED)).label("keeps_key"),
    ).cte("decided")
    discarded_metadata = j.c.metadata.op("||")(
        func.jsonb_build_object(
            *(literal(part, Text) for item in UNIQUE_CONFLICT_METADATA.items() for part in item)
        )
    )
    updated = (
        update(j)
        # A duplicate whose own bitmask covers ``discarded`` would collide as discarded too: it
        # stays where it is until the holder lets the key go, rather than failing the whole
        # batch on every run.
        .where(j.c.id == decided.c.id, not_(and_(decided.c.conflict, decided.c.keeps_key)))
        .values(
            state=case(
                (decided.c.conflict, _state(JobState.DISCARDED)),
                else_=_state(JobState.AVAILABLE),
            ),
            finalized_at=case((decided.c.conflict, func.now()), else_=j.c.finalized_at),
            metadata=case((decided.c.conflict, discarded_metadata), else_=j.c.metadata),
        )
        .returning(j.c.id, j.c.queue, j.c.state)
        .cte("updated")
    )
    # 4. One notification per queue that got newly available jobs, sent on commit.
    woken = (
        select(updated.c.queue)
        .where(updated.c.state == JobState.AVAILABLE)
        .distinct()
        .subquery("woken")
    )
    notified = select(func.count(notify_insert(woken.c.queue, by_scheduler=True))).scalar_subquery()
    return select(updated.c.id, updated.c.queue, updated.c.state, notified.label("notified"))


_SCHEDULE = _schedule_statement()


def job_schedule(conn: Connection, *, lookahead_seconds: float, limit: int) -> ScheduleResult:
    """Make up to ``limit`` due ``scheduled``/``retryable`` jobs available, in one statement.

    Due means ``scheduled_at <= now() + lookahead``: a job made available early still waits
    for its ``scheduled_at`` at fetch time. A unique job whose key another live job holds, or
    that shares its key with a more urgent due job, is discarded with
    :data:`UNIQUE_CONFLICT_METADATA` instead. Each queue with newly available jobs is notified
    once, in ``conn``'s transaction.
    """
    rows = conn.execute(
        _SCHEDULE, {"sched_lookahead": float(lookahead_seconds), "sched_limit": limit}
    ).all()
    available = sorted(
        (r for r in rows if JobState(r.state) is JobState.AVAILABLE), key=lambda r: int(r.id)
    )
    return ScheduleResult(
        available_ids=[r.id for r in available],
        available_queues=sorted({r.queue for r in available}),
        discarded_ids=sorted(r.id for r in rows if JobState(r.state) is JobState.DISCARDED),
    )


# --- rescuer -------------------------------------------------------------------------------


def _last_worker() -> ColumnElement[Any]:
    """The runner that started the current attempt: the last element of ``attempted_by``."""
    return job_table.c.attempted_by[func.cardinality(job_table.c.attempted_by)]


def _rescue_statement() -> Any:
    j = job_table
    c = client_table
    worker = _last_worker()
    # A runner is gone when its heartbeat went stale, or when its id was registered again
    # after this attempt began: a worker restarted under the same id (a fixed --id, a
    # supervised child) vouches only for the jobs it fetched itself, not its dead
    # predecessor's. Staleness is counted from the database's own start at the earliest: after
    # a restart every runner needs time to reconnect before its silence means anything.
    last_sign_of_life = func.greatest(c.c.heartbeat_at, func.pg_postmaster_start_time())
    worker_lost = (
        select(literal(1))
        .select_from(c)
        .where(
            c.c.id == worker,
            or_(
                last_sign_of_life < func.now() - _seconds("rescue_ttl"),
                c.c.started_at > j.c.attempted_at,
            ),
        )
        .exists()
    )
    # River's Go workers (and runners from before the heartbeat table) have no row: only time
    # tells that such a job is stuck. A runner with a fresh row is alive and keeps its jobs
    # for as long as it heartbeats, however long it runs; it enforces their timeouts itself.
    never_seen = ~select(literal(1)).select_from(c).where(c.c.id == worker).exists()
    stuck = and_(
        never_seen,
        func.coalesce(j.c.attempted_at, j.c.created_at) < func.now() - _seconds("rescue_stuck"),
    )
    locked = (
        select(j.c.id, worker_lost.label("worker_lost"))
        .where(j.c.state == JobState.RUNNING, or_(worker_lost, stuck))
        .order_by(j.c.attempted_at, j.c.id)
        .limit(bindparam("rescue_limit", type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("locked")
    )
    at = func.to_char(
        func.timezone(literal("UTC", Text), func.now()),
        literal('YYYY-MM-DD"T"HH24:MI:SS.US"Z"', Text),
    )
    error = func.jsonb_build_object(
        literal("at", Text),
        at,
        literal("attempt", Text),
        j.c.attempt,
        literal("error", Text),
        case(
            (locked.c.worker_lost, literal(RESCUED_WORKER_LOST, Text)),
            else_=literal(RESCUED_STUCK, Text),
        ),
        literal("trace", Text),
        literal("", Text),
    )
    # A job whose cancellation was requested is not retried; one out of attempts is discarded.
    new_state = case(
        (j.c.metadata.has_key("cancel_attempted_at"), _state(JobState.CANCELLED)),
        (j.c.attempt >= j.c.max_attempts, _state(JobState.DISCARDED)),
        else_=_state(JobState.RETRYABLE),
    )
    finalized = or_(j.c.metadata.has_key("cancel_attempted_at"), j.c.attempt >= j.c.max_attempts)
    return (
        update(j)
        # Still running: the lock makes this certain, the condition makes it obvious (a
        # job that has left ``running`` is never touched).
        .where(j.c.id == locked.c.id, j.c.state == JobState.RUNNING)
        .values(
            state=new_state,
            finalized_at=case((finalized, func.now()), else_=j.c.finalized_at),
            scheduled_at=case((finalized, j.c.scheduled_at), else_=func.now()),
            errors=func.array_append(j.c.errors, cast(error, JSONB)),
        )
        .returning(j.c.id, j.c.state)
    )


_RESCUE = _rescue_statement()


def job_rescue(
    conn: Connection, *, heartbeat_ttl_seconds: float, stuck_after_seconds: float, limit: int
) -> list[tuple[int, JobState]]:
    """Take back up to ``limit`` running jobs whose worker is gone; return ``(id, new state)``.

    A job is rescued when the runner of its current attempt (the last of ``attempted_by``) has
    a ``sa_river_client`` row not refreshed for ``heartbeat_ttl_seconds`` (nor since the
    database started), or registered again by a newer process after the attempt began
    ("rescued: worker lost"), or has no row at all and the attempt started more than
    ``stuck_after_seconds`` ago ("rescued: stuck"). It becomes ``retryable`` now, or
    ``discarded`` when out of attempts (``cancelled`` when cancellation was requested), with
    the error appended.
    """
    rows = conn.execute(
        _RESCUE,
        {
            "rescue_ttl": float(heartbeat_ttl_seconds),
            "rescue_stuck": float(stuck_after_seconds),
            "rescue_limit": limit,
        },
    ).all()
    return sorted((int(r.id), JobState(r.state)) for r in rows)


def client_delete_stale(conn: Connection, *, older_than_seconds: float) -> int:
    """Delete heartbeat rows older than ``older_than_seconds`` that no running job names.

    A runner killed without a clean stop leaves its row; once its jobs are rescued the row
    only clutters ``status``.
    """
    c = client_table
    j = job_table
    still_named = (
        select(literal(1))
        .select_from(j)
        .where(j.c.state == JobState.RUNNING, _last_worker() == c.c.id)
        .exists()
    )
    result = conn.execute(
        delete(c)
        .where(c.c.heartbeat_at < func.now() - _seconds("client_age"), ~still_named)
        .returning(c.c.id),
        {"client_age": float(older_than_seconds)},
    )
    return len(result.all())


# --- cleaners ------------------------------------------------------------------------------


def _delete_finalized_statement() -> Any:
    j = job_table
    # ``state = X AND finalized_at < horizon`` matches the partial index
    # river_job_state_and_finalized_at_index (state, finalized_at) WHERE finalized_at IS NOT NULL.
    doomed = (
        select(j.c.id)
        .where(
            j.c.state == bindparam("del_state", type_=JOB_STATE_ENUM),
            j.c.finalized_at.isnot(None),
            j.c.finalized_at < func.now() - _seconds("del_older_than"),
        )
        .limit(bindparam("del_limit", type_=Integer))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return delete(j).where(j.c.id.in_(doomed))


_DELETE_FINALIZED = _delete_finalized_statement()


def job_delete_finalized(
    conn: Connection, *, state: JobState, older_than_seconds: float, limit: int
) -> int:
    """Delete up to ``limit`` jobs in the final ``state`` finalised over N seconds ago."""
    if state not in FINALIZED_STATES:
        raise ValueError(f"only finalised jobs are deleted, not {state.value!r}")
    result = conn.execute(
        _DELETE_FINALIZED,
        {"del_state": state, "del_older_than": float(older_than_seconds), "del_limit": limit},
    )
    return int(result.rowcount)


def _delete_idle_queues_statement() -> Any:
    q = queue_table
    doomed = (
        select(q.c.name)
        .where(q.c.updated_at < func.now() - _seconds("idle_for"))
        .order_by(q.c.name)
        .limit(bindparam("idle_limit", type_=Integer))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return delete(q).where(q.c.name.in_(doomed))


_DELETE_IDLE_QUEUES = _delete_idle_queues_statement()


def queue_delete_idle(conn: Connection, *, older_than_seconds: float, limit: int) -> int:
    """Delete up to ``limit`` ``river_queue`` rows no worker touched for N seconds.

    Running workers refresh ``updated_at`` of their queues on every heartbeat.
    """
    result = conn.execute(
        _DELETE_IDLE_QUEUES, {"idle_for": float(older_than_seconds), "idle_limit": limit}
    )
    return int(result.rowcount)
