"""The ``--app`` of the fault tests' worker processes (not a test module).

    python -m sa_river worker --app tests.faults._fault_app:workers --database-url URL ...

Every handler records each execution OUTSIDE the database, which is what the tests break: it
appends ``start`` and ``end`` lines to the file named by ``SA_RIVER_FAULT_RECORDS``, each with
one ``write`` on an ``O_APPEND`` descriptor (so lines of concurrent processes never interleave,
and a line written survives a SIGKILL of the process)::

    <event> <kind> <job_id> <attempt> <pid> <CLOCK_MONOTONIC> <wall clock> [<outcome>]

``CLOCK_MONOTONIC`` is one clock for every process of the machine, so the test can lay the
executions of several processes side by side and beside the times it killed them.

Kinds:

- ``fault_short``: sleeps ``args["ms"]`` milliseconds (default 5);
- ``fault_long``: sleeps ``args["s"]`` seconds (default 3);
- ``fault_effect``: sleeps ``args["ms"]`` milliseconds, then in ONE transaction inserts a row
  ``(job_id, attempt, pid)`` into the table ``fault_effects`` and completes the job with
  :func:`sa_river.complete_in`; when the job is no longer running (rescued meanwhile) the
  transaction is rolled back and the end line's outcome is ``rolled_back``, else ``ok``. The
  database comes from ``SA_RIVER_DATABASE_URL``.

- ``fault_unstorable_error``: raises an error naming a file whose name is not valid UTF-8, as
  ``os.fsdecode`` gives it (a lone surrogate, which PostgreSQL cannot store as it is).

A handler that raises records ``end ... error`` before the exception goes on to the worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import sa_river

__all__ = ["EFFECTS_TABLE_SQL", "RECORDS_ENV", "UNDECODABLE_FILE_NAME", "workers"]

RECORDS_ENV = "SA_RIVER_FAULT_RECORDS"
EFFECTS_TABLE_SQL = (
    "CREATE TABLE fault_effects (job_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL)"
)

workers = sa_river.Workers()

_records_fd: int | None = None
_engine: Engine | None = None


def _record(event: str, job: sa_river.Job[dict[str, Any]], outcome: str = "") -> None:
    global _records_fd
    if _records_fd is None:
        _records_fd = os.open(os.environ[RECORDS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    line = (
        f"{event} {job.kind} {job.id} {job.attempt} {os.getpid()} "
        f"{time.monotonic():.6f} {time.time():.6f} {outcome}".rstrip()
    )
    os.write(_records_fd, (line + "\n").encode())


def _effects_engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = create_engine(
            os.environ["SA_RIVER_DATABASE_URL"], pool_size=10, max_overflow=10, pool_pre_ping=True
        )
    return _engine


def _run_recorded(job: sa_river.Job[dict[str, Any]], body: Callable[[], str]) -> None:
    """Record the start, run ``body`` (which returns the outcome), record the end: ``error``
    (and re-raise) when it raised."""
    _record("start", job)
    try:
        outcome = body()
    except BaseException:
        _record("end", job, "error")
        raise
    _record("end", job, outcome)


@workers.handler("fault_short")
def fault_short(job: sa_river.Job[dict[str, Any]]) -> None:
    def body() -> str:
        time.sleep(float(job.args.get("ms", 5)) / 1000)
        return "ok"

    _run_recorded(job, body)


@workers.handler("fault_long")
def fault_long(job: sa_river.Job[dict[str, Any]]) -> None:
    def body() -> str:
        time.sleep(float(job.args.get("s", 3)))
        return "ok"

    _run_recorded(job, body)


class _NotRunning(Exception):
    """Rolls the effect back: the job was no longer running when we came to complete it."""


@workers.handler("fault_effect")
def fault_effect(job: sa_river.Job[dict[str, Any]]) -> None:
    def body() -> str:
        time.sleep(float(job.args.get("ms", 5)) / 1000)
        try:
            with Session(_effects_engine()) as session, session.begin():
                session.execute(
                    text("INSERT INTO fault_effects (job_id, attempt, pid) VALUES (:j, :a, :p)"),
                    {"j": job.id, "a": job.attempt, "p": os.getpid()},
                )
                if not sa_river.complete_in(session, job):
                    raise _NotRunning
        except _NotRunning:
            return "rolled_back"
        return "ok"

    _run_recorded(job, body)


UNDECODABLE_FILE_NAME = os.fsdecode(b"caf\xe9.txt")


@workers.handler("fault_unstorable_error")
def fault_unstorable_error(job: sa_river.Job[dict[str, Any]]) -> None:
    def body() -> str:
        raise OSError(f"cannot open {UNDECODABLE_FILE_NAME}")

    _run_recorded(job, body)
