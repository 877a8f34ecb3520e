"""Helpers for the worker runtime's integration tests (not a test module).

Every wait is bounded: a runtime that hangs fails the test with a message instead of blocking
the suite. Workers started through :func:`running_worker` are always stopped, even when the
test fails, and the stop itself is bounded too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

import sa_river
from sa_river import JobRow, JobState, Worker, Workers

T = TypeVar("T")

WAIT_TIMEOUT = 30.0
"""The default bound of every wait: far above what a healthy run needs."""

STOP_TIMEOUT = 30.0


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = WAIT_TIMEOUT,
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; raise
    ``AssertionError`` naming ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def running_worker(
    database: str | URL | Engine,
    workers: Workers,
    queues: dict[str, int] | None = None,
    *,
    stop_timeout: float = STOP_TIMEOUT,
    **settings: Any,
) -> Iterator[Worker]:
    """A started :class:`~sa_river.Worker` (listening, unless poll-only), stopped on exit.

    Settings default to test-friendly values (short shutdown timeout, fast polling) unless the
    test gives its own.
    """
    settings.setdefault("shutdown_timeout", 5.0)
    settings.setdefault("fetch_poll_interval", 0.2)
    worker = Worker(database, workers, queues, **settings)
    worker.start()
    try:
        if not worker.config.poll_only:
            assert worker.wait_listening(10), "the worker's LISTEN connection did not come up"
        yield worker
    finally:
        stop_bounded(worker, stop_timeout)


def stop_bounded(worker: Worker, timeout: float = STOP_TIMEOUT) -> float:
    """``worker.stop()`` on a helper thread, failing if it takes longer than ``timeout``;
    returns how long it took."""
    started = time.monotonic()
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            worker.stop()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    stopper = threading.Thread(target=stop, name="test-stopper", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():
        raise AssertionError(f"worker.stop() did not return within {timeout:g}s")
    if errors:
        raise errors[0]
    return time.monotonic() - started


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def job(engine: Engine, job_id: int) -> JobRow:
    """The current row of ``job_id`` (which must exist)."""
    row = sa_river.get_job(engine, job_id)
    assert row is not None, f"job {job_id} does not exist"
    return row


def wait_for_state(
    engine: Engine,
    job_id: int,
    *states: JobState,
    timeout: float = WAIT_TIMEOUT,
) -> JobRow:
    """Wait until job ``job_id`` is in one of ``states``; its row."""
    last: list[JobRow] = []

    def reached() -> JobRow | None:
        row = job(engine, job_id)
        last[:] = [row]
        return row if row.state in states else None

    def describe() -> str:
        seen = last[0] if last else None
        now = f"{seen.state.value} (attempt {seen.attempt}, errors {seen.errors})" if seen else "?"
        return f"job {job_id} to reach {[s.value for s in states]}; it is {now}"

    return wait_until(reached, timeout, message=describe)


def count_states(engine: Engine) -> dict[str, int]:
    """``state -> number of jobs`` over the whole table."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state::text, count(*) FROM river_job GROUP BY 1")).all()
    return {str(state): int(n) for state, n in rows}


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        value = conn.execute(text("SELECT now()")).scalar_one()
    assert isinstance(value, datetime)
    return value


def insert_job(
    engine: Engine,
    kind: str,
    args: dict[str, Any] | None = None,
    opts: sa_river.InsertOpts | None = None,
) -> int:
    """Insert one ``(kind, args)`` job in its own transaction; its id."""
    return sa_river.insert(engine, (kind, args or {}), opts).job.id
