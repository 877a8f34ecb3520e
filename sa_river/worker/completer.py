"""BatchCompleter: records attempts' outcomes in batches (internal).

Outcomes queue up and are written by one UPDATE per batch, at the latest every
``flush_interval`` seconds or as soon as ``batch_size`` are waiting. The queue is bounded: when
the database falls behind, executors block on :meth:`BatchCompleter.add`, which stops slots
being freed, which stops fetching (back-pressure). A batch that fails to write is retried with
backoff, never dropped; the UPDATE only touches rows still ``running``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from sa_river.queries.job import JobSetStateParams, job_set_state_if_running_many
from sa_river.service import Service

__all__ = ["BatchCompleter"]

logger = logging.getLogger("sa_river.completer")

_STOP = object()
_BACKOFF_MAX = 5.0


class BatchCompleter(Service):
    """Collects :class:`~sa_river.queries.job.JobSetStateParams` and writes them in batches."""

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
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending or batch_size * 50)
        self._give_up_after = give_up_after
        self._idle = threading.Condition()
        self._unwritten = 0
        self.completed_count = 0

    def add(self, outcome: JobSetStateParams) -> None:
        """Queue one outcome; blocks while the queue is full (back-pressure)."""
        with self._idle:
            self._unwritten += 1
        self._queue.put(outcome)

    def wait_flushed(self, timeout: float) -> bool:
        """Wait until every outcome added so far is written; true if it was in time."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._unwritten:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Write everything queued, then end."""
        self._queue.put(_STOP)
        return super().stop(timeout)

    def run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self._flush_interval
            # Take whatever is already waiting; then wait for more only until the deadline.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    if len(batch) >= self._batch_size:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self._batch_size * 10:
                    break
            self._write([b for b in batch if isinstance(b, JobSetStateParams)])

    def _write(self, batch: list[JobSetStateParams]) -> None:
        backoff = 0.05
        started = time.monotonic()
        while True:
            try:
                with self._engine.begin() as conn:
                    changed = job_set_state_if_running_many(conn, batch)
                break
            except SQLAlchemyError as exc:
                waited = time.monotonic() - started
                if not _is_transient(exc):
                    logger.exception(
                        "completer: cannot record %d outcomes; their jobs stay running and will "
                        "be rescued",
                        len(batch),
                        extra={"event": "completer_failed"},
                    )
                    changed = {}
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
                    changed = {}
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
        skipped = len(batch) - len(changed)
        if skipped:
            logger.debug(
                "completer: %d jobs were no longer running; their outcomes were not recorded",
                skipped,
                extra={"event": "completer_skipped"},
            )
        with self._idle:
            self.completed_count += len(batch)
            self._unwritten -= len(batch)
            self._idle.notify_all()


def _is_transient(exc: SQLAlchemyError) -> bool:
    """Connection trouble is worth retrying; a bad statement is not."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or type(exc).__name__ in (
            "OperationalError",
            "InterfaceError",
        )
    return type(exc).__name__ == "TimeoutError"
