"""Plain value types shared by every layer of sa_river.

This module is a leaf: it imports nothing from ``sa_river`` so that any other module may
depend on it without creating an import cycle (River keeps the same role in ``rivertype``).
"""

from __future__ import annotations

import enum
import json
import re
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
    "parse_timestamp",
    "storable_text",
]


_SECONDS_FRACTION = re.compile(r"(?<=:\d\d\.)\d+")


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 timestamp as Go, River and sa_river write them: a ``Z`` or an
    offset, and any number of fractional digits (Go writes up to nine, trailing zeros cut).

    Python 3.10's ``fromisoformat`` takes neither ``Z`` nor a fraction of other than three or
    six digits; the fraction is cut or padded to microseconds first.

    >>> parse_timestamp("2024-05-01T12:00:00.123456789Z").isoformat()
    '2024-05-01T12:00:00.123456+00:00'
    """
    text = _SECONDS_FRACTION.sub(lambda m: m.group()[:6].ljust(6, "0"), text, count=1)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


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


def storable_text(text: str) -> str:
    """``text`` made storable in PostgreSQL ``text``/``jsonb`` and writable as UTF-8 anywhere.

    U+0000, which neither type can hold, becomes ``\\0``; a lone surrogate (what
    ``os.fsdecode`` and ``surrogateescape`` make of undecodable bytes), which UTF-8 cannot
    encode, becomes its escape (``'caf\\udce9.txt'``), so the text keeps what it said instead of
    failing the write that carries it. Anything else is returned unchanged.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\0")
    # isascii() reads a flag CPython keeps on every str: the usual case costs nothing.
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


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
        :data:`TRACE_LIMIT` keeps its end, both texts go through :func:`storable_text` (or
        jsonb would reject the attempt's whole outcome), and ``error`` is cut to
        ``error_limit`` characters if one is given."""
        if len(trace) > TRACE_LIMIT:
            trace = "...\n" + trace[-TRACE_LIMIT:]
        return cls(
            at=datetime.now(timezone.utc),
            attempt=attempt,
            error=storable_text(error)[:error_limit],
            trace=storable_text(trace),
        )

    def to_json_text(self) -> str:
        """:meth:`to_json` as compact JSON text, ready for an ``errors`` element.

        The texts go through :func:`storable_text` here too, so an ``AttemptError`` built
        directly rather than through :meth:`stored_now` cannot fail the write either: json
        would escape a lone surrogate as ``\\udce9``, which jsonb rejects.
        """
        data = self.to_json()
        data["error"] = storable_text(self.error)
        data["trace"] = storable_text(self.trace)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttemptError:
        return cls(
            at=parse_timestamp(str(data["at"])),
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
