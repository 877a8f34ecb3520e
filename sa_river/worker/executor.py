"""Executor: runs one job at a time per slot, sync and async handlers as equals (internal).

Sync handlers run on a pool of threads sized to the runner's slots; async handlers run as
tasks on one event loop thread. Every attempt ends in exactly one outcome handed to the
completer, whichever comes first: the handler returning or raising, its timeout, a
cancellation, or shutdown releasing it.

Timeouts: an async handler past its timeout is cancelled. A sync handler cannot be stopped
from outside in Python, so past its timeout it is *abandoned*: the timeout is recorded as the
attempt's error, its slot is freed, a fresh thread replaces it in the pool, and whatever the
abandoned thread does later is ignored. Such a thread keeps running until the handler returns,
so a handler that can hang should enforce its own I/O timeouts too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from sa_river.errors import UnknownJobKindError, one_line
from sa_river.hooks import (
    Hook,
    WorkOutcome,
    call_after_work,
    call_before_work,
    installed_hooks,
    work_result,
)
from sa_river.queries.job_outcome import AttemptOutcome, OutcomeKind
from sa_river.retry import RetryPolicy, fallback_retry_policy
from sa_river.types import AttemptError, JobRow, JobState
from sa_river.worker.invocation import (
    COMPLETED_IN_SESSION,
    HandlerSessions,
    Invoker,
    encoded_output,
)
from sa_river.workers import (
    ErrorHandler,
    Handler,
    Job,
    JobCancel,
    JobDiscard,
    JobRetry,
    JobSnooze,
    Workers,
)

__all__ = ["Executor", "JobTimeoutError", "decide_outcome", "outcome_for"]

logger = logging.getLogger("sa_river.executor")

_T = TypeVar("_T")


class JobTimeoutError(Exception):
    """Recorded as the error of an attempt that outlived its timeout."""


_DIRECTIVES = (JobSnooze, JobCancel, JobDiscard, JobRetry)
"""What a handler raises (or an error handler returns) to choose its attempt's outcome."""


def outcome_for(
    row: JobRow,
    exc: BaseException | None,
    *,
    retry_policy: RetryPolicy,
    scheduler_interval: float,
    decision: BaseException | None = None,
    output: str | None = None,
) -> AttemptOutcome:
    """How one attempt of ``row`` ends, given what its handler raised (``None``: it returned,
    with ``output``).

    ``decision`` is an error handler's choice for ``exc`` (one of the directives: snooze,
    cancel, discard, retry); ``exc`` is then still the error recorded. A retry or snooze due
    within ``scheduler_interval`` goes straight back to ``available`` (with its future
    ``scheduled_at``), so it runs on time without waiting for the scheduler.
    """
    job_id, attempt = row.id, row.attempt
    if exc is None:
        return AttemptOutcome.completed(job_id, attempt, output=output)
    directive = decision if decision is not None else exc
    if isinstance(directive, JobSnooze):
        delay = directive.delay.total_seconds()
        return AttemptOutcome.snoozed(
            job_id,
            attempt,
            delay_seconds=delay,
            available=delay <= scheduler_interval,
            error=None if exc is directive else _attempt_error_json(row, exc),
        )
    error = _attempt_error_json(row, exc)
    if isinstance(directive, JobCancel):
        return AttemptOutcome.cancelled(job_id, attempt, error=error)
    if isinstance(directive, JobDiscard) or attempt >= row.max_attempts:
        return AttemptOutcome.discarded(job_id, attempt, error=error)
    if isinstance(directive, JobRetry):
        delay = directive.delay.total_seconds()
    else:
        delay = retry_policy(attempt).total_seconds()
    return AttemptOutcome.retryable(
        job_id, attempt, error=error, delay_seconds=delay, available=delay <= scheduler_interval
    )


def decide_on_error(
    error_handler: ErrorHandler | None, job: Job[Any], exc: BaseException
) -> BaseException | None:
    """What ``error_handler`` decides for ``exc`` (a directive), or ``None`` for the usual
    rules: also when there is none, ``exc`` is itself a directive, or the handler fails."""
    if error_handler is None or isinstance(exc, _DIRECTIVES):
        return None
    try:
        decision = error_handler(job, exc)
    except _DIRECTIVES as raised:
        return raised
    except Exception:
        logger.exception(
            "job %d (%s): the error handler raised; the usual retry rules apply",
            job.id,
            job.kind,
            extra={"event": "error_handler_failed", "job_id": job.id, "kind": job.kind},
        )
        return None
    if decision is None or isinstance(decision, _DIRECTIVES):
        return decision
    logger.warning(
        "job %d (%s): the error handler returned %r, which is not JobSnooze, JobCancel, "
        "JobDiscard, JobRetry or None; the usual retry rules apply",
        job.id,
        job.kind,
        decision,
        extra={"event": "error_handler_failed", "job_id": job.id, "kind": job.kind},
    )
    return None


