"""BatchCompleter: records attempts' outcomes in batches (internal).

Outcomes queue up and are written by one UPDATE per batch, at the latest every
``flush_interval`` seconds or as soon as ``batch_size`` are waiting. The queue is bounded: when
the database falls behind, executors block on :meth:`BatchCompleter.add`, which stops slots
being freed, which stops fetching (back-pressure). A batch that fails on connection trouble is
retried with backoff, never dropped; the UPDATE only touches rows still ``running``, in the
same attempt.

A batch that fails for another reason (a bad value in one outcome, say a retry delay so large
that ``scheduled_at`` overflows) is written again row by row, each in its own transaction, so
only the offending outcomes fail. An outcome that cannot be recorded even alone ends its attempt
with a fallback error instead (``retryable`` after
:data:`~sa_river.retry.FALLBACK_RETRY_SECONDS`, or ``discarded`` at the last attempt), so its
job does not stay ``running`` until a rescue. The writing loop outlives any unexpected error:
it logs it and goes on with the next batch.

Every outcome is an :class:`~sa_river.queries.job_outcome.AttemptOutcome`, written by
:func:`~sa_river.queries.job_outcome.job_set_state_if_running_many`. The completer holds one
autocommit connection of the runner's pool: each statement is its own
transaction, so a batch costs one round trip per statement.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from sa_river.errors import is_transient_error, one_line
from sa_river.queries.job_outcome import (
    AttemptOutcome,
    OutcomeKind,
    job_set_state_if_running_count,
    job_set_state_if_running_many,
)
from sa_river.retry import FALLBACK_RETRY_SECONDS, Backoff
from sa_river.service import Service
from sa_river.types import AttemptError
from sa_river.worker.connection import HeldConnection

__all__ = [
    "BatchCompleter",
    "fallback_error_json",
]

logger = logging.getLogger("sa_river.completer")

# Short: while the database is away this is one connection attempt a second, and outcomes
# reach it within a second of its return.
_BACKOFF_START = 0.05
_BACKOFF_MAX = 1.0
_MESSAGE_LIMIT = 2000


T = TypeVar("T")


class _GaveUp(Exception):
    """Stopping, and the database stayed unreachable for longer than ``give_up_after``."""


class BatchCompleter(Service):
    """Collects attempts' outcomes and writes them in batches."""

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float,
        batch_size: int,
        max_pending: int | None = None,
        give_up_after: float = 30.0,
    ) -> None:
        super().__init__("completer")
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._max_pending = max_pending or batch_size * 50
        self._give_up_after = give_up_after
        lock = threading.Lock()
        self._has_work = threading.Condition(lock)  # the writer waits on this
        self._space = threading.Condition(lock)  # back-pressured adders and wait_flushed
        self._pending: list[AttemptOutcome] = []
        self._unwritten = 0  # queued or being written
        self._stop_requested = False
        self._held = HeldConnection(engine)
        self.completed_count = 0
        self.abandoned_count = 0
        """Outcomes it gave up on: their jobs stay ``running`` until a rescue."""

    def add(self, outcome: AttemptOutcome) -> None:
        """Queue one outcome; blocks while too many are unwritten (back-pressure)."""
        with self._has_work:
            while self._unwritten >= self._max_pending and not self.stopped.is_set():
                self._space.wait(0.5)
            pending = self._pending
            pending.append(outcome)
            self._unwritten += 1
            # The writer waits for a first outcome, then for a full batch.
            if len(pending) == 1 or len(pending) == self._batch_size:
                self._has_work.notify()

    def wait_flushed(self, timeout: float) -> bool:
        """Wait until every outcome added so far is written; true if it was in time."""
        deadline = time.monotonic() + timeout
        with self._space:
            while self._unwritten:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._space.wait(remaining)
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Write everything queued, then end."""
        with self._has_work:
            self._stop_requested = True
            self._has_work.notify()
        return super().stop(timeout)

    def _next_batch(self) -> list[AttemptOutcome] | None:
        """Block until a batch is due; ``None`` once stopped with nothing left."""
        with self._has_work:
            while not self._pending:
                if self._stop_requested:
                    return None
                self._has_work.wait()
            # Wait for more only until the flush deadline, and not at all when stopping.
            deadline = time.monotonic() + self._flush_interval
            while len(self._pending) < self._batch_size and not self._stop_requested:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._has_work.wait(remaining)
            limit = self._batch_size * 10
            batch = self._pending[:limit]
            del self._pending[:limit]
            return batch

    def run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                try:
                    self._write(batch)
                except Exception:
                    # A bug must not end the loop: outcomes queued later would never be
                    # written, and adders would block on back-pressure for ever.
                    logger.exception(
                        "completer: unexpected error writing %d outcomes; their jobs stay "
                        "running and will be rescued",
                        len(batch),
                        extra={"event": "completer_failed"},
                    )
                    self.abandoned_count += len(batch)
                    self._held.drop(invalidate=True)
                    self.sleep(0.05)
                finally:
                    self._written(len(batch))
        finally:
            self._held.drop(invalidate=False)

    def _written(self, n: int) -> None:
        with self._space:
            self.completed_count += n
            self._unwritten -= n
            self._space.notify_all()

    def _write(self, batch: list[AttemptOutcome]) -> None:
        started = time.monotonic()
        changed: int | None
        try:
            changed = self._execute(
                partial(job_set_state_if_running_count, outcomes=batch), started
            )
        except _GaveUp as exc:
            self._log_gave_up(len(batch), started, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                changed = self._write_alone(batch[0], exc, started)
            else:
                logger.warning(
                    "completer: recording %d outcomes failed (%s: %s); recording them one by one",
                    len(batch),
                    type(exc).__name__,
                    _first_line(exc),
                    extra={"event": "completer_batch_failed"},
                )
                changed = self._write_one_by_one(batch, started)
        if changed is None:
            return
        skipped = len(batch) - changed
        if skipped > 0:
            logger.debug(
                "completer: %d jobs were no longer running; their outcomes were not recorded",
                skipped,
                extra={"event": "completer_skipped"},
            )

    def _write_one_by_one(self, batch: list[AttemptOutcome], started: float) -> int | None:
        """Record each outcome in its own transaction; ``None`` if it gave up on the rest."""
        changed = 0
        for i, outcome in enumerate(batch):
            try:
                changed += self._execute(
                    partial(job_set_state_if_running_count, outcomes=[outcome]), started
                )
            except _GaveUp as exc:
                self._log_gave_up(len(batch) - i, started, exc)
                return None
            except Exception as exc:
                alone = self._write_alone(outcome, exc, started)
                if alone is None:
                    return None
                changed += alone
        return changed

    def _write_alone(
        self, outcome: AttemptOutcome, failure: Exception, started: float
    ) -> int | None:
        """``outcome`` cannot be recorded even on its own (``failure``): end its attempt with a
        fallback error, so its job does not stay running. ``None`` if it gave up."""
        if not isinstance(outcome, AttemptOutcome):  # a bug upstream; the rest must go on
            logger.error(
                "completer: dropping something that is not an outcome (%r): %s: %s",
                outcome,
                type(failure).__name__,
                _first_line(failure),
                extra={"event": "completer_failed"},
            )
            return 0
        job_id, attempt = outcome.job_id, outcome.attempt
        logger.error(
            "completer: cannot record the outcome of job %d attempt %s (%s: %s); ending the "
            "attempt with an error instead",
            job_id,
            attempt,
            type(failure).__name__,
            _first_line(failure),
            extra={"event": "completer_outcome_rejected", "job_id": job_id, "attempt": attempt},
        )
        message = (
            f"sa_river could not record this attempt's outcome ({_intended(outcome)}): "
            f"{type(failure).__name__}: {_first_line(failure)}"
        )
        original = _original_error(outcome)
        if original:
            message += f"; the attempt's own error was: {original}"
        fallback = AttemptOutcome.failed(
            job_id,
            attempt,
            error=fallback_error_json(attempt, message),
            retry_in_seconds=FALLBACK_RETRY_SECONDS,
        )
        try:
            states = self._execute(
                partial(job_set_state_if_running_many, outcomes=[fallback]), started
            )
        except _GaveUp as exc:
            self._log_gave_up(1, started, exc)
            return None
        except Exception:
            logger.exception(
                "completer: cannot record a fallback outcome for job %d either; it stays "
                "running and will be rescued",
                job_id,
                extra={"event": "completer_failed", "job_id": job_id, "attempt": attempt},
            )
            self.abandoned_count += 1
            return 0
        if job_id in states:
            logger.warning(
                "completer: job %d attempt %s ended with a fallback error -> %s",
                job_id,
                attempt,
                states[job_id].value,
                extra={"event": "completer_fallback", "job_id": job_id, "attempt": attempt},
            )
            return 1
        return 0

    def _execute(self, statement: Callable[[Connection], T], started: float) -> T:
        """Run ``statement`` in a transaction, retrying connection trouble with backoff.

        Any other error is raised for the caller to narrow down. Raises :class:`_GaveUp` when
        stopping and the database has been unreachable for more than ``give_up_after`` since
        ``started``.
        """
        backoff = Backoff(_BACKOFF_START, cap=_BACKOFF_MAX)
        failures = 0
        while True:
            try:
                conn = self._held.get()
                with conn.begin():
                    result = statement(conn)
                if failures:
                    logger.info(
                        "completer: writing outcomes again after %d failures (%.1fs)",
                        failures,
                        time.monotonic() - started,
                        extra={"event": "completer_recovered"},
                    )
                return result
            except Exception as exc:
                if not is_transient_error(exc):
                    if not isinstance(exc, DBAPIError):
                        # Not a statement the server rejected (which leaves an autocommit
                        # connection as it was): the connection's state is unknown.
                        self._held.drop(invalidate=True)
                    raise
                self._held.drop(invalidate=True)
                if self.stopping and time.monotonic() - started > self._give_up_after:
                    raise _GaveUp(one_line(exc)) from exc
                failures += 1
                if failures == 1:  # once per streak: an outage is one event, not dozens
                    logger.warning(
                        "completer: writing outcomes failed (%s); retrying with backoff",
                        one_line(exc),
                        extra={"event": "completer_error"},
                    )
                time.sleep(backoff.next())

    def _log_gave_up(self, n: int, started: float, exc: _GaveUp) -> None:
        self.abandoned_count += n
        logger.error(
            "completer: giving up on %d outcomes after %.0fs (%s); their jobs stay running and "
            "will be rescued",
            n,
            time.monotonic() - started,
            exc,
            extra={"event": "completer_gave_up"},
        )


def fallback_error_json(attempt: int, message: str, *, trace: str = "") -> str:
    """The ``AttemptError`` JSON sa_river records for an attempt it had to end itself.

    ``message`` and ``trace`` may quote the very text whose write failed (the attempt's own
    error, a row that did not decode): they are made storable (a lone surrogate escaped, NUL
    replaced), so the fallback cannot fail the way the write it replaces did.
    """
    error = AttemptError.stored_now(attempt, message, trace, error_limit=_MESSAGE_LIMIT)
    return error.to_json_text()


def _intended(outcome: AttemptOutcome) -> str:
    if outcome.kind is OutcomeKind.SNOOZED:
        return f"{outcome.state}, snoozed"
    return str(outcome.state)


def _original_error(outcome: AttemptOutcome) -> str:
    """The message of the error the outcome meant to record, if it carries a readable one."""
    if not outcome.error:
        return ""
    try:
        decoded: Any = json.loads(outcome.error)
        return str(decoded["error"])[:_MESSAGE_LIMIT] if isinstance(decoded, dict) else ""
    except (ValueError, KeyError, TypeError, RecursionError):
        # Whatever the outcome carries, the fallback must still be written.
        return ""


def _first_line(exc: BaseException) -> str:
    try:
        text = str(exc).strip()
    except Exception:
        # Quoted in the fallback error and the log line: neither may fail on it.
        return f"<{type(exc).__name__} whose str() failed>"
    return text.splitlines()[0] if text else ""
