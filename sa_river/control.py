"""Look at and steer jobs and queues from application code.

Every function takes a ``Session``, ``Connection`` or ``Engine`` like the insert helpers and
runs in its transaction: commit to make the change stick.

>>> sa_river.cancel_job(session, job_id)          # doctest: +SKIP
>>> sa_river.pause_queue(engine, "mail")          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from sa_river._targets import SyncTarget, run_sync
from sa_river.options import validate_queue
from sa_river.queries import queue as queue_queries
from sa_river.queries.job_admin import job_cancel, job_get, job_list, job_retry
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.types import JobRow, JobState
from sa_river.workers import Job

__all__ = [
    "cancel_job",
    "complete_in",
    "get_job",
    "list_jobs",
    "pause_queue",
    "resume_queue",
    "retry_job",
]


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
    wanted = [JobState(s) for s in states] if states else None
    return run_sync(
        target,
        lambda conn: job_list(
            conn, states=wanted, queues=queues, kinds=kinds, after_id=after_id, limit=limit
        ),
        what="list_jobs",
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
    name = validate_queue(queue)
    run_sync(target, lambda conn: queue_queries.queue_pause(conn, name), what="pause_queue")


def resume_queue(target: SyncTarget, queue: str) -> None:
    """Let workers fetch from a paused ``queue`` again."""
    name = validate_queue(queue)
    run_sync(target, lambda conn: queue_queries.queue_resume(conn, name), what="resume_queue")


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
    if not isinstance(job, Job | JobRow):
        raise TypeError(
            f"complete_in takes the handler's Job (or its JobRow), got {type(job).__name__}: "
            "its attempt makes sure an earlier, abandoned attempt cannot complete a later one"
        )
    row = job.row if isinstance(job, Job) else job
    completed = AttemptOutcome.completed(row.id, row.attempt)

    def complete(conn: Connection) -> bool:
        return row.id in job_set_state_if_running_many(conn, [completed])

    return run_sync(target, complete, what="complete_in")
