"""Plain value types shared by every layer of sa_river.

This module is a leaf: it imports nothing from ``sa_river`` so that any other module may
depend on it without creating an import cycle (River keeps the same role in ``rivertype``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "FINALIZED_STATES",
    "AttemptError",
    "InsertResult",
    "JobRow",
    "JobState",
]


class JobState(str, enum.Enum):
    """The states of a job, with River's names and database values.

    The order is the order of the ``river_job_state`` enum in the database.
    """

    AVAILABLE = "available"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    DISCARDED = "discarded"
    PENDING = "pending"
    RETRYABLE = "retryable"
    RUNNING = "running"
    SCHEDULED = "scheduled"

    def __str__(self) -> str:
        return self.value


FINALIZED_STATES: frozenset[JobState] = frozenset(
    {JobState.CANCELLED, JobState.COMPLETED, JobState.DISCARDED}
)
"""States in which ``finalized_at`` is set and a job never runs again on its own."""


TRACE_LIMIT = 8000
"""The longest traceback stored with an attempt's error, in characters."""


@dataclass(frozen=True)
class AttemptError:
    """One failed attempt, as stored in ``river_job.errors`` (River's ``AttemptError``)."""

    at: datetime
    attempt: int
    error: str
    trace: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "attempt": self.attempt,
            "error": self.error,
            "trace": self.trace,
        }

    @classmethod
    def stored_now(
        cls, attempt: int, error: str, trace: str = "", *, error_limit: int | None = None
    ) -> AttemptError:
        """The error of ``attempt`` as sa_river stores it now: a trace longer than
        :data:`TRACE_LIMIT` keeps its end, U+0000 (which jsonb cannot hold) becomes ``\\0``,
        and ``error`` is cut to ``error_limit`` characters if one is given."""
        if len(trace) > TRACE_LIMIT:
            trace = "...\n" + trace[-TRACE_LIMIT:]
        return cls(
            at=datetime.now(timezone.utc),
            attempt=attempt,
            error=error.replace("\x00", "\\0")[:error_limit],
            trace=trace.replace("\x00", "\\0"),
        )

    def to_json_text(self) -> str:
        """:meth:`to_json` as compact JSON text, ready for an ``errors`` element."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttemptError:
        return cls(
            at=datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00")),
            attempt=int(data["attempt"]),
            error=str(data.get("error", "")),
            trace=str(data.get("trace", "")),
        )


@dataclass(frozen=True)
class JobRow:
    """A snapshot of one ``river_job`` row, decoded into Python values.

    ``args`` is the decoded JSON object; handlers receive it typed through ``Job[T]``.
    """

    id: int
    state: JobState
    attempt: int
    max_attempts: int
    attempted_at: datetime | None
    created_at: datetime
    finalized_at: datetime | None
    scheduled_at: datetime
    priority: int
    args: dict[str, Any]
    attempted_by: list[str]
    errors: list[AttemptError]
    kind: str
    metadata: dict[str, Any]
    queue: str
    tags: list[str]
    unique_key: bytes | None = None
    unique_states: frozenset[JobState] | None = field(default=None)


@dataclass(frozen=True)
class InsertResult:
    """What an insert returns: the stored job, and whether it was a unique duplicate.

    When ``unique_skipped_as_duplicate`` is true, ``job`` is the live job that already held
    the unique key and nothing new was written.
    """

    job: JobRow
    unique_skipped_as_duplicate: bool = False
