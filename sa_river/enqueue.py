"""Enqueue jobs in the caller's transaction.

``insert`` and ``insert_many`` take a ``Session``, ``Connection`` or ``Engine``; their ``_async``
twins take an ``AsyncSession``, ``AsyncConnection`` or ``AsyncEngine``. With a session or a
connection the job joins the caller's transaction: roll back and the job never existed, commit
and it exists, and idle workers hear of it through ``NOTIFY`` sent in that same transaction.
With an engine the insert is a transaction of its own: ``insert`` and ``insert_many`` are a
single statement (rows and notification), run in autocommit, one round trip.

>>> with Session(engine) as session, session.begin():       # doctest: +SKIP
...     session.add(user)
...     sa_river.insert(session, SendWelcome(user_id=user.id), InsertOpts(queue="mail"))

Everything is validated before anything is written: bad args or options raise
:class:`~sa_river.errors.InvalidJobError` naming the field, and the caller's transaction is left
as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from typing import TypeAlias, TypeVar

from sqlalchemy import Connection

from sa_river._targets import AsyncTarget, SyncTarget, run_async, run_sync
from sa_river.args import ArgsLike, encode_json, kind_and_encoded_args
from sa_river.errors import InvalidJobError
from sa_river.hooks import (
    Hook,
    InsertingJob,
    call_after_insert,
    call_after_insert_in_transaction,
    call_before_insert,
    installed_hooks,
    write_in_transaction,
)
from sa_river.options import (
    MAX_ATTEMPTS_DEFAULT,
    PRIORITY_DEFAULT,
    QUEUE_DEFAULT,
    InsertOpts,
    validate_max_attempts,
    validate_priority,
    validate_queue,
    validate_scheduled_at,
    validate_tags,
)
from sa_river.queries.job_insert import (
    JobInsertParams,
    job_insert_copy,
    job_insert_many,
    job_insert_one,
)
from sa_river.types import InsertResult
from sa_river.unique import states_bitmask, unique_key

__all__ = [
    "AsyncTarget",
    "InsertManyParams",
    "SyncTarget",
    "insert",
    "insert_async",
    "insert_many",
    "insert_many_async",
    "insert_many_fast",
    "insert_many_fast_async",
]

_R = TypeVar("_R")


@dataclass(frozen=True)
class InsertManyParams:
    """One job of a batch with its own options (River's ``InsertManyParams``)."""

    args: ArgsLike
    opts: InsertOpts | None = None


InsertManyItem: TypeAlias = ArgsLike | InsertManyParams


def prepare(args: ArgsLike, opts: InsertOpts | None = None) -> JobInsertParams:
    """Validate and encode one job; raises :class:`InvalidJobError` naming the bad field."""
    kind, encoded_args, class_opts = kind_and_encoded_args(args)
    # Options given here override the class's field by field; none given: the class's own.
    if opts is not None:
        merged = opts.merged_over(class_opts)
    elif class_opts is not None:
        merged = class_opts
    else:
        return _with_defaults(kind, encoded_args)
    queue = validate_queue(QUEUE_DEFAULT if merged.queue is None else merged.queue)
    priority = validate_priority(PRIORITY_DEFAULT if merged.priority is None else merged.priority)
    max_attempts = validate_max_attempts(
        MAX_ATTEMPTS_DEFAULT if merged.max_attempts is None else merged.max_attempts
    )
    tags = validate_tags([] if merged.tags is None else merged.tags)
    scheduled_at = (
        None if merged.scheduled_at is None else validate_scheduled_at(merged.scheduled_at)
    )
    metadata = {} if merged.metadata is None else merged.metadata
    if not isinstance(metadata, dict):
        metadata = dict(metadata) if hasattr(metadata, "items") else metadata
    if not isinstance(metadata, dict):
        raise InvalidJobError("metadata", f"must be a dict, got {type(metadata).__name__}")
    encoded_metadata = encode_json(metadata, field="metadata") if metadata else "{}"
    key: bytes | None = None
    states: str | None = None
    if merged.unique is not None:
        merged.unique.validate()
        key = unique_key(
            merged.unique,
            kind=kind,
            encoded_args=encoded_args,
            queue=queue,
            scheduled_at=scheduled_at,
            now=datetime.now(timezone.utc) if merged.unique.by_period else None,
        )
        states = states_bitmask(merged.unique.states())
    return JobInsertParams(
        kind=kind,
        args=encoded_args,
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        metadata=encoded_metadata,
        tags=tags,
        scheduled_at=scheduled_at,
        pending=bool(merged.pending),
        unique_key=key,
        unique_states=states,
    )


_new_params = object.__new__


def _with_defaults(kind: str, encoded_args: str) -> JobInsertParams:
    """A job with no option at all, the bulk of most batches: every value is a default, valid
    by construction, so nothing is merged or validated again. Fills the frozen dataclass's
    ``__dict__`` directly, a third of what its generated ``__init__`` costs."""
    params = _new_params(JobInsertParams)
    params.__dict__.update(
        kind=kind,
        args=encoded_args,
        queue=QUEUE_DEFAULT,
        priority=PRIORITY_DEFAULT,
        max_attempts=MAX_ATTEMPTS_DEFAULT,
        metadata="{}",
        tags=(),
        scheduled_at=None,
        pending=False,
        unique_key=None,
        unique_states=None,
    )
    return params


def _prepare_many(items: Sequence[InsertManyItem]) -> list[JobInsertParams]:
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise InvalidJobError("items", f"must be a list of jobs, got {type(items).__name__}")
    prepared = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, InsertManyParams):
                prepared.append(prepare(item.args, item.opts))
            else:
                prepared.append(prepare(item))
        except InvalidJobError as exc:
            raise type(exc)(f"items[{index}].{exc.field}", str(exc).split(": ", 1)[-1]) from exc
    return prepared


