"""Look at and steer jobs and queues from application code.

Every function takes a ``Session``, ``Connection`` or ``Engine`` like the insert helpers and
runs in its transaction: commit to make the change stick. Each has an ``_async`` twin taking an
``AsyncSession``, ``AsyncConnection`` or ``AsyncEngine``, which runs the same statement.

:func:`list_jobs` and the bulk changes (:func:`cancel_jobs`, :func:`retry_jobs`,
:func:`delete_jobs`) take the same filters, checked by one builder (``_job_filter``) and
sent as bound parameters; each bulk change is one set-based statement.

>>> sa_river.cancel_job(session, job_id)          # doctest: +SKIP
>>> sa_river.pause_queue(engine, "mail")          # doctest: +SKIP
>>> await sa_river.cancel_job_async(async_session, job_id)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypedDict, TypeGuard, TypeVar

from sqlalchemy import Connection
from typing_extensions import Unpack

from sa_river._targets import AsyncTarget, SyncTarget, run_async, run_sync
from sa_river.errors import FieldError, JobRunningError
from sa_river.options import validate_queue
from sa_river.queries import queue as queue_queries
from sa_river.queries.job_admin import (
    ORDER_COLUMNS,
    JobFilter,
    OrderBy,
    job_cancel,
    job_cancel_many,
    job_delete,
    job_delete_many,
    job_get,
    job_list_where,
    job_retry,
    job_retry_many,
)
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.types import JobRow, JobState
from sa_river.workers import Job

__all__ = [
    "JobFilters",
    "cancel_job",
    "cancel_job_async",
    "cancel_jobs",
    "cancel_jobs_async",
    "complete_in",
    "complete_in_async",
    "delete_job",
    "delete_job_async",
    "delete_jobs",
    "delete_jobs_async",
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
    "retry_jobs",
    "retry_jobs_async",
]

_R = TypeVar("_R")
_T = TypeVar("_T")
_Statement = Callable[[Connection], _R]
"""What a control function runs on the target's connection; the sync and async forms run the
same one."""


def get_job(target: SyncTarget, job_id: int) -> JobRow | None:
    """The job with ``job_id``, or ``None``."""
    return run_sync(target, lambda conn: job_get(conn, job_id), what="get_job")


def list_jobs(
    target: SyncTarget,
    *,
    order_by: Literal["id", "created_at", "scheduled_at", "finalized_at", "priority"] = "id",
    descending: bool = False,
    after: JobRow | None = None,
    after_id: int | None = None,
    limit: int = 100,
    **filters: Unpack[JobFilters],
) -> list[JobRow]:
    """Jobs matching every given filter, ``limit`` (at least 1) at a time, in ``order_by``
    order (``descending`` if asked), the job id breaking ties.

    ``filters`` are :class:`JobFilters` (states, queues, kinds, tags, priorities, ids and time
    bounds), all of which must match; with none, every job is listed.

    Ordering: ``order_by`` is one of ``"id"`` (the default), ``"created_at"``,
    ``"scheduled_at"``, ``"finalized_at"`` or ``"priority"`` (1, River's most urgent, first
    unless ``descending``). With ``"finalized_at"``, jobs not finalised come last either way.

    Paging (keyset, so jobs inserted or deleted meanwhile neither repeat nor shift a page):
    pass the last job of a page as ``after`` for the next one; it works with every
    ``order_by``. ``after_id`` (the last id) does the same in id order only: with another
    ``order_by`` it is an error, as is giving both.

    Bad values raise :class:`~sa_river.FieldError` naming the argument: an unknown state or
    ``order_by``, a naive datetime, ``limit`` below 1, a single string where a list belongs.

    Example (the next page starts after the last job seen)::

        page = sa_river.list_jobs(session, states=["retryable"], limit=50)
        more = sa_river.list_jobs(session, states=["retryable"], after=page[-1])
        latest = sa_river.list_jobs(
            session, kinds=["mail"], order_by="finalized_at", descending=True, limit=10
        )
    """
    statement = _list_statement(
        _job_filter(filters),
        order_by,
        descending,
        after,
        after_id,
        limit,
    )
    return run_sync(target, statement, what="list_jobs")


def _list_statement(
    where: JobFilter,
    order_by: object,
    descending: object,
    after: object,
    after_id: object,
    limit: object,
) -> _Statement[list[JobRow]]:
    if order_by not in ORDER_COLUMNS:
        raise FieldError("order_by", f"must be one of {', '.join(ORDER_COLUMNS)}, got {order_by!r}")
    order: OrderBy = order_by
    if not isinstance(descending, bool):
        raise FieldError("descending", f"must be True or False, got {descending!r}")
    if not _is_int(limit) or limit < 1:
        raise FieldError("limit", f"must be an integer of at least 1, got {limit!r}")
    key: tuple[Any, int] | None = None
    if after is not None:
        if after_id is not None:
            raise FieldError("after", "give after (the last job) or after_id, not both")
        if not isinstance(after, JobRow):
            raise FieldError(
                "after", f"must be the last JobRow of the previous page, got {type(after).__name__}"
            )
        key = (getattr(after, order), after.id)
    elif after_id is not None:
        if not _is_int(after_id):
            raise FieldError("after_id", f"must be a job id (an integer), got {after_id!r}")
        if order != "id":
            raise FieldError(
                "after_id",
                f"pages in id order only; with order_by={order!r} pass the last job of the "
                "page as after=",
            )
        key = (after_id, after_id)
    return lambda conn: job_list_where(
        conn, where, order_by=order, descending=descending, after=key, limit=limit
    )


class JobFilters(TypedDict, total=False):
    """The filters :func:`list_jobs` and the bulk changes (:func:`cancel_jobs`,
    :func:`retry_jobs`, :func:`delete_jobs`) take as keyword arguments. A job matches when it
    matches every filter given; ``None`` does not filter.

    - ``states``, ``queues``, ``kinds``, ``priorities``, ``ids``: jobs whose value is any of
      those given. An empty list matches no job.
    - ``tags``: jobs having **all** of the given tags (``tags @> ...``; a job may have more).
      Give at least one tag.
    - ``created_after``/``created_before``, ``scheduled_after``/``scheduled_before``,
      ``finalized_after``/``finalized_before``: timezone-aware datetimes bounding the column,
      ``after <= column < before``. A ``finalized_*`` bound only matches finalised jobs.
    """

    states: Sequence[JobState | str] | None
    queues: Sequence[str] | None
    kinds: Sequence[str] | None
    tags: Sequence[str] | None
    priorities: Sequence[int] | None
    ids: Sequence[int] | None
    created_after: datetime | None
    created_before: datetime | None
    scheduled_after: datetime | None
    scheduled_before: datetime | None
    finalized_after: datetime | None
    finalized_before: datetime | None


_FILTER_NAMES = tuple(JobFilters.__annotations__)


def _job_filter(filters: Mapping[str, object]) -> JobFilter:
    """The filters of :func:`list_jobs` and the bulk changes, checked: the one place they are
    read. Raises :class:`~sa_river.FieldError` naming the first bad argument, and
    ``TypeError`` for a name that is not a filter."""
    unknown = sorted(set(filters) - set(_FILTER_NAMES))
    if unknown:
        raise TypeError(
            f"unknown filter {', '.join(map(repr, unknown))}; the filters are "
            f"{', '.join(_FILTER_NAMES)}"
        )
    get = filters.get
    checked_tags = _values("tags", get("tags"), _string)
    if checked_tags == ():
        raise FieldError("tags", "give at least one tag (None does not filter by tags)")
    return JobFilter(
        ids=_values("ids", get("ids"), _job_id),
        states=_values("states", get("states"), _state),
        queues=_values("queues", get("queues"), _string),
        kinds=_values("kinds", get("kinds"), _string),
        priorities=_values("priorities", get("priorities"), _priority),
        tags=checked_tags,
        created_after=_aware("created_after", get("created_after")),
        created_before=_aware("created_before", get("created_before")),
        scheduled_after=_aware("scheduled_after", get("scheduled_after")),
        scheduled_before=_aware("scheduled_before", get("scheduled_before")),
        finalized_after=_aware("finalized_after", get("finalized_after")),
        finalized_before=_aware("finalized_before", get("finalized_before")),
    )


def _values(field: str, values: object, check: Callable[[object], _T]) -> tuple[_T, ...] | None:
    if values is None:
        return None
    if isinstance(values, str | bytes):
        raise FieldError(
            field, f"must be a list, not the single string {values!r}: {field}=[{values!r}]"
        )
    if not isinstance(values, Sequence | set | frozenset):
        raise FieldError(field, f"must be a list, got {type(values).__name__} {values!r}")
    checked = []
    for value in values:
        try:
            checked.append(check(value))
        except (TypeError, ValueError) as exc:
            raise FieldError(field, str(exc)) from None
    return tuple(checked)


def _state(value: object) -> JobState:
    try:
        return JobState(value)
    except ValueError:
        valid = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown state {value!r} (valid: {valid})") from None


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be strings, got {value!r}")
    if "\x00" in value:
        raise ValueError(f"must not contain a NUL character (U+0000), got {value!r}")
    return value


def _priority(value: object) -> int:
    if not _is_int(value) or not 1 <= value <= 4:
        raise ValueError(f"must be integers from 1 to 4, got {value!r}")
    return value


def _job_id(value: object) -> int:
    if not _is_int(value):
        raise TypeError(f"must be job ids (integers), got {value!r}")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _aware(field: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise FieldError(field, f"must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise FieldError(
            field,
            f"must be timezone-aware, got the naive {value.isoformat()} "
            "(e.g. datetime.now(timezone.utc))",
        )
    return value


def cancel_job(target: SyncTarget, job_id: int) -> JobRow | None:
    """Cancel a job. One that is not running is ``cancelled`` at once; a running one is
    cancelled cooperatively: its worker is told (NOTIFY) and cancels an async handler, or sets
    ``job.cancel_requested`` for a sync one. Finalised jobs are left as they are.
    """
    return run_sync(target, lambda conn: job_cancel(conn, job_id), what="cancel_job")


def retry_job(target: SyncTarget, job_id: int) -> JobRow | None:
    """Make a job that is not running available now (a discarded or cancelled one too); one
    out of attempts (a discarded one) gets one more. A running job, and an available one
    already due, are returned unchanged, as River's ``JobRetry`` leaves them."""
    return run_sync(target, lambda conn: job_retry(conn, job_id), what="retry_job")


