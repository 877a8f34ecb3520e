"""Exceptions raised by sa_river.

::

    SaRiverError
    ├── FieldError (also ValueError)         a bad value; ``.field`` names it
    │   ├── InvalidJobError                  bad args or options, raised before anything is written
    │   │   └── UnserializableArgsError      args that cannot be encoded as JSON
    │   └── ConfigError                      a bad worker setting or database URL
    │   └── JobRunningError                  delete_job refused: the job is running
    ├── UnknownJobKindError (also KeyError)  a kind with no registered handler
    ├── SchemaNotReadyError                  the river tables are missing: run the migrations
    ├── LifespanError                        a registry's lifespan failed as a runner started
    └── JobWaitTimeout (also TimeoutError)   wait_for: the job was not finalised in time

Every error names the field or value that was wrong and, where there is one, the likely fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError

if TYPE_CHECKING:
    from sa_river.types import JobState

__all__ = [
    "ConfigError",
    "FieldError",
    "InvalidJobError",
    "JobRunningError",
    "JobWaitTimeout",
    "LifespanError",
    "SaRiverError",
    "SchemaNotReadyError",
    "UnknownJobKindError",
    "UnserializableArgsError",
    "is_transient_error",
    "one_line",
]


class SaRiverError(Exception):
    """Base class of every error sa_river raises on purpose."""


class FieldError(SaRiverError, ValueError):
    """A value that is not acceptable; ``field`` names it (``"priority"``, ``"queues"``...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class InvalidJobError(FieldError):
    """A job's args or insert options are invalid; nothing was written."""


class ConfigError(FieldError):
    """A worker setting or database URL is invalid."""


class UnserializableArgsError(InvalidJobError):
    """Job args that cannot be encoded as JSON; nothing was written."""


class UnknownJobKindError(SaRiverError, KeyError):
    """A job kind that no handler is registered for."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"no handler registered for kind {kind!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class SchemaNotReadyError(SaRiverError):
    """The river tables are missing or out of date.

    Fix: run ``python -m sa_river migrate up`` (or ``alembic upgrade head`` in an env that
    calls ``sa_river.migrate.upgrade``).
    """


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``exc`` for a log message, on one line: a driver error wrapped by SQLAlchemy is given
    as the driver's own message, without the SQL and the parameters SQLAlchemy appends (a
    fetch failing through an outage would otherwise log its whole statement every time).

    >>> one_line(ValueError("bad\\n  value"))
    'ValueError: bad value'

    It never fails: an exception whose ``str()`` raises is named by its type (a log line, or
    an attempt's end, must not fail on the error it reports).
    """
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    try:
        text = " ".join(str(cause).split())
    except Exception:
        return f"<{type(cause).__name__} whose str() failed>"
    return f"{type(cause).__name__}: {text}"[:limit] if text else type(cause).__name__


def is_transient_error(exc: BaseException) -> bool:
    """Connection trouble (worth retrying: the database may be back in a moment), as opposed
    to a statement the database refused (retrying it would fail the same way)."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or type(exc).__name__ in (
            "OperationalError",
            "InterfaceError",
        )
    return isinstance(exc, SQLAlchemyError) and type(exc).__name__ == "TimeoutError"


class LifespanError(SaRiverError):
    """The registry's lifespan raised as a runner started; the runner did not start."""


class JobWaitTimeout(SaRiverError, TimeoutError):
    """:func:`sa_river.wait_for` gave up: the job was not finalised within its timeout."""

    def __init__(self, job_id: int, timeout: float, state: str | None) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(
            f"job {job_id} was not finalised within {timeout:g}s (it is {state or 'gone'})"
        )


class JobRunningError(FieldError):
    """:func:`sa_river.delete_job` refused to delete a running job, as River's ``JobDelete`` does
    (``ErrJobRunning``). Nothing was changed; ``job_id`` and ``state`` name the job.

    Cancel it first (:func:`sa_river.cancel_job`) and delete it once its attempt has ended.
    """

    def __init__(self, job_id: int, state: JobState | None = None) -> None:
        from sa_river.types import JobState

        state = JobState.RUNNING if state is None else state
        self.job_id = job_id
        self.state = state
        super().__init__(
            "job_id",
            f"job {job_id} is {state.value}; a running job is not deleted: cancel it "
            "(cancel_job) and delete it once its attempt has ended",
        )
