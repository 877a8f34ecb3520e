"""Producer: fetches one queue's jobs into free slots (internal).

A producer fetches when it has free slots and one of these holds: a NOTIFY said the queue got
a job, the poll interval passed, or the last fetch filled every slot (so more are probably
waiting) and either half the slots are free again or ``fetch_cooldown`` has passed. Each fetch
is one statement that locks and marks up to "free slots" jobs as running.

The producer keeps one connection of the runner's pool for its fetches, in autocommit mode:
the fetch is a single statement (its own transaction), so it costs one round trip instead of
a pool checkout, a pre-ping, ``BEGIN``, the statement and ``COMMIT``. A connection error drops
that connection; the next fetch (after backoff) checks out a fresh, pinged one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from sa_river.queries.job import job_get_available
from sa_river.service import Service
from sa_river.types import JobRow

__all__ = ["Producer"]

logger = logging.getLogger("sa_river.producer")

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
        self.fetched_count = 0

    @property
    def active(self) -> int:
        return self._active

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
        conn: Connection | None = None
        try:
            while True:
                free = self._wait_for_turn(next_poll, last_fetch)
                if free <= 0:
                    return
                last_fetch = time.monotonic()
                next_poll = last_fetch + self._poll_interval
                try:
                    if conn is None:
                        conn = self._engine.connect().execution_options(
                            isolation_level="AUTOCOMMIT"
                        )
                    with conn.begin():
                        jobs = job_get_available(
                            conn, queue=self.queue, limit=free, client_id=self._client_id
                        )
                except (SQLAlchemyError, OSError) as exc:
                    _discard(conn)
                    conn = None
                    failures += 1
                    if failures == 1:
                        logger.warning(
                            "%s: fetch failed (%s)%s; retrying with backoff",
                            self.name,
                            exc,
                            _pool_hint(self._engine, exc),
                            extra={"event": "fetch_error", "queue": self.queue},
                        )
                    self.sleep(min(0.1 * 2**failures, _BACKOFF_MAX))
                    continue
                if failures:
                    logger.info("%s: fetching again after %d failures", self.name, failures)
                    failures = 0
                if not jobs:
                    with self._cond:
                        self._backlog = False
                    continue
                with self._cond:
                    self._active += len(jobs)
                    self._backlog = len(jobs) == free
                self.fetched_count += len(jobs)
                self._execute(jobs, self._job_done)
        finally:
            _discard(conn, invalidate=False)


def _discard(conn: Connection | None, *, invalidate: bool = True) -> None:
    """Close a held connection; after an error, invalidate it so the pool does not reuse it."""
    if conn is not None:
        with suppress(Exception):
            if invalidate:
                conn.invalidate()
            conn.close()


def _pool_hint(engine: Engine, exc: BaseException) -> str:
    if isinstance(exc, PoolTimeoutError):
        return f" — the worker's own pool is exhausted ({engine.pool.status()})"
    return ""