def decide_outcome(
    job: Job[Any],
    handler: Handler | None,
    exc: BaseException | None,
    value: Any,
    *,
    error_handler: ErrorHandler | None,
    retry_policy: RetryPolicy,
    scheduler_interval: float,
) -> tuple[AttemptOutcome, BaseException | None]:
    """How an attempt of ``job`` ends, and the error it records: the rule the worker and
    :mod:`sa_river.testing` share.

    ``exc`` is what the handler raised, or ``None`` when it returned ``value``, which is then
    recorded as the job's output (with what it gave ``job.record_output``); an output that is
    not JSON fails the attempt. A failed attempt asks the kind's error handler (else
    ``error_handler``) and backs off by the kind's retry policy (else ``retry_policy``).
    """
    output = None
    if exc is None and (value is not None or job._output is not None):
        try:
            output = encoded_output(job, value)
        except Exception as not_json:
            exc = not_json
    decision = None
    if exc is not None:
        on_error = (handler.on_error if handler else None) or error_handler
        decision = decide_on_error(on_error, job, exc)
    outcome = outcome_for(
        job.row,
        exc,
        retry_policy=(handler.retry if handler else None) or retry_policy,
        scheduler_interval=scheduler_interval,
        decision=decision,
        output=output,
    )
    return outcome, exc


def _attempt_error_json(row: JobRow, exc: BaseException) -> str:
    if isinstance(exc, UnknownJobKindError | JobTimeoutError):
        message, trace = str(exc), ""
    else:
        message = f"{type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return AttemptError.stored_now(row.attempt, message, trace).to_json_text()


class _Running:
    """One attempt in flight (a plain slotted class: one is made per job)."""

    __slots__ = (
        "deadline",
        "handler",
        "hooks",
        "is_sync",
        "job",
        "on_done",
        "settled",
        "started_at",
        "task",
        "thread",
        "timed_out",
    )

    def __init__(
        self,
        job: Job[Any],
        handler: Handler | None,
        on_done: Callable[[], None],
        deadline: float | None,
        is_sync: bool = True,
        hooks: tuple[Hook, ...] = (),
    ) -> None:
        self.job = job
        self.hooks = hooks
        self.handler = handler
        self.on_done = on_done
        self.deadline = deadline
        self.started_at = time.monotonic()
        self.thread: threading.Thread | None = None
        self.is_sync = is_sync
        self.settled = False
        self.task: asyncio.Task[Any] | None = None
        self.timed_out = False


_STALL = 0.0005
"""How long queued tasks may wait without any thread taking one before more threads are woken."""