def _insert_prepared(conn: Connection, params: Sequence[JobInsertParams]) -> list[InsertResult]:
    """Insert, folding jobs of the batch that share a unique key into the first of them."""
    first_of_key: dict[bytes, int] = {}
    to_send: list[JobInsertParams] = []
    slot: list[int] = []
    for p in params:
        if p.unique_key is not None and p.unique_key in first_of_key:
            slot.append(-1 - first_of_key[p.unique_key])
            continue
        if p.unique_key is not None:
            first_of_key[p.unique_key] = len(to_send)
        slot.append(len(to_send))
        to_send.append(p)
    rows = job_insert_many(conn, to_send)
    results = []
    for s in slot:
        if s >= 0:
            row, skipped = rows[s]
            results.append(InsertResult(job=row, unique_skipped_as_duplicate=skipped))
        else:
            results.append(InsertResult(job=rows[-1 - s][0], unique_skipped_as_duplicate=True))
    return results


def _insert_one(conn: Connection, params: JobInsertParams) -> InsertResult:
    row, skipped = job_insert_one(conn, params)
    return InsertResult(job=row, unique_skipped_as_duplicate=skipped)


def insert(target: SyncTarget, args: ArgsLike, opts: InsertOpts | None = None) -> InsertResult:
    """Insert one job in ``target``'s transaction.

    ``args`` is a :class:`~sa_river.args.JobArgs` instance or a ``(kind, dict)`` tuple.
    Returns the stored job; for a unique job whose key is held by a live job, that job with
    ``unique_skipped_as_duplicate=True``.

    >>> result = sa_river.insert(session, ("send_email", {"to": "a@example.com"}))  # doctest: +SKIP
    >>> result.job.state                                                          # doctest: +SKIP
    <JobState.AVAILABLE: 'available'>
    """
    return _insert_sync(
        target, [prepare(args, opts)], _insert_one_listed, "insert", one_statement=True
    )[0]


def insert_many(target: SyncTarget, items: Sequence[InsertManyItem]) -> list[InsertResult]:
    """Insert a batch of jobs in one round trip; results come back in input order.

    Items are args (``JobArgs`` or ``(kind, dict)``) or :class:`InsertManyParams` carrying
    their own options. Unique jobs are honoured, including duplicates within the batch.
    """
    return _insert_sync(
        target, _prepare_many(items), _insert_prepared, "insert_many", one_statement=True
    )


def insert_many_fast(target: SyncTarget, items: Sequence[InsertManyItem]) -> int:
    """Insert a batch through ``COPY`` and return how many jobs were written.

    The fastest path for large batches; it returns no rows and does not take unique options
    (use :func:`insert_many` for those).
    """
    params = _prepare_many(items)
    _reject_unique_for_copy(params)
    return _insert_sync(target, params, job_insert_copy, "insert_many_fast")


def _reject_unique_for_copy(params: Sequence[JobInsertParams]) -> None:
    for index, p in enumerate(params):
        if p.unique_key is not None:
            raise InvalidJobError(
                f"items[{index}].unique",
                "insert_many_fast (COPY) cannot check uniqueness; use insert_many",
            )


async def insert_async(
    target: AsyncTarget, args: ArgsLike, opts: InsertOpts | None = None
) -> InsertResult:
    """Async twin of :func:`insert` for ``AsyncSession``/``AsyncConnection``/``AsyncEngine``."""
    results = await _insert_async(
        target, [prepare(args, opts)], _insert_one_listed, "insert", one_statement=True
    )
    return results[0]


async def insert_many_async(
    target: AsyncTarget, items: Sequence[InsertManyItem]
) -> list[InsertResult]:
    """Async twin of :func:`insert_many`."""
    return await _insert_async(
        target, _prepare_many(items), _insert_prepared, "insert_many", one_statement=True
    )


