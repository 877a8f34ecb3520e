"""Hooks: code of yours that runs around every insert and every attempt of a job.

A hook is an object with any of five methods; subclass :class:`Hook` and override the ones you
need. Register it once per process with :func:`add_hook` (or for a block with
:func:`hooks_installed`); it then sees every insert made with ``sa_river.insert*`` in this
process and every attempt worked by a :class:`~sa_river.Worker` in this process.

``before_insert(jobs)``
    Called after the jobs were validated, before anything is written. ``job.metadata`` may be
    edited here (tracing context goes there) and the edit is stored. Raising here rejects the
    whole call: nothing is written and the caller sees the exception.
``after_insert_in_transaction(conn, jobs, results)``
    Called once the rows are written and before the insert returns, with the inserting
    ``Connection``, inside the inserting transaction (with an engine, before it commits; with
    the async inserts, the connection is the sync view ``AsyncConnection.run_sync`` hands out).
    For work that must join the jobs' transaction: :func:`sa_river.testing.inline` runs the
    handlers here. Raising here fails the insert as a database error would: the caller sees
    the exception, and ``after_insert`` hears of it.
``after_insert(jobs, results, error)``
    Called when the insert returned (``results`` in input order; empty for
    ``insert_many_fast``) or failed (``error``). With a session or connection, the caller's
    transaction is still open: the jobs exist once it commits.
``before_work(job)``
    Called just before the handler runs, on the handler's own thread (sync handlers) or in its
    own task (async handlers), so context variables set here are seen by the handler.
``after_work(job, outcome)``
    Called once per attempt with the :class:`WorkOutcome` being recorded, in the same thread
    or task as ``before_work``; after a sync handler's timeout it comes from the timeout
    watchdog's thread instead, as the handler's thread is abandoned. A job whose handler could
    not be found or whose args could not be decoded gets ``after_work`` without
    ``before_work``. Attempts given back at shutdown get neither outcome nor ``after_work``.

An exception raised by ``after_insert``, ``before_work`` or ``after_work`` is logged
(``event=hook_failed``) and otherwise ignored: observability must never lose or fail a job.

>>> class PrintHook(Hook):
...     def after_work(self, job, outcome):
...         print(job.kind, outcome.result, f"{outcome.duration:.3f}s")
>>> hook = add_hook(PrintHook())
>>> remove_hook(hook)

With no hook registered, inserts and attempts pay nothing for this module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sa_river.types import InsertResult, JobState

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from sa_river.workers import Job

__all__ = [
    "Hook",
    "InsertingJob",
    "WorkOutcome",
    "WorkResult",
    "add_hook",
    "hooks_installed",
    "installed_hooks",
    "remove_hook",
]

logger = logging.getLogger("sa_river.hooks")

WorkResult = Literal["completed", "retried", "snoozed", "cancelled", "discarded"]
"""What became of an attempt: ``retried`` means it failed and will run again (``available``
or ``retryable``); ``discarded`` means it failed for the last time."""


@dataclass
class InsertingJob:
    """A job about to be inserted, as :meth:`Hook.before_insert` sees it.

    Everything is already validated; only ``metadata`` may be changed, and changes are stored.
    """

    kind: str
    queue: str
    priority: int
    max_attempts: int
    tags: Sequence[str]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkOutcome:
    """How one attempt ended, as :meth:`Hook.after_work` sees it."""

    result: WorkResult
    state: JobState
    """The state recorded for the job (a quick retry or snooze stays ``available``)."""
    error: BaseException | None
    """What the handler raised (``JobSnooze`` and ``JobCancel`` included); None on success."""
    duration: float
    """Seconds from the handler's start (or the fetch, if it never started) to its outcome."""

    @property
    def failed(self) -> bool:
        """The attempt ended in an error (``retried`` or ``discarded``); a snooze or a
        cancellation is not a failure."""
        return self.result == "retried" or self.result == "discarded"


class Hook:
    """Base class for hooks: every method does nothing until overridden."""

    def before_insert(self, jobs: Sequence[InsertingJob]) -> None:
        """Called before ``jobs`` are written; may edit their metadata, or raise to reject."""

    def after_insert_in_transaction(
        self,
        conn: Connection,
        jobs: Sequence[InsertingJob],
        results: Sequence[InsertResult],
    ) -> None:
        """Called in the inserting transaction, on its connection, once the rows are written
        (``results`` empty for ``insert_many_fast``); raising fails the insert."""

    def after_insert(
        self,
        jobs: Sequence[InsertingJob],
        results: Sequence[InsertResult],
        error: BaseException | None,
    ) -> None:
        """Called after the insert returned (``error`` None) or failed."""

    def before_work(self, job: Job[Any]) -> None:
        """Called on the handler's thread or task, just before the handler runs."""

    def after_work(self, job: Job[Any], outcome: WorkOutcome) -> None:
        """Called once per attempt with the outcome being recorded."""


