"""Producer: fetches one queue's jobs into free slots (internal).

A producer fetches when it has free slots and one of these holds: a NOTIFY said the queue got
a job, the poll interval passed, or the last fetch filled every slot (so more are probably
waiting) and either half the slots are free again or ``fetch_cooldown`` has passed. Each fetch
is one statement that locks and marks up to "free slots" jobs as running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine
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
        execute: Callable[[JobRow, Callable[[], None]], None],
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
        while True:
            free = self._wait_for_turn(next_poll, last_fetch)
            if free <= 0:
                return
            last_fetch = time.monotonic()
            next_poll = last_fetch + self._poll_interval
            try:
                with self._engine.begin() as conn:
                    jobs = job_get_available(
                        conn, queue=self.queue, limit=free, client_id=self._client_id
                    )
            except (SQLAlchemyError, OSError) as exc:
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
            with self._cond:
                self._active += len(jobs)
                self._backlog = len(jobs) == free
            self.fetched_count += len(jobs)
            for job in jobs:
                self._execute(job, self._job_done)


def _pool_hint(engine: Engine, exc: BaseException) -> str:
    if isinstance(exc, PoolTimeoutError):
        return f" — the worker's own pool is exhausted ({engine.pool.status()})"
    return ""
