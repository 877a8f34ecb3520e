"""Producer: fetches one queue's jobs into free slots (internal).

A producer fetches when it has free slots and one of these holds: a NOTIFY said the queue got
a job, the poll interval passed, or the last fetch filled every slot (so more are probably
waiting) and either half the slots are free again or ``fetch_cooldown`` has passed. Each fetch
is one statement that locks and marks up to "free slots" jobs as running.

The producer keeps one connection of the runner's pool for its fetches, in autocommit mode:
the fetch is a single statement (its own transaction), so it costs one round trip instead of
a pool checkout, a pre-ping, ``BEGIN``, the statement and ``COMMIT``. A connection error drops
that connection; the next fetch (after backoff) checks out a fresh, pinged one.

A fetched row that cannot be decoded (an ``errors`` entry or a column written by a foreign
client in a shape sa_river does not read) does not take the rest of its fetch down: the other
jobs run, and its attempt is ended with an error saying so, to be retried or discarded like any
failed attempt. The loop outlives any unexpected error: it logs it, backs off and goes on.
Why a fetch takes only as many jobs as there are free slots: ``docs/design.md``, "Fetching".
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from sa_river.errors import is_transient_error, one_line
from sa_river.queries.job_fetch import FetchedJobs, UndecodableJob, job_fetch_available
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.retry import FALLBACK_RETRY_SECONDS, Backoff
from sa_river.service import Service
from sa_river.types import JobRow
from sa_river.worker.completer import (
    fallback_error_json,
)
from sa_river.worker.connection import HeldConnection

__all__ = ["Producer"]

logger = logging.getLogger("sa_river.producer")

_BACKOFF_START = 0.2
_BACKOFF_MAX = 5.0


class Producer(Service):
    """Keeps up to ``limit`` jobs of ``queue`` running."""

    def __init__(
        self,
        engine: Engine,
        *,
        queue: str,
        limit: int,
        client_id: str,
        execute: Callable[[list[JobRow], Callable[[], None]], None],
        poll_interval: float,
        cooldown: float,
    ) -> None:
        super().__init__(f"producer[{queue}]")
        self.queue = queue
        self.limit = limit
        self._engine = engine
        self._client_id = client_id
        self._execute = execute
        self._poll_interval = poll_interval
        self._cooldown = cooldown
        self._refill_at = max(1, limit // 2)
        self._cond = threading.Condition()
        self._active = 0
        self._woken = False
        self._backlog = False
        self._held = HeldConnection(engine)
        self._undecodable: list[UndecodableJob] = []
        self.abandoned_count = 0
        """Fetched jobs whose failure it could not record: they stay ``running`` until a
        rescue."""

    def notify_insert(self) -> None:
        """A job was inserted into this queue (or anything may have changed): fetch soon."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _job_done(self) -> None:
        with self._cond:
            self._active -= 1
            # Wake the fetch loop only when this slot can change its decision: the first free
            # slot (it may be waiting with no timeout) or reaching the refill mark. Waking it
            # for every finished job costs a thread switch per job and changes nothing.
            free = self.limit - self._active
            if free == 1 or free == self._refill_at:
                self._cond.notify()

    def _wait_for_turn(self, next_poll: float, last_fetch: float) -> int:
        """Block until a fetch is due; the number of free slots (0 when stopping)."""
        with self._cond:
            while True:
                if self.stopping:
                    return 0
                free = self.limit - self._active
                now = time.monotonic()
                timeout: float | None = None
                if free > 0:
                    if self._woken or now >= next_poll:
                        break
                    if self._backlog:
                        if free >= self._refill_at or now - last_fetch >= self._cooldown:
                            break
                        timeout = min(next_poll, last_fetch + self._cooldown) - now
                    else:
                        timeout = next_poll - now
                self._cond.wait(timeout)
            self._woken = False
            return free

    def run(self) -> None:
        next_poll = 0.0
        last_fetch = 0.0
        failures = 0
        backoff = Backoff(_BACKOFF_START, cap=_BACKOFF_MAX)
        try:
            while True:
                free = self._wait_for_turn(next_poll, last_fetch)
                if free <= 0:
                    return
                last_fetch = time.monotonic()
                next_poll = last_fetch + self._poll_interval
                try:
                    self._fail_undecodable()
                    fetched = self._fetch(free)
                except (SQLAlchemyError, OSError) as exc:
                    self._held.drop()
                    failures += 1
                    if failures == 1:
                        logger.warning(
                            "%s: fetch failed (%s)%s; retrying with backoff",
                            self.name,
                            one_line(exc),
                            _pool_hint(self._engine, exc),
                            extra={"event": "fetch_error", "queue": self.queue},
                        )
                    self.sleep(backoff.next())
                    continue
                except Exception:
                    # Never lose the queue to a bug: log, back off, and fetch again.
                    self._held.drop()
                    failures += 1
                    logger.exception(
                        "%s: unexpected error while fetching; retrying with backoff",
                        self.name,
                        extra={"event": "producer_error", "queue": self.queue},
                    )
                    self.sleep(backoff.next())
                    continue
                if failures:
                    logger.info(
                        "%s: fetching again after %d failures",
                        self.name,
                        failures,
                        extra={"event": "fetch_recovered", "queue": self.queue},
                    )
                    failures = 0
                    backoff.reset()
                try:
                    self._start(fetched, free)
                    self._fail_undecodable()
                except (SQLAlchemyError, OSError) as exc:
                    # Only the undecodable rows' write can get here; they are kept and
                    # written before the next fetch.
                    self._held.drop()
                    logger.warning(
                        "%s: recording undecodable jobs failed (%s); retrying on the next turn",
                        self.name,
                        one_line(exc),
                        extra={"event": "fetch_error", "queue": self.queue},
                    )
                except Exception:
                    logger.exception(
                        "%s: unexpected error starting %d fetched jobs",
                        self.name,
                        len(fetched.jobs),
                        extra={"event": "producer_error", "queue": self.queue},
                    )
                    self.sleep(0.1)
        finally:
            self._held.drop(invalidate=False)

    def _fetch(self, free: int) -> FetchedJobs:
        conn = self._held.get()
        with conn.begin():
            fetched = job_fetch_available(
                conn, queue=self.queue, limit=free, client_id=self._client_id
            )
        if fetched.undecodable:
            for bad in fetched.undecodable:
                logger.error(
                    "%s: job %d (%s) attempt %d could not be decoded (%s: %s); ending the "
                    "attempt with an error",
                    self.name,
                    bad.id,
                    bad.kind,
                    bad.attempt,
                    type(bad.error).__name__,
                    bad.error,
                    exc_info=bad.error,
                    extra={
                        "event": "job_undecodable",
                        "job_id": bad.id,
                        "kind": bad.kind,
                        "queue": self.queue,
                        "attempt": bad.attempt,
                    },
                )
            # Written once the decodable ones have started (see run).
            self._undecodable.extend(fetched.undecodable)
        return fetched

    def _start(self, fetched: FetchedJobs, free: int) -> None:
        jobs = fetched.jobs
        with self._cond:
            # A fetch that filled every slot (decodable or not) means more are probably waiting.
            self._backlog = len(fetched) == free
            if not jobs:
                return
            self._active += len(jobs)
        self._execute(jobs, self._job_done)

    def _fail_undecodable(self) -> None:
        """End the attempts of fetched rows that could not be decoded with an error: they
        would otherwise stay running until a rescue (and fail to decode again then).

        A connection error is raised with the rows kept for the next turn; any other error
        gives them up to the rescuer rather than block the queue's fetching.
        """
        if not self._undecodable:
            return
        failures = [
            AttemptOutcome.failed(
                bad.id,
                bad.attempt,
                retry_in_seconds=FALLBACK_RETRY_SECONDS,
                error=fallback_error_json(
                    bad.attempt,
                    f"sa_river could not decode this job's row: {type(bad.error).__name__}: "
                    f"{bad.error}",
                    trace="".join(traceback.format_exception(bad.error)),
                ),
            )
            for bad in self._undecodable
        ]
        try:
            conn = self._held.get()
            with conn.begin():
                job_set_state_if_running_many(conn, failures)
        except Exception as exc:
            if isinstance(exc, OSError) or is_transient_error(exc):
                raise
            self._held.drop()
            logger.exception(
                "%s: cannot record the failure of %d undecodable jobs (%s); they stay running "
                "and will be rescued",
                self.name,
                len(failures),
                ", ".join(str(f.job_id) for f in failures),
                extra={"event": "producer_error", "queue": self.queue},
            )
            self.abandoned_count += len(failures)
        self._undecodable.clear()


def _pool_hint(engine: Engine, exc: BaseException) -> str:
    if isinstance(exc, PoolTimeoutError):
        return f" — the worker's own pool is exhausted ({engine.pool.status()})"
    return ""