def delete_job(target: SyncTarget, job_id: int) -> JobRow | None:
    """Delete a job that is not running, in any other state; its row as it was.

    ``None`` if there is no such job. A **running** job is not deleted, as River's
    ``JobDelete`` refuses it: :class:`JobRunningError` (a :class:`~sa_river.FieldError`)
    names the job, and nothing changes; cancel it first and delete it once its attempt has
    ended. Like River, the statement locks the job's row; on a ``Session`` or ``Connection``
    the lock is held until that transaction ends, so end it soon after the error too.
    """
    return run_sync(target, _delete_statement(job_id), what="delete_job")


def _delete_statement(job_id: int) -> _Statement[JobRow | None]:
    def statement(conn: Connection) -> JobRow | None:
        result = job_delete(conn, job_id)
        if isinstance(result, JobState):
            raise JobRunningError(job_id, result)
        return result

    return statement


# -- bulk changes: one set-based statement over the jobs the filters match -------------------


def cancel_jobs(
    target: SyncTarget,
    **filters: Unpack[JobFilters],
) -> list[int]:
    """Cancel every job the filters match, as :func:`cancel_job` cancels one, in one
    statement: those not running become ``cancelled`` at once; each running one is told
    (River's NOTIFY, one per job) and cancelled cooperatively; finalised jobs are left alone.

    The filters are :func:`list_jobs`'s, and at least one is required (a
    :class:`~sa_river.FieldError` otherwise): ``states=list(sa_river.JobState)`` says "every
    job" explicitly. Returns the ids of the jobs reached (running ones included), ascending;
    ``len()`` is the count.

    Like River's ``JobCancel``, it notifies every unfinished job it reaches, running or not,
    and every listening worker reads each notification: cancel hundreds of thousands of
    waiting jobs in slices (by ``ids`` or a ``created_*`` range), each its own transaction.

    >>> sa_river.cancel_jobs(session, kinds=["report"], queues=["nightly"])   # doctest: +SKIP
    [17, 18, 21]
    """
    statement = _bulk_statement(
        "cancel_jobs",
        job_cancel_many,
        _job_filter(filters),
    )
    return run_sync(target, statement, what="cancel_jobs")


