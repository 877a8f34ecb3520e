"""Recording attempts' outcomes on ``river_job`` (internal): every statement here changes a row
only while it is still ``running`` (in the same attempt, where one is given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Float,
    SmallInteger,
    Table,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql import bindparam

from sa_river.models import JOB_STATE_ENUM, RiverJob
from sa_river.types import FINALIZED_STATES, JobState

__all__ = [
    "JobFailParams",
    "JobSetStateParams",
    "job_complete_if_running",
    "job_fail_attempts",
    "job_record_outcomes",
    "job_release_running",
    "job_set_state_if_running_many",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]


_FINALIZED_VALUES = tuple(sorted(s.value for s in FINALIZED_STATES))
"""The finalized states as text, to compare with a state decided in the statement."""


@dataclass(frozen=True)
class JobSetStateParams:
    """The outcome of one attempt, for :func:`job_set_state_if_running_many`.

    ``delay_seconds`` sets ``scheduled_at = now() + delay`` (retries and snoozes); ``error`` is
    the encoded ``AttemptError`` JSON to append; ``snoozed`` un-counts the attempt.
    """

    id: int
    state: JobState
    error: str | None = None
    delay_seconds: float | None = None
    snoozed: bool = False
    attempt: int | None = None
    """The attempt this outcome belongs to; when set, a row that has since moved on to
    another attempt (rescued and fetched again elsewhere) is left alone."""


def _is_running_attempt(source: Any) -> Any:
    """The job of ``source``'s row, still ``running`` the same attempt (an outcome of an
    earlier attempt must never touch a later one); a NULL attempt matches any."""
    return and_(
        job_table.c.id == source.c.id,
        job_table.c.state == JobState.RUNNING,
        or_(source.c.attempt.is_(None), job_table.c.attempt == source.c.attempt),
    )


def _finalized_at_if_final(wanted: Any) -> Any:
    return case((wanted.in_(_FINALIZED_VALUES), func.now()), else_=job_table.c.finalized_at)


def _set_state_statement() -> Any:
    outcome = (
        func.unnest(
            bindparam("o_id", type_=ARRAY(BigInteger)),
            bindparam("o_state", type_=ARRAY(Text)),
            bindparam("o_error", type_=ARRAY(Text)),
            bindparam("o_delay_seconds", type_=ARRAY(Float)),
            bindparam("o_snoozed", type_=ARRAY(Boolean)),
            bindparam("o_attempt", type_=ARRAY(SmallInteger)),
        )
        .table_valued("id", "state", "error", "delay_seconds", "snoozed", "attempt")
        .render_derived()
    )
    # A job whose cancellation was requested while it ran is cancelled rather than retried.
    wanted = case(
        (
            and_(
                outcome.c.error.isnot(None),
                job_table.c.metadata.has_key("cancel_attempted_at"),
            ),
            literal("cancelled", Text),
        ),
        else_=outcome.c.state,
    )
    snoozes = func.coalesce(job_table.c.metadata["snoozes"].as_integer(), 0) + 1
    return (
        update(job_table)
        .where(_is_running_attempt(outcome))
        .values(
            state=cast(wanted, JOB_STATE_ENUM),
            finalized_at=_finalized_at_if_final(wanted),
            errors=case(
                (
                    outcome.c.error.isnot(None),
                    func.array_append(job_table.c.errors, cast(outcome.c.error, JSONB)),
                ),
                else_=job_table.c.errors,
            ),
            scheduled_at=case(
                (
                    outcome.c.delay_seconds.isnot(None),
                    func.now() + func.make_interval(0, 0, 0, 0, 0, 0, outcome.c.delay_seconds),
                ),
                else_=job_table.c.scheduled_at,
            ),
            attempt=case((outcome.c.snoozed, job_table.c.attempt - 1), else_=job_table.c.attempt),
            metadata=case(
                (
                    outcome.c.snoozed,
                    job_table.c.metadata.op("||")(
                        func.jsonb_build_object(literal("snoozes", Text), snoozes)
                    ),
                ),
                else_=job_table.c.metadata,
            ),
        )
        .returning(job_table.c.id, job_table.c.state)
    )


_SET_STATE = _set_state_statement()


def job_set_state_if_running_many(
    conn: Connection, outcomes: Sequence[JobSetStateParams]
) -> dict[int, JobState]:
    """Record many attempts' outcomes in one UPDATE, only on rows still ``running``.

    Returns the new state of every row it changed; a job missing from the result was no longer
    running (rescued, cancelled or completed in the handler's own transaction) and keeps the
    state that other actor decided.
    """
    if not outcomes:
        return {}
    rows = conn.execute(
        _SET_STATE,
        {
            "o_id": [o.id for o in outcomes],
            "o_state": [o.state.value for o in outcomes],
            "o_error": [o.error for o in outcomes],
            # psycopg refuses a list mixing int and float; a delay given as an int is fine.
            "o_delay_seconds": [
                None if o.delay_seconds is None else float(o.delay_seconds) for o in outcomes
            ],
            "o_snoozed": [o.snoozed for o in outcomes],
            "o_attempt": [o.attempt for o in outcomes],
        },
    ).all()
    return {r.id: JobState(r.state) for r in rows}


def _complete_many_statement() -> Any:
    done = (
        func.unnest(
            bindparam("c_id", type_=ARRAY(BigInteger)),
            bindparam("c_attempt", type_=ARRAY(SmallInteger)),
        )
        .table_valued("id", "attempt")
        .render_derived(name="done")
    )
    return (
        update(job_table)
        .where(
            job_table.c.id == done.c.id,
            job_table.c.state == JobState.RUNNING,
            job_table.c.attempt == done.c.attempt,
        )
        .values(state=JobState.COMPLETED, finalized_at=func.now())
    )


_COMPLETE_MANY = _complete_many_statement()


def job_record_outcomes(
    conn: Connection, outcomes: Sequence[JobSetStateParams | tuple[int, int]]
) -> int:
    """Record attempts' outcomes, only on rows still ``running`` in that same attempt; how
    many rows changed.

    The completer's statement. A ``(job id, attempt)`` pair is an attempt whose handler
    returned: those go through one plain ``completed`` UPDATE (the common case, with nothing to
    decide per row); every other outcome through :func:`job_set_state_if_running_many`'s
    statement.
    """
    completed: list[tuple[int, int]] = []
    others: list[JobSetStateParams] = []
    for o in outcomes:
        if isinstance(o, JobSetStateParams):
            others.append(o)
        else:
            completed.append(o)
    changed = 0
    if completed:
        changed += conn.execute(
            _COMPLETE_MANY,
            {"c_id": [c[0] for c in completed], "c_attempt": [c[1] for c in completed]},
        ).rowcount
    if others:
        changed += len(job_set_state_if_running_many(conn, others))
    return changed


@dataclass(frozen=True)
class JobFailParams:
    """An attempt to end with an error whatever it was meant to record, for
    :func:`job_fail_attempts`: ``error`` is the encoded ``AttemptError`` JSON to append."""

    id: int
    attempt: int | None
    error: str


def _fail_attempts_statement() -> Any:
    failed = (
        func.unnest(
            bindparam("f_id", type_=ARRAY(BigInteger)),
            bindparam("f_attempt", type_=ARRAY(SmallInteger)),
            bindparam("f_error", type_=ARRAY(Text)),
        )
        .table_valued("id", "attempt", "error")
        .render_derived(name="failed")
    )
    # Decided here, from the row itself: the caller may not have (or trust) its decoded values.
    wanted = case(
        (job_table.c.metadata.has_key("cancel_attempted_at"), literal("cancelled", Text)),
        (job_table.c.attempt >= job_table.c.max_attempts, literal("discarded", Text)),
        else_=literal("retryable", Text),
    )
    return (
        update(job_table)
        .where(_is_running_attempt(failed))
        .values(
            state=cast(wanted, JOB_STATE_ENUM),
            finalized_at=_finalized_at_if_final(wanted),
            errors=func.array_append(job_table.c.errors, cast(failed.c.error, JSONB)),
            scheduled_at=case(
                (
                    wanted == literal("retryable", Text),
                    func.now()
                    + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("f_retry_in", type_=Float)),
                ),
                else_=job_table.c.scheduled_at,
            ),
        )
        .returning(job_table.c.id, job_table.c.state)
    )


_FAIL_ATTEMPTS = _fail_attempts_statement()


def job_fail_attempts(
    conn: Connection, failures: Sequence[JobFailParams], *, retry_in_seconds: float
) -> dict[int, JobState]:
    """End attempts with an error, only on rows still ``running`` in that attempt: the fallback
    when an attempt's own outcome cannot be recorded, or its row cannot even be decoded.

    Like any failed attempt, the job is ``retryable`` after ``retry_in_seconds``, ``discarded``
    at its last attempt, or ``cancelled`` when its cancellation was requested. Returns the new
    state of every row it changed.
    """
    if not failures:
        return {}
    rows = conn.execute(
        _FAIL_ATTEMPTS,
        {
            "f_id": [f.id for f in failures],
            "f_attempt": [f.attempt for f in failures],
            "f_error": [f.error for f in failures],
            "f_retry_in": retry_in_seconds,
        },
    ).all()
    return {r.id: JobState(r.state) for r in rows}


def job_complete_if_running(conn: Connection, job_id: int, attempt: int) -> bool:
    """Mark job ``job_id`` completed in ``conn``'s transaction while it is still running
    ``attempt``; false otherwise (finished, rescued, or running a later attempt elsewhere)."""
    result = conn.execute(
        update(job_table)
        .where(
            job_table.c.id == job_id,
            job_table.c.state == JobState.RUNNING,
            job_table.c.attempt == attempt,
        )
        .values(state=JobState.COMPLETED, finalized_at=func.now())
        .returning(job_table.c.id)
    )
    return result.first() is not None


def job_release_running(
    conn: Connection, job_ids: Sequence[int], attempts: Sequence[int]
) -> list[int]:
    """Give running jobs back (shutdown): ``available`` now, the attempt not counted.

    ``attempts`` holds one attempt per id: a job is released only while still running that
    attempt, so a job rescued and fetched again elsewhere meanwhile is left alone.
    """
    if not job_ids:
        return []
    pairs = (
        func.unnest(
            bindparam("r_id", type_=ARRAY(BigInteger)),
            bindparam("r_attempt", type_=ARRAY(SmallInteger)),
        )
        .table_valued("id", "attempt")
        .render_derived(name="released")
    )
    rows = conn.execute(
        update(job_table)
        .where(
            job_table.c.id == pairs.c.id,
            job_table.c.attempt == pairs.c.attempt,
            job_table.c.state == JobState.RUNNING,
        )
        .values(
            state=JobState.AVAILABLE,
            attempt=func.greatest(job_table.c.attempt - 1, 0),
            scheduled_at=func.now(),
        )
        .returning(job_table.c.id),
        {"r_id": list(job_ids), "r_attempt": list(attempts)},
    ).all()
    return [r.id for r in rows]