_HookT = TypeVar("_HookT", bound=Hook)

_lock = threading.Lock()
_hooks: tuple[Hook, ...] = ()


def installed_hooks() -> tuple[Hook, ...]:
    """The hooks registered in this process, in registration order."""
    return _hooks


def add_hook(hook: _HookT) -> _HookT:
    """Register ``hook`` for every insert and attempt in this process; returns it.

    >>> hook = add_hook(Hook())
    >>> hook in installed_hooks()
    True
    >>> remove_hook(hook)
    """
    if not isinstance(hook, Hook):
        raise TypeError(f"add_hook() takes a sa_river.Hook, got {type(hook).__name__}")
    global _hooks
    with _lock:
        if hook not in _hooks:
            _hooks = (*_hooks, hook)
    return hook


def remove_hook(hook: Hook) -> None:
    """Unregister ``hook``; a hook that is not registered is ignored."""
    global _hooks
    with _lock:
        _hooks = tuple(h for h in _hooks if h is not hook)


@contextlib.contextmanager
def hooks_installed(*hooks: Hook) -> Iterator[None]:
    """Register ``hooks`` for the duration of a ``with`` block (handy in tests).

    >>> with hooks_installed(Hook()):
    ...     len(installed_hooks())
    1
    """
    for hook in hooks:
        add_hook(hook)
    try:
        yield
    finally:
        for hook in hooks:
            remove_hook(hook)


# -- calling hooks (internal) -------------------------------------------------------------------


def _failed(hook: Hook, method: str) -> None:
    logger.exception(
        "hook %s.%s raised; ignored",
        type(hook).__name__,
        method,
        extra={"event": "hook_failed", "hook": type(hook).__name__, "method": method},
    )


def call_before_insert(hooks: Sequence[Hook], jobs: Sequence[InsertingJob]) -> None:
    for index, hook in enumerate(hooks):
        try:
            hook.before_insert(jobs)
        except BaseException as exc:
            # The hooks before this one saw before_insert, so they hear how it ended (a
            # tracing hook ends the span it opened).
            call_after_insert(hooks[:index], jobs, (), exc)
            raise


def write_in_transaction(hooks: Sequence[Hook]) -> bool:
    """Whether any of ``hooks`` implements :meth:`Hook.after_insert_in_transaction` (an insert
    then needs a transaction around its statement and theirs)."""
    return any(
        type(hook).after_insert_in_transaction is not Hook.after_insert_in_transaction
        for hook in hooks
    )


def call_after_insert_in_transaction(
    hooks: Sequence[Hook],
    conn: Connection,
    jobs: Sequence[InsertingJob],
    results: Sequence[InsertResult],
) -> None:
    # Not guarded like the other after-hooks: this one works inside the caller's transaction,
    # and swallowing its error would let the caller commit whatever half of it was done.
    for hook in reversed(hooks):
        hook.after_insert_in_transaction(conn, jobs, results)


def call_after_insert(
    hooks: Sequence[Hook],
    jobs: Sequence[InsertingJob],
    results: Sequence[InsertResult],
    error: BaseException | None,
) -> None:
    for hook in reversed(hooks):
        try:
            hook.after_insert(jobs, results, error)
        except Exception:
            _failed(hook, "after_insert")


def call_before_work(hooks: Sequence[Hook], job: Job[Any]) -> None:
    for hook in hooks:
        try:
            hook.before_work(job)
        except Exception:
            _failed(hook, "before_work")


def call_after_work(hooks: Sequence[Hook], job: Job[Any], outcome: WorkOutcome) -> None:
    # Reverse order, so that hooks nest: the first registered opens first and closes last.
    for hook in reversed(hooks):
        try:
            hook.after_work(job, outcome)
        except Exception:
            _failed(hook, "after_work")


def work_result(state: JobState, *, snoozed: bool) -> WorkResult:
    """The :data:`WorkResult` of an attempt that left its job in ``state``."""
    if snoozed:
        return "snoozed"
    if state is JobState.COMPLETED:
        return "completed"
    if state is JobState.CANCELLED:
        return "cancelled"
    if state is JobState.DISCARDED:
        return "discarded"
    return "retried"