def retry_jobs(
    target: SyncTarget,
    **filters: Unpack[JobFilters],
) -> list[int]:
    """Retry every job the filters match, as :func:`retry_job` retries one, in one statement:
    each one not running becomes available now (an available one already due is left alone)
    and one out of attempts (a discarded one) gets one more; running jobs are left alone.

    The filters are :func:`list_jobs`'s, and at least one is required (a
    :class:`~sa_river.FieldError` otherwise). Returns the ids of the jobs made available,
    ascending.

    >>> sa_river.retry_jobs(session, states=["discarded"], kinds=["mail"])   # doctest: +SKIP
    [40, 41]
    """
    statement = _bulk_statement(
        "retry_jobs",
        job_retry_many,
        _job_filter(filters),
    )
    return run_sync(target, statement, what="retry_jobs")


def delete_jobs(
    target: SyncTarget,
    *,
    limit: int | None = None,
    **filters: Unpack[JobFilters],
) -> list[int]:
    """Delete every job the filters match, in one statement, except running ones: a bulk
    delete never deletes a running job, it leaves it in place (no error; see
    :func:`delete_job` for one job).

    The filters are :func:`list_jobs`'s, and at least one is required (a
    :class:`~sa_river.FieldError` otherwise): ``states=list(sa_river.JobState)`` says "every
    job" explicitly. ``limit`` deletes at most that many, lowest ids first, so a big cleanup
    can go in batches of short transactions. Returns the ids deleted, ascending.

    >>> cutoff = datetime.now(timezone.utc) - timedelta(days=7)            # doctest: +SKIP
    >>> while sa_river.delete_jobs(engine, states=["completed"],           # doctest: +SKIP
    ...                            finalized_before=cutoff, limit=10_000):
    ...     pass
    """
    statement = _bulk_statement(
        "delete_jobs",
        _delete_many(limit),
        _job_filter(filters),
    )
    return run_sync(target, statement, what="delete_jobs")


