"""Per-call insert options (``InsertOpts``, ``UniqueOpts``) and their validation.

Names follow River's ``InsertOpts``/``UniqueOpts`` so River users feel at home. An option left
as ``None`` is *unset*: the args class's defaults fill it, then sa_river's defaults.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sa_river.errors import InvalidJobError
from sa_river.types import JobState

__all__ = [
    "DEFAULT_UNIQUE_STATES",
    "MAX_ATTEMPTS_DEFAULT",
    "PRIORITY_DEFAULT",
    "QUEUE_DEFAULT",
    "REQUIRED_UNIQUE_STATES",
    "InsertOpts",
    "UniqueOpts",
    "validate_kind",
    "validate_queue",
]

QUEUE_DEFAULT = "default"
PRIORITY_DEFAULT = 1
MAX_ATTEMPTS_DEFAULT = 25

# River's rule: a tag is at most 255 characters of word characters and dashes, not starting or
# ending with a dash (and so at least three characters).
TAG_MAX_LENGTH = 255
_TAG_RE = re.compile(r"\A\w[\w\-]+\w\Z", re.ASCII)
_NAME_MAX_LENGTH = 127
_SMALLINT_MAX = 32767

DEFAULT_UNIQUE_STATES: tuple[JobState, ...] = (
    JobState.AVAILABLE,
    JobState.COMPLETED,
    JobState.PENDING,
    JobState.RETRYABLE,
    JobState.RUNNING,
    JobState.SCHEDULED,
)
"""The states a unique job is unique across unless ``UniqueOpts.by_state`` says otherwise."""
_DEFAULT_STATES = frozenset(DEFAULT_UNIQUE_STATES)

REQUIRED_UNIQUE_STATES: frozenset[JobState] = frozenset(
    {JobState.AVAILABLE, JobState.PENDING, JobState.RUNNING, JobState.SCHEDULED}
)
"""States ``by_state`` may never leave out: a job passes through them on its own, and leaving
one out would let the scheduler or rescuer create a duplicate (River's rule)."""


@dataclass(frozen=True)
class UniqueOpts:
    """Make a job unique: at most one live job per key.

    The key always includes the kind (unless ``exclude_kind``), plus each dimension turned on:

    - ``by_args``: ``True`` for all args, or a list of top-level arg names;
    - ``by_period``: one job per period of ``scheduled_at`` (at least one second);
    - ``by_queue``: one job per queue;
    - ``by_state``: the states in which an existing job blocks a new one (default
      :data:`DEFAULT_UNIQUE_STATES`; must include available, pending, running and scheduled).

    ``UniqueOpts()`` alone means "one live job of this kind". Keys are byte-compatible with
    River's Go client.

    >>> UniqueOpts(by_args=["customer_id"], by_period=timedelta(hours=1))
    UniqueOpts(by_args=['customer_id'], by_period=datetime.timedelta(seconds=3600), ...)
    """

    by_args: bool | Sequence[str] = False
    by_period: timedelta | None = None
    by_queue: bool = False
    by_state: Sequence[JobState | str] | None = None
    exclude_kind: bool = False

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"UniqueOpts({', '.join(shown)}{', ...' if shown else ''})"

    def states(self) -> frozenset[JobState]:
        """The validated ``by_state`` set (the defaults when unset)."""
        if self.by_state is None:
            return _DEFAULT_STATES
        if isinstance(self.by_state, str):
            raise InvalidJobError("unique.by_state", "must be a list of states, not a string")
        states: set[JobState] = set()
        for raw in self.by_state:
            try:
                states.add(JobState(raw))
            except ValueError:
                valid = ", ".join(s.value for s in JobState)
                raise InvalidJobError(
                    "unique.by_state", f"unknown state {raw!r} (valid: {valid})"
                ) from None
        missing = REQUIRED_UNIQUE_STATES - states
        if missing:
            names = ", ".join(sorted(s.value for s in missing))
            raise InvalidJobError(
                "unique.by_state",
                f"must include {names}: available, pending, running and scheduled may never "
                "be left out",
            )
        return frozenset(states)

    def validate(self) -> None:
        """Raise :class:`~sa_river.errors.InvalidJobError` naming the first bad field."""
        if not isinstance(self.by_args, bool) and (
            isinstance(self.by_args, str) or not all(isinstance(k, str) for k in self.by_args)
        ):
            raise InvalidJobError(
                "unique.by_args", "must be True/False or a list of top-level arg names"
            )
        if self.by_period is not None:
            if not isinstance(self.by_period, timedelta):
                raise InvalidJobError("unique.by_period", "must be a datetime.timedelta")
            if self.by_period < timedelta(seconds=1):
                raise InvalidJobError(
                    "unique.by_period", f"must be at least one second, got {self.by_period}"
                )
        self.states()


@dataclass(frozen=True)
class InsertOpts:
    """Options for one insert; ``None`` means "use the args class default, then sa_river's".

    - ``queue``: queue name, 1..127 characters (default ``"default"``);
    - ``priority``: 1 (highest) .. 4 (default 1);
    - ``scheduled_at``: an aware datetime; in the future the job is ``scheduled``;
    - ``max_attempts``: at least 1 (default 25);
    - ``tags``: River tags (``[A-Za-z0-9_-]``, 3..255 chars, no leading/trailing dash);
    - ``metadata``: a JSON object stored with the job;
    - ``unique``: :class:`UniqueOpts`;
    - ``pending``: insert in the ``pending`` state, to be made available later.

    >>> InsertOpts(queue="mail", priority=2).merged_over(InsertOpts(queue="bulk", max_attempts=3))
    InsertOpts(queue='mail', priority=2, max_attempts=3)
    """

    queue: str | None = None
    priority: int | None = None
    scheduled_at: datetime | None = None
    max_attempts: int | None = None
    tags: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    unique: UniqueOpts | None = None
    pending: bool | None = None

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        ]
        return f"InsertOpts({', '.join(shown)})"

    def merged_over(self, base: InsertOpts | None) -> InsertOpts:
        """These options with every unset field taken from ``base``, field by field."""
        if base is None:
            return self
        return InsertOpts(
            **{
                f.name: getattr(base, f.name)
                if getattr(self, f.name) is None
                else getattr(self, f.name)
                for f in dataclasses.fields(self)
            }
        )