class _ThreadPool:
    """Threads for sync handlers, made as they are needed up to ``size``; an abandoned thread
    is replaced, then retires when free.

    A batch handed over wakes one thread. More are woken (or made, up to ``size``) only when
    the queue stops moving: a monitor looks every :data:`_STALL` seconds while tasks wait, and
    if no thread took one since its last look (they are all inside handlers), it wakes as many
    idle threads as tasks wait and makes new ones for the rest. Quick jobs are so run back to
    back by few threads, without a thread switch per job, while slow jobs still all start
    within a fraction of a millisecond; and a runner with many slots does not pay for threads
    its jobs never need (making a hundred up front is a visible share of a short drain).
    """

    def __init__(self, size: int, name: str, run: Callable[[_Running], None]) -> None:
        self._tasks: deque[_Running] = deque()
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # idle pool threads wait here
        self._watch_cond = threading.Condition(lock)  # the monitor waits here
        self._idle = 0
        self._taken = 0
        self._closed = False
        self._run = run
        self._name = name
        self._retiring: set[threading.Thread] = set()
        self._spawned = 0  # for thread names
        self._live = 0  # threads that take tasks (not retiring)
        self._size = size
        self._monitor = threading.Thread(target=self._watch, name=f"{name}-monitor", daemon=True)

    def start(self) -> None:
        with self._cond:
            self._spawn()
        self._monitor.start()

    def _spawn(self) -> None:
        """Make one more thread (the lock held)."""
        thread = threading.Thread(
            target=self._loop, name=f"{self._name}-{self._spawned}", daemon=True
        )
        self._spawned += 1
        self._live += 1
        thread.start()

    def _loop(self) -> None:
        cond, tasks, run = self._cond, self._tasks, self._run
        while True:
            with cond:
                while not tasks:
                    if self._closed:
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                task = tasks.popleft()
                self._taken += 1
            try:
                run(task)
            except Exception:  # never lose a pool thread to a bug
                logger.exception(
                    "executor: unexpected error running a job", extra={"event": "executor_error"}
                )
            if self._retiring:
                me = threading.current_thread()
                with cond:
                    if me in self._retiring:
                        # This thread was abandoned past a timeout and replaced: retire it.
                        self._retiring.discard(me)
                        return

    def _watch(self) -> None:
        tasks = self._tasks
        with self._watch_cond:
            while not self._closed:
                if not tasks:
                    self._watch_cond.wait()
                    continue
                taken = self._taken
                self._watch_cond.wait(_STALL if self._idle else 10 * _STALL)
                if not tasks or self._taken != taken or self._closed:
                    continue
                waiting = len(tasks)
                if self._idle:
                    self._cond.notify(min(waiting, self._idle))
                for _ in range(min(waiting - self._idle, self._size - self._live)):
                    self._spawn()

    def submit(self, tasks: list[_Running]) -> None:
        with self._cond:
            was_empty = not self._tasks
            self._tasks.extend(tasks)
            if self._idle:
                self._cond.notify()
            if was_empty:
                self._watch_cond.notify()

    def replace_one(self, stuck: threading.Thread | None) -> None:
        """``stuck`` runs an abandoned handler: add a thread so the pool keeps its size, and
        let ``stuck`` retire once its handler returns."""
        with self._cond:
            if stuck is not None:
                self._retiring.add(stuck)
                self._live -= 1
            self._spawn()

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._watch_cond.notify_all()


