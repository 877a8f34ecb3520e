"""Handlers: the ``Workers`` registry, the ``Job`` a handler receives, and job outcomes.

Kinds map only to handlers registered in code. A kind found in the database with no handler
is never imported or evaluated: the job fails with "no handler registered for kind X" and
follows the retry rules.

>>> workers = Workers()
>>> class SendWelcome(JobArgs, kind="send_welcome"):
...     user_id: int
>>> @workers.handler(SendWelcome, timeout=timedelta(seconds=30))
... def send_welcome(job: Job[SendWelcome]) -> None:
...     print("welcome", job.args.user_id)
>>> workers.kinds()
['send_welcome']
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, overload

from sa_river.args import JobArgs
from sa_river.errors import InvalidJobError, UnknownJobKindError
from sa_river.options import validate_kind
from sa_river.retry import RetryPolicy
from sa_river.types import AttemptError, JobRow

__all__ = ["Handler", "Job", "JobCancel", "JobSnooze", "Workers"]

A = TypeVar("A")
JobArgsT = TypeVar("JobArgsT", bound=JobArgs)

_UNSET: Any = object()
_CANCEL_EVENT_LOCK = threading.Lock()


class JobCancel(Exception):
    """Raise from a handler to cancel the job for good (state ``cancelled``)."""

    def __init__(self, reason: str = "cancelled by handler") -> None:
        super().__init__(reason)


class JobSnooze(Exception):
    """Raise from a handler to run the job again after ``delay``; the attempt is not counted."""

    def __init__(self, delay: timedelta | float) -> None:
        self.delay = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
        if self.delay < timedelta(0):
            raise InvalidJobError("delay", f"snooze delay must not be negative, got {delay!r}")
        super().__init__(f"snoozed for {self.delay}")


@dataclass
class Job(Generic[A]):
    """What a handler receives: the job's row and its args, decoded to the registered type.

    ``cancel_requested`` is set when someone cancels the running job (``cancel_job``); a long
    sync handler may check ``job.cancel_requested.is_set()`` and stop early.
    """

    row: JobRow
    args: A
    # Created on first use: most jobs are never cancelled, and an Event (a Condition and two
    # locks) per job is a measurable share of a no-op job's cost.
    _cancel_requested: threading.Event | None = field(default=None, repr=False, compare=False)

    @property
    def cancel_requested(self) -> threading.Event:
        """Set when someone cancels the running job (``cancel_job``)."""
        event = self._cancel_requested
        if event is None:
            with _CANCEL_EVENT_LOCK:
                event = self._cancel_requested
                if event is None:
                    event = self._cancel_requested = threading.Event()
        return event

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def kind(self) -> str:
        return self.row.kind

    @property
    def queue(self) -> str:
        return self.row.queue

    @property
    def attempt(self) -> int:
        return self.row.attempt

    @property
    def max_attempts(self) -> int:
        return self.row.max_attempts

    @property
    def metadata(self) -> dict[str, Any]:
        return self.row.metadata

    @property
    def errors(self) -> list[AttemptError]:
        return self.row.errors

    @property
    def attempted_at(self) -> datetime | None:
        return self.row.attempted_at


HandlerFn = Callable[[Job[Any]], Any] | Callable[[Job[Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Handler:
    """A registered handler and its per-kind settings."""

    kind: str
    fn: Callable[[Job[Any]], Any]
    decode: Callable[[Mapping[str, Any]], Any]
    is_async: bool
    timeout: timedelta | Any | None = _UNSET
    retry: RetryPolicy | None = None

    def timeout_or(self, default: timedelta | None) -> timedelta | None:
        """This kind's timeout, or ``default`` when the handler did not set one."""
        return default if self.timeout is _UNSET else self.timeout


def _identity(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data)


class Workers:
    """The registry of job handlers, keyed by kind."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    @overload
    def handler(
        self,
        args_type: type[JobArgsT],
        *,
        timeout: timedelta | None = ...,
        retry: RetryPolicy | None = ...,
    ) -> Callable[[Callable[[Job[JobArgsT]], Any]], Callable[[Job[JobArgsT]], Any]]: ...

    @overload
    def handler(
        self,
        args_type: str,
        *,
        timeout: timedelta | None = ...,
        retry: RetryPolicy | None = ...,
    ) -> Callable[[Callable[[Job[dict[str, Any]]], Any]], Callable[[Job[dict[str, Any]]], Any]]: ...

    def handler(
        self,
        args_type: type[JobArgs] | str,
        *,
        timeout: timedelta | None = _UNSET,
        retry: RetryPolicy | None = None,
    ) -> Callable[[Callable[[Job[Any]], Any]], Callable[[Job[Any]], Any]]:
        """Register the decorated ``def`` or ``async def`` as the handler of a kind.

        ``args_type`` is a :class:`~sa_river.JobArgs` subclass (args are decoded to it) or a
        kind string (args arrive as a plain dict). ``timeout`` overrides the worker's default
        (``None`` for no timeout); ``retry`` overrides the backoff for this kind.
        """

        def register(fn: Callable[[Job[Any]], Any]) -> Callable[[Job[Any]], Any]:
            self.add(args_type, fn, timeout=timeout, retry=retry)
            return fn

        return register

    def add(
        self,
        args_type: type[JobArgs] | str,
        fn: Callable[[Job[Any]], Any],
        *,
        timeout: timedelta | None = _UNSET,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Register ``fn`` as the handler of ``args_type`` (see :meth:`handler`)."""
        if isinstance(args_type, str):
            kind = validate_kind(args_type)
            decode: Callable[[Mapping[str, Any]], Any] = _identity
        elif isinstance(args_type, type) and issubclass(args_type, JobArgs):
            kind = args_type.kind
            decode = args_type.decode
        else:
            raise InvalidJobError(
                "args_type", f"must be a JobArgs subclass or a kind string, got {args_type!r}"
            )
        if kind in self._handlers:
            raise InvalidJobError("kind", f"a handler for {kind!r} is already registered")
        if timeout is not _UNSET and timeout is not None and timeout <= timedelta(0):
            raise InvalidJobError("timeout", f"must be positive or None, got {timeout}")
        self._handlers[kind] = Handler(
            kind=kind,
            fn=fn,
            decode=decode,
            is_async=inspect.iscoroutinefunction(fn),
            timeout=timeout,
            retry=retry,
        )

    def get(self, kind: str) -> Handler:
        """The handler of ``kind``; raises :class:`~sa_river.errors.UnknownJobKindError`."""
        try:
            return self._handlers[kind]
        except KeyError:
            raise UnknownJobKindError(kind) from None

    def kinds(self) -> list[str]:
        """Registered kinds, sorted."""
        return sorted(self._handlers)

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)
