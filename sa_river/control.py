"""Look at and steer jobs and queues from application code.

Every function takes a ``Session``, ``Connection`` or ``Engine`` like the insert helpers and
runs in its transaction: commit to make the change stick. Each has an ``_async`` twin taking an
``AsyncSession``, ``AsyncConnection`` or ``AsyncEngine``, which runs the same statement.

>>> sa_river.cancel_job(session, job_id)          # doctest: +SKIP
>>> sa_river.pause_queue(engine, "mail")          # doctest: +SKIP
>>> await sa_river.cancel_job_async(async_session, job_id)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection

from sa_river._targets import AsyncTarget, SyncTarget, run_async, run_sync
from sa_river.options import validate_queue
from sa_river.queries import queue as queue_queries
from sa_river.queries.job_admin import job_cancel, job_get, job_list, job_retry
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.types import JobRow, JobState
from sa_river.workers import Job

__all__ = [
    "cancel_job",
    "cancel_job_async",
    "complete_in",
    "complete_in_async",
    "get_job",
    "get_job_async",
    "list_jobs",
    "list_jobs_async",
    "pause_queue",
    "pause_queue_async",
    "resume_queue",
    "resume_queue_async",
    "retry_job",
    "retry_job_async",
]

_R = TypeVar("_R")
_Statement = Callable[[Connection], _R]
"""What a control function runs on the target's connection; the sync and async forms run the
same one."""


def get_job(target: SyncTarget, job_id: int) -> JobRow | None:
    """The job with ``job_id``, or ``None``."""
    return run_sync(target, lambda conn: job_get(conn, job_id), what="get_job")


def list_jobs(
    target: SyncTarget,
    *,
    states: Sequence[JobState | str] | None = None,
    queues: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[JobRow]:
    """Jobs matching every given filter, in id order; pass the last id as ``after_id`` for
    the next page.

    Example (the next page starts after the last id seen)::

        page = sa_river.list_jobs(session, states=["retryable"], limit=50)
        more = sa_river.list_jobs(session, states=["retryable"], after_id=page[-1].id)
    """
    statement = _list_statement(states, queues, kinds, after_id, limit)
    return run_sync(target, statement, what="list_jobs")


def _list_statement(
    states: Sequence[JobState | str] | None,
    queues: Sequence[str] | None,
    kinds: Sequence[str] | None,
    after_id: int | None,
    limit: int,
) -> _Statement[list[JobRow]]:
    wanted = [JobState(s) for s in states] if states else None
    return lambda conn: job_list(
        conn, states=wanted, queues=queues, kinds=kinds, after_id=after_id, limit=limit
    )


def cancel_job(target: SyncTarget, job_id: int) -> JobRow | None:
    """Cancel a job. One that is not running is ``cancelled`` at once; a running one is
    cancelled cooperatively: its worker is told (NOTIFY) and cancels an async handler, or sets
    ``job.cancel_requested`` for a sync one. Finalised jobs are left as they are.
    """
    return run_sync(target, lambda conn: job_cancel(conn, job_id), what="cancel_job")


def retry_job(target: SyncTarget, job_id: int) -> JobRow | None:
    """Make a job that is not running available now (a discarded or cancelled one too)."""
    return run_sync(target, lambda conn: job_retry(conn, job_id), what="retry_job")


def pause_queue(target: SyncTarget, queue: str) -> None:
    """Stop every worker fetching from ``queue`` until :func:`resume_queue`."""
    run_sync(target, _queue_statement(queue_queries.queue_pause, queue), what="pause_queue")


def resume_queue(target: SyncTarget, queue: str) -> None:
    """Let workers fetch from a paused ``queue`` again."""
    run_sync(target, _queue_statement(queue_queries.queue_resume, queue), what="resume_queue")


def _queue_statement(change: Callable[[Connection, str], None], queue: str) -> _Statement[None]:
    name = validate_queue(queue)
    return lambda conn: change(conn, name)


def complete_in(target: SyncTarget, job: Job[Any] | JobRow) -> bool:
    """Mark the running ``job`` completed inside the handler's own transaction.

    The job's completion then commits or rolls back with the handler's other writes, so its
    effects in the database happen exactly once even if the worker dies right after. Only the
    attempt that ``job`` is completes: false when that attempt is no longer running (the job
    finished, was cancelled, or was rescued and fetched again elsewhere); roll back then.

    >>> @workers.handler(ChargeCard)                              # doctest: +SKIP
    ... def charge(job: Job[ChargeCard]) -> None:
    ...     with Session(app_engine) as session, session.begin():
    ...         session.add(Payment(order_id=job.args.order_id))
    ...         sa_river.complete_in(session, job)
    """
    return run_sync(target, _complete_statement(job), what="complete_in")


def _complete_statement(job: object) -> _Statement[bool]:
    if not isinstance(job, Job | JobRow):
        raise TypeError(
            f"complete_in takes the handler's Job (or its JobRow), got {type(job).__name__}: "
            "its attempt makes sure an earlier, abandoned attempt cannot complete a later one"
        )
    row = job.row if isinstance(job, Job) else job
    completed = AttemptOutcome.completed(row.id, row.attempt)
    return lambda conn: row.id in job_set_state_if_running_many(conn, [completed])


# -- async twins: the same statements, run through run_async ----------------------------------


async def get_job_async(target: AsyncTarget, job_id: int) -> JobRow | None:
    """Async twin of :func:`get_job`."""
    return await run_async(target, lambda conn: job_get(conn, job_id), what="get_job")


async def list_jobs_async(
    target: AsyncTarget,
    *,
    states: Sequence[JobState | str] | None = None,
    queues: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[JobRow]:
    """Async twin of :func:`list_jobs`."""
    statement = _list_statement(states, queues, kinds, after_id, limit)
    return await run_async(target, statement, what="list_jobs")


async def cancel_job_async(target: AsyncTarget, job_id: int) -> JobRow | None:
    """Async twin of :func:`cancel_job`."""
    return await run_async(target, lambda conn: job_cancel(conn, job_id), what="cancel_job")


async def retry_job_async(target: AsyncTarget, job_id: int) -> JobRow | None:
    """Async twin of :func:`retry_job`."""
    return await run_async(target, lambda conn: job_retry(conn, job_id), what="retry_job")


async def pause_queue_async(target: AsyncTarget, queue: str) -> None:
    """Async twin of :func:`pause_queue`."""
    statement = _queue_statement(queue_queries.queue_pause, queue)
    await run_async(target, statement, what="pause_queue")


async def resume_queue_async(target: AsyncTarget, queue: str) -> None:
    """Async twin of :func:`resume_queue`."""
    statement = _queue_statement(queue_queries.queue_resume, queue)
    await run_async(target, statement, what="resume_queue")


async def complete_in_async(target: AsyncTarget, job: Job[Any] | JobRow) -> bool:
    """Async twin of :func:`complete_in`, for an async handler's own ``AsyncSession``.

    >>> @workers.handler(ChargeCard)                              # doctest: +SKIP
    ... async def charge(job: Job[ChargeCard]) -> None:
    ...     async with AsyncSession(app_engine) as session, session.begin():
    ...         session.add(Payment(order_id=job.args.order_id))
    ...         await sa_river.complete_in_async(session, job)
    """
    return await run_async(target, _complete_statement(job), what="complete_in")