def _bulk_statement(
    what: str, change: Callable[[Connection, JobFilter], list[int]], where: JobFilter
) -> _Statement[list[int]]:
    if where.is_empty():
        raise FieldError(
            "filters",
            f"{what} needs at least one filter (states, queues, kinds, tags, priorities, ids or "
            "a time bound); to change every job say so: states=list(sa_river.JobState)",
        )
    return lambda conn: change(conn, where)


def _delete_many(limit: object) -> Callable[[Connection, JobFilter], list[int]]:
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise FieldError("limit", f"must be None or an integer of at least 1, got {limit!r}")
    at_most: int | None = limit
    return lambda conn, where: job_delete_many(conn, where, limit=at_most)


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
    order_by: Literal["id", "created_at", "scheduled_at", "finalized_at", "priority"] = "id",
    descending: bool = False,
    after: JobRow | None = None,
    after_id: int | None = None,
    limit: int = 100,
    **filters: Unpack[JobFilters],
) -> list[JobRow]:
    """Async twin of :func:`list_jobs`."""
    statement = _list_statement(
        _job_filter(filters),
        order_by,
        descending,
        after,
        after_id,
        limit,
    )
    return await run_async(target, statement, what="list_jobs")


async def cancel_job_async(target: AsyncTarget, job_id: int) -> JobRow | None:
    """Async twin of :func:`cancel_job`."""
    return await run_async(target, lambda conn: job_cancel(conn, job_id), what="cancel_job")


async def retry_job_async(target: AsyncTarget, job_id: int) -> JobRow | None:
    """Async twin of :func:`retry_job`."""
    return await run_async(target, lambda conn: job_retry(conn, job_id), what="retry_job")


async def delete_job_async(target: AsyncTarget, job_id: int) -> JobRow | None:
    """Async twin of :func:`delete_job`."""
    return await run_async(target, _delete_statement(job_id), what="delete_job")


async def cancel_jobs_async(
    target: AsyncTarget,
    **filters: Unpack[JobFilters],
) -> list[int]:
    """Async twin of :func:`cancel_jobs`."""
    statement = _bulk_statement(
        "cancel_jobs",
        job_cancel_many,
        _job_filter(filters),
    )
    return await run_async(target, statement, what="cancel_jobs")


async def retry_jobs_async(
    target: AsyncTarget,
    **filters: Unpack[JobFilters],
) -> list[int]:
    """Async twin of :func:`retry_jobs`."""
    statement = _bulk_statement(
        "retry_jobs",
        job_retry_many,
        _job_filter(filters),
    )
    return await run_async(target, statement, what="retry_jobs")


async def delete_jobs_async(
    target: AsyncTarget,
    *,
    limit: int | None = None,
    **filters: Unpack[JobFilters],
) -> list[int]:
    """Async twin of :func:`delete_jobs`."""
    statement = _bulk_statement(
        "delete_jobs",
        _delete_many(limit),
        _job_filter(filters),
    )
    return await run_async(target, statement, what="delete_jobs")


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