class Executor:
    """Runs fetched jobs and hands each attempt's outcome to ``report``."""

    def __init__(
        self,
        workers: Workers,
        report: Callable[[AttemptOutcome], None],
        *,
        threads: int,
        default_timeout: timedelta | None,
        retry_policy: RetryPolicy,
        scheduler_interval: float,
        sessions: HandlerSessions | None = None,
    ) -> None:
        self._workers = workers
        self._invokers = {
            kind: Invoker(workers.get(kind), workers, sessions) for kind in workers.kinds()
        }
        self._error_handler = workers.error_handler
        self.context: Any = None
        """What the registry's lifespan yielded: every job's ``context``."""
        self._report = report
        self._default_timeout = default_timeout
        self._retry_policy = retry_policy
        self._scheduler_interval = scheduler_interval
        self._pool = _ThreadPool(threads, "sa_river.executor", self._run_sync)
        self._running: dict[int, _Running] = {}
        self._lock = threading.Condition(threading.Lock())
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="sa_river.executor-async", daemon=True
        )
        self._watchdog_stop = threading.Event()
        self._watchdog = threading.Thread(
            target=self._watch_timeouts, name="sa_river.executor-watchdog", daemon=True
        )

    def start(self) -> None:
        """Start the handler threads, the event loop thread and the timeout watchdog."""
        self._pool.start()
        self._loop_thread.start()
        self._watchdog.start()

    # -- running --------------------------------------------------------------------------

    def execute_many(self, rows: Sequence[JobRow], on_done: Callable[[], None]) -> None:
        """Start one attempt of each of ``rows`` (one fetch); ``on_done`` is called once per
        attempt, when its outcome is reported."""
        started: list[_Running] = []
        failed: list[tuple[_Running, BaseException]] = []
        get_handler = self._workers.get
        hooks = installed_hooks()
        context = self.context
        for row in rows:
            try:
                handler = get_handler(row.kind)
                args = handler.decode(row.args)
            except Exception as error:
                job = Job(row=row, args=None, context=context)
                running = _Running(job, None, on_done, None, hooks=hooks)
                failed.append((running, error))
                continue
            running = _Running(
                Job(row=row, args=args, context=context),
                handler,
                on_done,
                None,  # set when a sync handler starts (async ones use a timer)
                not handler.is_async,
                hooks,
            )
            started.append(running)
        with self._lock:
            running_by_id = self._running
            for running in started:
                running_by_id[running.job.row.id] = running
            for running, _ in failed:
                running_by_id[running.job.row.id] = running
        for running, exc in failed:
            self._settle(running, exc)
        sync = [r for r in started if r.is_sync]
        if sync:
            self._pool.submit(sync)
        if len(sync) != len(started):
            # One hand-over to the event loop for the whole fetch, not one per job.
            self._loop.call_soon_threadsafe(
                self._start_async, [r for r in started if not r.is_sync]
            )

    def _start_async(self, batch: list[_Running]) -> None:
        """On the event loop: a task for each async attempt of a fetch."""
        create_task = self._loop.create_task
        for running in batch:
            create_task(self._run_async(running))

    def _run_sync(self, running: _Running) -> None:
        assert running.handler is not None
        with self._lock:
            if running.settled:
                return  # released at shutdown while it waited for a thread
            # The timeout counts from the handler's start, not from the fetch.
            timeout = running.handler.timeout_or(self._default_timeout)
            running.started_at = time.monotonic()
            if timeout is not None:
                running.deadline = running.started_at + timeout.total_seconds()
            running.thread = threading.current_thread()
        if running.hooks:
            call_before_work(running.hooks, running.job)
        try:
            value = self._invokers[running.handler.kind].call(running.job)
        except BaseException as exc:
            self._settle(running, exc)
        else:
            self._settle(running, None, value)

    async def _run_async(self, running: _Running) -> None:
        handler = running.handler
        assert handler is not None
        with self._lock:
            if running.settled:
                return  # released at shutdown before it started
            # cancel() cancels this task from now on; a cancel that came before is seen here.
            running.task = asyncio.current_task()
            event = running.job._cancel_requested
            cancelled_early = event is not None and event.is_set()
        if cancelled_early:
            self._settle(running, JobCancel("cancelled before it started"))
            return
        running.started_at = time.monotonic()
        # The timeout is a timer that cancels this very task (asyncio.wait_for would wrap the
        # handler in a task of its own, doubling the loop's work per job). A TimeoutError the
        # handler raises itself is so recorded as itself, never taken for the timeout.
        timeout = handler.timeout_or(self._default_timeout)
        timer = (
            None
            if timeout is None
            else self._loop.call_later(timeout.total_seconds(), _time_out, running)
        )
        if running.hooks:
            call_before_work(running.hooks, running.job)
        try:
            value = await self._invokers[handler.kind].call_async(running.job)
        except asyncio.CancelledError:
            if running.timed_out:
                self._settle(running, _timeout_error(timeout))
            elif running.job.cancel_requested.is_set():
                self._settle(running, JobCancel("cancelled while running"))
            else:
                # Released at shutdown (already settled: this reports nothing), or the
                # handler raised CancelledError itself: an error, so its slot is freed.
                self._settle(running, RuntimeError("the handler was cancelled"))
        except BaseException as exc:
            self._settle(running, exc)
        else:
            self._settle(running, None, value)
        finally:
            if timer is not None:
                timer.cancel()

    def _settle(self, running: _Running, exc: BaseException | None, value: Any = None) -> None:
        """Report the attempt's outcome exactly once, however many parties try. ``value``:
        what the handler returned (``exc`` None), recorded as the job's output."""
        job_id = running.job.row.id
        with self._lock:
            if running.settled:
                return
            running.settled = True
            self._running.pop(job_id, None)
            self._lock.notify_all()
        if exc is None and value is COMPLETED_IN_SESSION:
            # Completed in the handler's own session: there is nothing left to write.
            if logger.isEnabledFor(logging.DEBUG):
                _log_attempt(running, None, JobState.COMPLETED)
            if running.hooks:
                _after_work(running, JobState.COMPLETED, None, snoozed=False)
            running.on_done()
            return
        if exc is not None and not isinstance(exc, Exception):
            exc = RuntimeError(f"handler raised {type(exc).__name__}: {exc}")
        try:
            outcome, exc = decide_outcome(
                running.job,
                running.handler,
                exc,
                value,
                error_handler=self._error_handler,
                retry_policy=self._retry_policy,
                scheduler_interval=self._scheduler_interval,
            )
        except Exception as failure:
            # A retry policy that raises, an exception whose str() raises...: the attempt
            # must still end in exactly one outcome, or the job would stay running forever.
            logger.exception(
                "job %d: could not work out its outcome",
                job_id,
                extra={"event": "executor_error", "job_id": job_id},
            )
            outcome = outcome_for(
                running.job.row,
                RuntimeError(f"sa_river could not record this attempt: {type(failure).__name__}"),
                retry_policy=fallback_retry_policy,
                scheduler_interval=self._scheduler_interval,
            )
        if exc is not None and not isinstance(exc, JobSnooze):
            logger.info(
                "job %d (%s) attempt %d failed: %s -> %s",
                job_id,
                running.job.kind,
                running.job.attempt,
                one_line(exc),
                outcome.state.value,
                extra={
                    "event": "job_failed",
                    "job_id": job_id,
                    "kind": running.job.kind,
                    "queue": running.job.queue,
                    "attempt": running.job.attempt,
                    "duration_ms": round((time.monotonic() - running.started_at) * 1000, 1),
                },
            )
        self._report(outcome)
        if logger.isEnabledFor(logging.DEBUG):
            _log_attempt(running, exc, outcome.state)
        if running.hooks:
            _after_work(running, outcome.state, exc, snoozed=outcome.kind is OutcomeKind.SNOOZED)
        running.on_done()

    def _watch_timeouts(self) -> None:
        while not self._watchdog_stop.wait(0.05):
            try:
                self._expire_overdue()
            except Exception:  # the watchdog must outlive any one job's trouble
                logger.exception(
                    "executor: timeout watchdog error", extra={"event": "executor_error"}
                )

    def _expire_overdue(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [
                r
                for r in self._running.values()
                if r.is_sync and r.deadline is not None and r.deadline <= now
            ]
        for running in expired:
            assert running.handler is not None
            timeout = running.handler.timeout_or(self._default_timeout)
            logger.warning(
                "job %d (%s) outlived its timeout; its thread is abandoned",
                running.job.id,
                running.job.kind,
                extra={"event": "job_timeout", "job_id": running.job.id},
            )
            self._pool.replace_one(running.thread)
            self._settle(running, _timeout_error(timeout))

    # -- control --------------------------------------------------------------------------

    def cancel(self, job_id: int) -> bool:
        """Cancel a running job: an async one at once, a sync one cooperatively."""
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                return False
            running.job.cancel_requested.set()
            task = running.task
        if task is not None:
            self._loop.call_soon_threadsafe(task.cancel)
        return True

    def running_ids(self) -> list[int]:
        with self._lock:
            return list(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no attempt is running; true if that happened within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def release_all(self) -> list[AttemptOutcome]:
        """Stop tracking every running attempt (cancelling async ones) and return the
        ``released`` outcome of each, for the caller to write (shutdown gives them back).

        Nothing is reported for them. Queued sync attempts that had not started are skipped by
        their thread (they are settled now), so a released job never runs here after being
        given back.
        """
        with self._lock:
            released = [r for r in self._running.values() if not r.settled]
            for running in released:
                running.settled = True
            self._running.clear()
            self._lock.notify_all()
        for running in released:
            if running.task is not None:
                self._loop.call_soon_threadsafe(running.task.cancel)
        return [AttemptOutcome.released(r.job.row.id, r.job.row.attempt) for r in released]

    def run_coroutine(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 60.0) -> _T:
        """Run ``coroutine`` on the event loop async handlers run on; its result."""
        if not self._loop_thread.is_alive():
            coroutine.close()
            raise RuntimeError("the executor's event loop is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def shutdown(self) -> None:
        """Stop the threads started by :meth:`start` (safe when it was never called)."""
        self._watchdog_stop.set()
        self._pool.shutdown()
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
        if not self._loop.is_running():
            self._loop.close()


def _after_work(
    running: _Running, state: JobState, exc: BaseException | None, *, snoozed: bool
) -> None:
    outcome = WorkOutcome(
        result=work_result(state, snoozed=snoozed),
        state=state,
        error=exc,
        duration=time.monotonic() - running.started_at,
    )
    call_after_work(running.hooks, running.job, outcome)


def _log_attempt(running: _Running, exc: BaseException | None, state: JobState) -> None:
    """One DEBUG line per finished attempt, with the structured fields the CLI prints; ``state``
    is the state its outcome asks for (a quick retry or snooze reads ``available``)."""
    job = running.job
    logger.debug(
        "job %d (%s) attempt %d %s -> %s",
        job.id,
        job.kind,
        job.attempt,
        "succeeded" if exc is None else f"ended with {type(exc).__name__}",
        state.value,
        extra={
            "event": "job_done",
            "job_id": job.id,
            "kind": job.kind,
            "queue": job.queue,
            "attempt": job.attempt,
            "state": state.value,
            "duration_ms": round((time.monotonic() - running.started_at) * 1000, 1),
        },
    )


def _time_out(running: _Running) -> None:
    """On the event loop, when an async attempt's timeout is up: cancel its task."""
    running.timed_out = True
    if running.task is not None:
        running.task.cancel()


def _timeout_error(timeout: timedelta | None) -> JobTimeoutError:
    seconds = timeout.total_seconds() if timeout else 0
    return JobTimeoutError(f"job timed out after {seconds:g}s")