def validate_kind(kind: object) -> str:
    """Return ``kind`` if it is a valid job kind, else raise naming the problem."""
    return _validate_name("kind", kind)


def validate_queue(queue: object) -> str:
    """Return ``queue`` if it is a valid queue name, else raise naming the problem."""
    return _validate_name("queue", queue)


def _validate_name(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidJobError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidJobError(field, "must not be empty")
    if "\x00" in value:
        raise InvalidJobError(field, "must not contain a NUL character (U+0000)")
    # The driver would fail to encode a lone surrogate mid-insert with a bare
    # UnicodeEncodeError; isascii() reads a flag on the str, so the usual name costs nothing.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidJobError(
                field,
                f"contains a lone surrogate {value[exc.start]!r} at position {exc.start}, "
                "which UTF-8 (and so PostgreSQL) cannot store",
            ) from None
    if len(value) > _NAME_MAX_LENGTH:
        raise InvalidJobError(
            field, f"must be at most {_NAME_MAX_LENGTH} characters, got {len(value)}"
        )
    return value


def validate_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 4:
        raise InvalidJobError("priority", f"must be an integer from 1 to 4, got {priority!r}")
    return priority


def validate_max_attempts(max_attempts: object) -> int:
    if (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int)
        or not 1 <= max_attempts <= _SMALLINT_MAX
    ):
        raise InvalidJobError(
            "max_attempts", f"must be an integer from 1 to {_SMALLINT_MAX}, got {max_attempts!r}"
        )
    return max_attempts


def validate_tags(tags: object) -> list[str]:
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        raise InvalidJobError("tags", f"must be a list of strings, got {type(tags).__name__}")
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidJobError("tags", f"must be strings, got {tag!r}")
        if len(tag) > TAG_MAX_LENGTH:
            raise InvalidJobError(
                "tags", f"{tag[:20]!r}... is {len(tag)} characters, at most {TAG_MAX_LENGTH}"
            )
        if not _TAG_RE.match(tag):
            raise InvalidJobError(
                "tags",
                f"{tag!r} must be 3+ letters, digits, underscores or dashes, "
                "not starting or ending with a dash",
            )
    return list(tags)


def validate_scheduled_at(scheduled_at: object) -> datetime:
    if not isinstance(scheduled_at, datetime):
        raise InvalidJobError(
            "scheduled_at", f"must be a datetime, got {type(scheduled_at).__name__}"
        )
    if scheduled_at.tzinfo is None or scheduled_at.utcoffset() is None:
        raise InvalidJobError(
            "scheduled_at",
            f"must be timezone-aware, got naive {scheduled_at.isoformat()} "
            "(use datetime.now(timezone.utc) + ...)",
        )
    return scheduled_at
