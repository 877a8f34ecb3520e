"""BatchCompleter: records attempts' outcomes in batches (internal).

Outcomes queue up and are written by one UPDATE per batch, at the latest every
``flush_interval`` seconds or as soon as ``batch_size`` are waiting. The queue is bounded: when
the database falls behind, executors block on :meth:`BatchCompleter.add`, which stops slots
being freed, which stops fetching (back-pressure). A batch that fails to write is retried with
backoff, never dropped; the UPDATE only touches rows still ``running``.

A job whose handler returned is queued as its bare id (:meth:`BatchCompleter.complete`) and
written by a plain ``completed`` UPDATE; other outcomes carry their error, delay or snooze.
The completer holds one autocommit connection of the runner's pool: each statement is its own
transaction, so a batch costs one round trip per statement.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sa_river.queries.job import JobSetStateParams, job_record_outcomes
from sa_river.service import Service

__all__ = ["BatchCompleter"]

logger = logging.getLogger("sa_river.completer")

_BACKOFF_MAX = 5.0

Outcome = JobSetStateParams | tuple[int, int]


class BatchCompleter(Service):
    """Collects outcomes (:class:`~sa_river.queries.job.JobSetStateParams`, or the id of a
    completed job) and writes them in batches."""

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
        self._engine = engine
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._max_pending = max_pending or batch_size * 50
        self._give_up_after = give_up_after
        lock = threading.Lock()
        self._has_work = threading.Condition(lock)  # the writer waits on this
        self._space = threading.Condition(lock)  # back-pressured adders and wait_flushed
        self._pending: list[Outcome] = []
        self._unwritten = 0  # queued or being written
        self._stop_requested = False
        self._conn: Connection | None = None
        self.completed_count = 0

    def add(self, outcome: Outcome) -> None:
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

    def complete(self, job_id: int, attempt: int) -> None:
        """Queue the outcome of an attempt whose handler returned: ``completed``."""
        self.add((job_id, attempt))

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

    def _next_batch(self) -> list[Outcome] | None:
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
                self._write(batch)
        finally:
            self._drop_connection(invalidate=False)

    def _drop_connection(self, *, invalidate: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                if invalidate:
                    conn.invalidate()
                conn.close()

    def _write(self, batch: list[Outcome]) -> None:
        backoff = 0.05
        started = time.monotonic()
        changed = 0
        while True:
            try:
                conn = self._conn
                if conn is None:
                    conn = self._conn = self._engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    )
                with conn.begin():
                    changed = job_record_outcomes(conn, batch)
                break
            except SQLAlchemyError as exc:
                self._drop_connection(invalidate=True)
                waited = time.monotonic() - started
                if not _is_transient(exc):
                    logger.exception(
                        "completer: cannot record %d outcomes; their jobs stay running and will "
                        "be rescued",
                        len(batch),
                        extra={"event": "completer_failed"},
                    )
                    changed = len(batch)
                    break
                if self.stopping and waited > self._give_up_after:
                    logger.error(
                        "completer: giving up on %d outcomes after %.0fs (%s); their jobs stay "
                        "running and will be rescued",
                        len(batch),
                        waited,
                        exc,
                        extra={"event": "completer_gave_up"},
                    )
                    changed = len(batch)
                    break
                logger.warning(
                    "completer: writing %d outcomes failed (%s); retrying in %.2fs",
                    len(batch),
                    exc,
                    backoff,
                    extra={"event": "completer_error"},
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        skipped = len(batch) - changed
        if skipped > 0:
            logger.debug(
                "completer: %d jobs were no longer running; their outcomes were not recorded",
                skipped,
                extra={"event": "completer_skipped"},
            )
        with self._space:
            self.completed_count += len(batch)
            self._unwritten -= len(batch)
            self._space.notify_all()


def _is_transient(exc: SQLAlchemyError) -> bool:
    """Connection trouble is worth retrying; a bad statement is not."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or type(exc).__name__ in (
            "OperationalError",
            "InterfaceError",
        )
    return type(exc).__name__ == "TimeoutError"