async def insert_many_fast_async(target: AsyncTarget, items: Sequence[InsertManyItem]) -> int:
    """Async twin of :func:`insert_many_fast` (the same ``COPY``, run through ``run_sync``)."""
    params = _prepare_many(items)
    _reject_unique_for_copy(params)
    return await _insert_async(target, params, job_insert_copy, "insert_many_fast")


# -- one path for every insert, with hooks when any are registered ------------------------------

_Work: TypeAlias = Callable[[Connection, Sequence[JobInsertParams]], _R]


def _insert_one_listed(conn: Connection, params: Sequence[JobInsertParams]) -> list[InsertResult]:
    return [_insert_one(conn, params[0])]


def _work_on(work: _Work[_R], params: Sequence[JobInsertParams], conn: Connection) -> _R:
    return work(conn, params)


def _insert_sync(
    target: SyncTarget,
    params: list[JobInsertParams],
    work: _Work[_R],
    what: str,
    *,
    one_statement: bool = False,
) -> _R:
    """``work`` on ``target`` with the hooks; ``one_statement``: ``work`` writes with a single
    statement, so an engine may run it in autocommit (unless a hook writes beside it)."""
    hooks = installed_hooks()
    if not hooks:
        return run_sync(target, partial(_work_on, work, params), what=what, atomic=one_statement)
    atomic = one_statement and not write_in_transaction(hooks)
    with _InsertHooks(hooks, params) as hooked:
        out = run_sync(target, partial(hooked.work_on, work), what=what, atomic=atomic)
    hooked.succeeded(out)
    return out


async def _insert_async(
    target: AsyncTarget,
    params: list[JobInsertParams],
    work: _Work[_R],
    what: str,
    *,
    one_statement: bool = False,
) -> _R:
    """Async twin of :func:`_insert_sync`."""
    hooks = installed_hooks()
    if not hooks:
        return await run_async(
            target, partial(_work_on, work, params), what=what, atomic=one_statement
        )
    atomic = one_statement and not write_in_transaction(hooks)
    with _InsertHooks(hooks, params) as hooked:
        out = await run_async(target, partial(hooked.work_on, work), what=what, atomic=atomic)
    hooked.succeeded(out)
    return out


class _InsertHooks:
    """One insert call as the registered hooks see it: ``before_insert`` when made (``params``
    then carries any metadata they changed), ``after_insert_in_transaction`` through
    :meth:`work_on`, ``after_insert`` with the error if the ``with`` block raises, or with the
    results through :meth:`succeeded`. Sync and async inserts both go through here, so the
    hooks see the same calls from either."""

    __slots__ = ("hooks", "jobs", "params")

    def __init__(self, hooks: Sequence[Hook], params: list[JobInsertParams]) -> None:
        self.hooks = hooks
        self.jobs, self.params = _before_insert(hooks, params)

    def __enter__(self) -> _InsertHooks:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            call_after_insert(self.hooks, self.jobs, (), exc)

    def work_on(self, work: _Work[_R], conn: Connection) -> _R:
        """``work`` on the hooked params, then ``after_insert_in_transaction`` on ``conn``."""
        out = work(conn, self.params)
        call_after_insert_in_transaction(self.hooks, conn, self.jobs, _results(out))
        return out

    def succeeded(self, out: object) -> None:
        """``out`` is the call's return: its results, or a count for ``COPY`` (no rows)."""
        call_after_insert(self.hooks, self.jobs, _results(out), None)


def _results(out: object) -> Sequence[InsertResult]:
    """An insert's results as the hooks get them: ``COPY`` returns a count, and no rows."""
    return out if isinstance(out, list) else ()


def _before_insert(
    hooks: Sequence[Hook], params: list[JobInsertParams]
) -> tuple[list[InsertingJob], list[JobInsertParams]]:
    """Show ``params`` to the hooks; the params again, with any metadata they changed."""
    jobs = [
        InsertingJob(
            kind=p.kind,
            queue=p.queue,
            priority=p.priority,
            max_attempts=p.max_attempts,
            tags=tuple(p.tags),
            metadata=json.loads(p.metadata),
        )
        for p in params
    ]
    call_before_insert(hooks, jobs)
    updated = []
    for index, (p, job) in enumerate(zip(params, jobs, strict=True)):
        if not isinstance(job.metadata, dict):
            raise InvalidJobError(
                f"items[{index}].metadata", "a hook replaced the metadata with a non-dict"
            )
        metadata = encode_json(job.metadata, field="metadata") if job.metadata else "{}"
        updated.append(p if metadata == p.metadata else replace(p, metadata=metadata))
    return jobs, updated
