"""Ending attempts on ``river_job`` (internal): one outcome type and one statement.

Every way an attempt ends — its handler returned, raised, snoozed or cancelled itself; the
runner gave it back at shutdown; sa_river could not record what the attempt meant and ends it
with an error instead — is an :class:`AttemptOutcome`, built by one of its named constructors,
and is written by :func:`job_set_state_if_running_many`. That statement changes a row only
while it is still ``running`` the very attempt the outcome belongs to: once a job has been
rescued, cancelled, completed in the handler's own transaction or fetched again elsewhere, a
late outcome of the old attempt is a no-op (see ``docs/design.md``, "Fencing by attempt").

The same statement tells whoever waits for jobs (:func:`sa_river.wait_for`) which of them it
finalised: one ``pg_notify`` on ``<schema>.sa_river_job_finalized`` per statement that
finalised any, sent when its transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    Float,
    SmallInteger,
    Table,
    Text,
    and_,
    any_,
    case,
    cast,
    column,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.sql import bindparam

from sa_river.models import JOB_STATE_ENUM, RiverJob
from sa_river.queries.driver import DriverStatement
from sa_river.queries.notify import notify_finalized
from sa_river.types import FINALIZED_STATES, JobState

__all__ = [
    "AttemptOutcome",
    "OutcomeKind",
    "job_set_state_if_running_count",
    "job_set_state_if_running_many",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]


class OutcomeKind(str, Enum):
    """How an attempt ended; decides what the statement does besides setting the state."""

    COMPLETED = "completed"
    RETRYABLE = "retryable"
    DISCARDED = "discarded"
    CANCELLED = "cancelled"
    SNOOZED = "snoozed"
    """The attempt is not counted and ``metadata.snoozes`` goes up by one."""
    RELEASED = "released"
    """Given back at shutdown: ``available`` now, the attempt not counted."""
    FAILED = "failed"
    """Ended by sa_river with an error whose state the row decides: ``cancelled`` when its
    cancellation was requested, ``discarded`` at its last attempt, else ``retryable``. For an
    attempt whose own outcome cannot be recorded or whose row cannot be decoded."""


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """The end of one attempt of one job, for :func:`job_set_state_if_running_many`.

    Build one with a named constructor (``AttemptOutcome.completed(job_id, attempt)``...).
    ``state`` is the state asked for (for ``FAILED``, the row decides, and it reads
    ``retryable``); ``error`` is the encoded ``AttemptError`` JSON to append; ``delay_seconds``
    sets ``scheduled_at = now() + delay``; ``output`` (JSON text) is stored as the job's
    ``metadata.output``, where River keeps a job's recorded output.
    """

    kind: OutcomeKind
    job_id: int
    attempt: int
    state: JobState
    error: str | None = None
    delay_seconds: float | None = None
    output: str | None = None

    @classmethod
    def completed(cls, job_id: int, attempt: int, *, output: str | None = None) -> AttemptOutcome:
        """The handler returned; ``output`` is its recorded output as JSON text, if any."""
        return cls(OutcomeKind.COMPLETED, job_id, attempt, JobState.COMPLETED, output=output)

    @classmethod
    def retryable(
        cls, job_id: int, attempt: int, *, error: str, delay_seconds: float, available: bool
    ) -> AttemptOutcome:
        """The handler failed and the job runs again after ``delay_seconds``.

        ``available``: the retry is due so soon (within the scheduler's interval) that the
        job goes straight back to ``available`` with its future ``scheduled_at`` instead of
        waiting as ``retryable`` for the scheduler.
        """
        state = JobState.AVAILABLE if available else JobState.RETRYABLE
        return cls(OutcomeKind.RETRYABLE, job_id, attempt, state, error, float(delay_seconds))

    @classmethod
    def discarded(cls, job_id: int, attempt: int, *, error: str) -> AttemptOutcome:
        """The handler failed its last attempt."""
        return cls(OutcomeKind.DISCARDED, job_id, attempt, JobState.DISCARDED, error)

    @classmethod
    def cancelled(cls, job_id: int, attempt: int, *, error: str) -> AttemptOutcome:
        """The handler cancelled the job (or its cancellation was requested while it ran)."""
        return cls(OutcomeKind.CANCELLED, job_id, attempt, JobState.CANCELLED, error)

    @classmethod
    def snoozed(
        cls,
        job_id: int,
        attempt: int,
        *,
        delay_seconds: float,
        available: bool,
        error: str | None = None,
    ) -> AttemptOutcome:
        """The handler asked to run again after ``delay_seconds``, this attempt not counted;
        ``available`` as for :meth:`retryable`. ``error``: an error handler snoozed a failed
        attempt, whose error is still recorded."""
        state = JobState.AVAILABLE if available else JobState.SCHEDULED
        return cls(OutcomeKind.SNOOZED, job_id, attempt, state, error, float(delay_seconds))

    @classmethod
    def released(cls, job_id: int, attempt: int) -> AttemptOutcome:
        """The runner gave the job back unfinished (shutdown): ``available`` at once, this
        attempt not counted."""
        return cls(OutcomeKind.RELEASED, job_id, attempt, JobState.AVAILABLE)

    @classmethod
    def failed(
        cls, job_id: int, attempt: int, *, error: str, retry_in_seconds: float
    ) -> AttemptOutcome:
        """sa_river ends the attempt with ``error``; the row decides between ``cancelled``,
        ``discarded`` and ``retryable`` (after ``retry_in_seconds``), as for any failed
        attempt. Needs nothing decoded from the row but its id and attempt."""
        return cls(
            OutcomeKind.FAILED, job_id, attempt, JobState.RETRYABLE, error, float(retry_in_seconds)
        )


_FINALIZED_VALUES = tuple(sorted(s.value for s in FINALIZED_STATES))
"""The finalized states as text, to compare with a state decided in the statement."""


def _one_of(value: Any, choices: Sequence[str]) -> Any:
    """``value = ANY(ARRAY[...])``: an IN over fixed text written into the statement, so that
    it compiles once to plain SQL (a Core ``in_`` list is filled in per call)."""
    return value == any_(array([literal(choice, Text) for choice in choices]))


def _set_state_statement(*, returning: bool) -> Any:
    # The outcomes travel as one JSON document (see _parameters): a batch costs the
    # client one formatted string per outcome instead of an element in each of six arrays,
    # which psycopg dumps (and quotes) element by element.
    outcome = (
        func.json_to_recordset(cast(bindparam("outcomes", type_=Text), JSON))
        .table_valued(
            column("id", BigInteger),
            column("attempt", SmallInteger),
            column("kind", Text),
            column("state", Text),
            column("error", JSONB),
            column("delay_seconds", Float),
            column("output", JSONB),
        )
        .render_derived(name="outcome", with_types=True)
    )
    kind = outcome.c.kind
    cancel_requested = job_table.c.metadata.has_key("cancel_attempted_at")
    wanted = case(
        # A job whose cancellation was requested while it ran is cancelled rather than
        # retried or discarded.
        (and_(outcome.c.error.isnot(None), cancel_requested), literal("cancelled", Text)),
        (
            and_(kind == OutcomeKind.FAILED.value, job_table.c.attempt >= job_table.c.max_attempts),
            literal("discarded", Text),
        ),
        else_=outcome.c.state,
    )
    not_counted = _one_of(kind, (OutcomeKind.SNOOZED.value, OutcomeKind.RELEASED.value))
    snoozes = func.coalesce(job_table.c.metadata["snoozes"].as_integer(), 0) + 1
    updated = (
        update(job_table)
        .where(
            job_table.c.id == outcome.c.id,
            job_table.c.state == JobState.RUNNING,
            job_table.c.attempt == outcome.c.attempt,
        )
        .values(
            state=cast(wanted, JOB_STATE_ENUM),
            finalized_at=case(
                (_one_of(wanted, _FINALIZED_VALUES), func.now()), else_=job_table.c.finalized_at
            ),
            errors=case(
                (
                    outcome.c.error.isnot(None),
                    func.array_append(job_table.c.errors, outcome.c.error),
                ),
                else_=job_table.c.errors,
            ),
            scheduled_at=case(
                (kind == OutcomeKind.RELEASED.value, func.now()),
                # A finalized job keeps its scheduled_at: there is nothing left to schedule.
                (
                    and_(outcome.c.delay_seconds.isnot(None), ~_one_of(wanted, _FINALIZED_VALUES)),
                    func.now() + func.make_interval(0, 0, 0, 0, 0, 0, outcome.c.delay_seconds),
                ),
                else_=job_table.c.scheduled_at,
            ),
            attempt=case(
                (not_counted, func.greatest(job_table.c.attempt - 1, 0)),
                else_=job_table.c.attempt,
            ),
            metadata=case(
                (
                    kind == OutcomeKind.SNOOZED.value,
                    job_table.c.metadata.op("||")(
                        func.jsonb_build_object(literal("snoozes", Text), snoozes)
                    ),
                ),
                (
                    outcome.c.output.isnot(None),
                    job_table.c.metadata.op("||")(
                        func.jsonb_build_object(literal("output", Text), outcome.c.output)
                    ),
                ),
                else_=job_table.c.metadata,
            ),
        )
        .returning(job_table.c.id, job_table.c.state)
        .cte("updated")
    )
    notified = notify_finalized(updated)
    if returning:
        return select(updated.c.id, updated.c.state, notified.label("notified"))
    return select(func.count().label("changed"), notified.label("notified")).select_from(updated)


_SET_STATE = DriverStatement(_set_state_statement(returning=True))
_SET_STATE_COUNT = DriverStatement(_set_state_statement(returning=False))
"""The same statement without RETURNING, for the completer: it needs only how many changed,
and decoding a row per job is a measurable part of a worker's time."""


def _parameters(outcomes: Sequence[AttemptOutcome]) -> dict[str, str]:
    """The outcomes as the JSON array ``_set_state_statement`` reads, one object each.

    ``error`` is JSON already and goes in as it is. A delay goes as a string, which PostgreSQL
    reads as it reads a float (``inf`` included, which JSON has no number for: a delay too large
    to schedule then fails in the database, as it would from any client).
    """
    parts = []
    for o in outcomes:
        delay = "null" if o.delay_seconds is None else f'"{o.delay_seconds!r}"'
        parts.append(
            f'{{"id":{o.job_id:d},"attempt":{o.attempt:d},"kind":"{o.kind.value}",'
            f'"state":"{o.state.value}","error":{"null" if o.error is None else o.error},'
            f'"delay_seconds":{delay},"output":{"null" if o.output is None else o.output}}}'
        )
    return {"outcomes": f"[{','.join(parts)}]"}


def job_set_state_if_running_many(
    conn: Connection, outcomes: Sequence[AttemptOutcome]
) -> dict[int, JobState]:
    """Write many attempts' outcomes in one UPDATE, each only on a row still ``running`` that
    same attempt.

    Returns the new state of every row it changed; a job missing from the result was no longer
    running that attempt (rescued, cancelled, completed in the handler's own transaction, or
    fetched again elsewhere) and keeps the state that other actor decided.

    >>> with engine.begin() as conn:                                     # doctest: +SKIP
    ...     job_set_state_if_running_many(conn, [AttemptOutcome.completed(job.id, job.attempt)])
    {42: <JobState.COMPLETED: 'completed'>}
    """
    if not outcomes:
        return {}
    rows = _SET_STATE.rows(conn, _parameters(outcomes))
    return {job_id: JobState(state) for job_id, state, _ in rows}


def job_set_state_if_running_count(conn: Connection, outcomes: Sequence[AttemptOutcome]) -> int:
    """:func:`job_set_state_if_running_many`, returning only how many rows it changed."""
    if not outcomes:
        return 0
    ((changed, _),) = _SET_STATE_COUNT.rows(conn, _parameters(outcomes))
    return int(changed)
