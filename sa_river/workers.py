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

A registry carries everything a runner needs besides its connection and tuning, so that
``python -m sa_river worker --app myapp.jobs:workers`` runs the same configuration as the
Python :class:`~sa_river.Worker`: periodic jobs, the default retry policy, hooks, middleware,
an error handler, a lifespan (resources opened once per runner process, reaching every handler
as ``job.context``) and the session factory for handlers that take a session.

A handler may take a second parameter annotated ``Session`` (sync handlers) or
``AsyncSession`` (async handlers): it gets a session in a transaction of its own, and the job
is completed in that same transaction when the handler returns, so the handler's writes and
the job's completion commit together, or neither does. A handler that raises has its session
rolled back, and its job follows the retry rules.
"""

from __future__ import annotations

import inspect
import json
import threading
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeAlias, TypeVar, overload

from sa_river.args import JobArgs, encode_json
from sa_river.errors import InvalidJobError, UnknownJobKindError
from sa_river.hooks import Hook
from sa_river.middleware import MiddlewareLike, validate_middleware
from sa_river.options import validate_kind
from sa_river.periodic import PeriodicJob, validate_periodic_jobs
from sa_river.retry import RetryPolicy
from sa_river.types import AttemptError, JobRow

__all__ = [
    "ErrorHandler",
    "Handler",
    "Job",
    "JobCancel",
    "JobDiscard",
    "JobRetry",
    "JobSnooze",
    "Lifespan",
    "Workers",
]

A = TypeVar("A")
JobArgsT = TypeVar("JobArgsT", bound=JobArgs)


class _WorkerDefault:
    def __repr__(self) -> str:
        return "WORKER_DEFAULT"


WORKER_DEFAULT: Any = _WorkerDefault()
"""The default of a handler's ``timeout``: the worker's own ``job_timeout``."""
_CANCEL_EVENT_LOCK = threading.Lock()


class JobCancel(Exception):
    """Raise from a handler to cancel the job for good (state ``cancelled``)."""

    def __init__(self, reason: str = "cancelled by handler") -> None:
        super().__init__(reason)


class JobDiscard(Exception):
    """Raise from a handler (or return from an error handler) to discard the job now, without
    the retries it has left (state ``discarded``)."""

    def __init__(self, reason: str = "discarded by handler") -> None:
        super().__init__(reason)


class JobRetry(Exception):
    """Raise from a handler (or return from an error handler) to retry after ``delay``
    (default: at once) instead of the retry policy's backoff. The attempt counts: at the last
    one the job is discarded."""

    def __init__(self, delay: timedelta | float = 0.0, reason: str = "retry requested") -> None:
        self.delay = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
        if self.delay < timedelta(0):
            raise InvalidJobError("delay", f"retry delay must not be negative, got {delay!r}")
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
    sync handler may check ``job.cancel_requested.is_set()`` and stop early. ``context`` is
    what the registry's lifespan yielded (``None`` without one).
    """

    row: JobRow
    args: A
    context: Any = None
    _output: str | None = field(default=None, repr=False, compare=False)
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

    def record_output(self, value: Any) -> None:
        """Record ``value`` (anything JSON can hold) as the job's output, stored when the
        attempt completes under ``metadata["output"]``, where River keeps it (its UI shows
        it there). A handler's non-``None`` return value is recorded the same way and wins
        over an earlier call. Raises :class:`~sa_river.InvalidJobError` naming ``output``
        when ``value`` cannot be encoded as JSON.

        >>> job.record_output({"sent": 3})                  # doctest: +SKIP
        """
        self._output = encode_json(value, field="output")

    @property
    def output(self) -> Any:
        """The output recorded so far in this attempt (decoded), or ``None``."""
        return None if self._output is None else json.loads(self._output)

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

ErrorHandler: TypeAlias = Callable[[Job[Any], BaseException], "BaseException | None"]
"""Called with the job and what its handler raised (timeouts and unknown kinds included, but not
``JobSnooze``/``JobCancel``/``JobDiscard``/``JobRetry``, which already say what to do). It
returns (or raises) one of those four to decide the outcome itself, or ``None`` for the usual
retry rules; the error is recorded either way. It runs on the handler's thread, or on the event
loop for async handlers: keep it quick. An error handler that raises anything else is logged
and the usual rules apply."""

Lifespan: TypeAlias = (
    "Callable[[], AbstractContextManager[Any]] | Callable[[], AbstractAsyncContextManager[Any]]"
)
"""A function returning a context manager (``@contextmanager``/``@asynccontextmanager``),
entered once when a runner starts and left when it stops; what it yields is ``job.context``."""

SessionWanted = Literal["sync", "async"] | None


@dataclass(frozen=True)
class Handler:
    """A registered handler and its per-kind settings."""

    kind: str
    fn: Callable[..., Any]
    decode: Callable[[Mapping[str, Any]], Any]
    is_async: bool
    timeout: timedelta | Any | None = WORKER_DEFAULT
    retry: RetryPolicy | None = None
    session: SessionWanted = None
    """``"sync"``/``"async"``: the handler takes a ``Session``/``AsyncSession`` second."""
    middleware: tuple[Any, ...] = ()
    """The kind's own middleware wrappers (see :mod:`sa_river.middleware`)."""
    on_error: ErrorHandler | None = None

    def timeout_or(self, default: timedelta | None) -> timedelta | None:
        """This kind's timeout, or ``default`` when the handler did not set one."""
        return default if self.timeout is WORKER_DEFAULT else self.timeout


def _identity(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data)


class Workers:
    """The registry of job handlers, keyed by kind, and the runner configuration that goes
    with them (every argument is optional):

    - ``periodic_jobs``: :class:`~sa_river.PeriodicJob` s the elected leader enqueues;
    - ``retry_policy``: the backoff for failed jobs of every kind without one of its own;
    - ``hooks``: :class:`~sa_river.Hook` s installed while a runner of this registry runs;
    - ``middleware``: wrappers of every handler call (see :class:`~sa_river.Middleware`);
    - ``error_handler``: decides the outcome of a failed attempt (see :data:`ErrorHandler`);
    - ``lifespan``: resources for the runner's life, yielded to handlers as ``job.context``;
    - ``session_factory``: makes the session of a handler that takes one (a ``sessionmaker``
      or an ``async_sessionmaker``, or one of each in a tuple); by default a session on the
      runner's own database.

    >>> @contextmanager
    ... def lifespan():
    ...     with httpx.Client() as http:
    ...         yield {"http": http}
    >>> workers = Workers(lifespan=lifespan, periodic_jobs=[PeriodicJob(...)])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        periodic_jobs: Sequence[PeriodicJob] = (),
        retry_policy: RetryPolicy | None = None,
        hooks: Sequence[Hook] = (),
        middleware: Sequence[MiddlewareLike] = (),
        error_handler: ErrorHandler | None = None,
        lifespan: Lifespan | None = None,
        session_factory: Any = None,
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        self.periodic_jobs: list[PeriodicJob] = validate_periodic_jobs(periodic_jobs)
        if retry_policy is not None and not callable(retry_policy):
            raise InvalidJobError("retry_policy", "must be a RetryPolicy (a callable)")
        self.retry_policy = retry_policy
        if isinstance(hooks, Hook) or not all(isinstance(h, Hook) for h in hooks):
            raise InvalidJobError("hooks", "must be a list of sa_river.Hook instances")
        self.hooks: tuple[Hook, ...] = tuple(hooks)
        self.middleware = validate_middleware(middleware, "middleware")
        if error_handler is not None and not callable(error_handler):
            raise InvalidJobError("error_handler", "must be a function (job, error) -> outcome")
        self.error_handler = error_handler
        if lifespan is not None and not callable(lifespan):
            raise InvalidJobError(
                "lifespan", "must be a function returning a (async) context manager"
            )
        self.lifespan = lifespan
        self.session_factory = session_factory

    def add_middleware(self, middleware: MiddlewareLike) -> MiddlewareLike:
        """Wrap every handler call in ``middleware`` (innermost of the registry's); usable as a
        decorator. Returns ``middleware``."""
        self.middleware = (*self.middleware, *validate_middleware([middleware], "middleware"))
        return middleware

    @overload
    def handler(
        self,
        args_type: type[JobArgsT],
        *,
        timeout: timedelta | None = ...,
        retry: RetryPolicy | None = ...,
        middleware: Sequence[MiddlewareLike] = ...,
        on_error: ErrorHandler | None = ...,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...

    @overload
    def handler(
        self,
        args_type: str,
        *,
        timeout: timedelta | None = ...,
        retry: RetryPolicy | None = ...,
        middleware: Sequence[MiddlewareLike] = ...,
        on_error: ErrorHandler | None = ...,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...

    def handler(
        self,
        args_type: type[JobArgs] | str,
        *,
        timeout: timedelta | None = WORKER_DEFAULT,
        retry: RetryPolicy | None = None,
        middleware: Sequence[MiddlewareLike] = (),
        on_error: ErrorHandler | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register the decorated ``def`` or ``async def`` as the handler of a kind.

        ``args_type`` is a :class:`~sa_river.JobArgs` subclass (args are decoded to it) or a
        kind string (args arrive as a plain dict). ``timeout`` overrides the worker's default
        (``None`` for no timeout); ``retry`` overrides the backoff for this kind;
        ``middleware`` wraps this kind's calls inside the registry's; ``on_error`` replaces the
        registry's error handler for this kind.
        """

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add(
                args_type,
                fn,
                timeout=timeout,
                retry=retry,
                middleware=middleware,
                on_error=on_error,
            )
            return fn

        return register

    def add(
        self,
        args_type: type[JobArgs] | str,
        fn: Callable[..., Any],
        *,
        timeout: timedelta | None = WORKER_DEFAULT,
        retry: RetryPolicy | None = None,
        middleware: Sequence[MiddlewareLike] = (),
        on_error: ErrorHandler | None = None,
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
        if timeout is not WORKER_DEFAULT and timeout is not None and timeout <= timedelta(0):
            raise InvalidJobError("timeout", f"must be positive or None, got {timeout}")
        if on_error is not None and not callable(on_error):
            raise InvalidJobError("on_error", "must be a function (job, error) -> outcome")
        is_async = inspect.iscoroutinefunction(fn)
        self._handlers[kind] = Handler(
            kind=kind,
            fn=fn,
            decode=decode,
            is_async=is_async,
            timeout=timeout,
            retry=retry,
            session=_session_parameter(kind, fn, is_async),
            middleware=validate_middleware(middleware, "middleware"),
            on_error=on_error,
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


def _session_parameter(kind: str, fn: Callable[..., Any], is_async: bool) -> SessionWanted:
    """What ``fn`` asks for besides the job: nothing, or a session (``"sync"``/``"async"``).

    Decided at registration, so a handler asking for something no runner can give fails here
    and not at its first job.
    """
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    if not callable(fn):
        raise InvalidJobError("handler", f"{kind}: must be a function, got {type(fn).__name__}")
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None  # a builtin or C callable: called with the job alone
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    required_keywords = [
        p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    if required_keywords or not positional or len(positional) > 2:
        raise InvalidJobError(
            "handler",
            f"{kind}: a handler takes the job, and optionally a Session (or an AsyncSession "
            f"for an async handler); {getattr(fn, '__qualname__', fn)!r} asks for "
            f"({', '.join(p.name for p in parameters)})",
        )
    if len(positional) == 1:
        return None
    second = positional[1]
    annotation: Any = second.annotation
    if isinstance(annotation, str):
        try:
            annotation = typing.get_type_hints(fn).get(second.name, annotation)
        except Exception:
            # A name the module cannot resolve now (imported under TYPE_CHECKING): go by
            # its spelling, the last dotted part.
            annotation = annotation.rpartition(".")[2]
    wants_async = annotation is AsyncSession or annotation == "AsyncSession"
    wants_sync = annotation is Session or annotation == "Session"
    if isinstance(annotation, type) and not (wants_sync or wants_async):
        wants_async = issubclass(annotation, AsyncSession)
        wants_sync = issubclass(annotation, Session)
    if wants_sync and not is_async:
        return "sync"
    if wants_async and is_async:
        return "async"
    if wants_sync or wants_async:
        raise InvalidJobError(
            "handler",
            f"{kind}: a {'async' if is_async else 'sync'} handler's session must be "
            f"{'an AsyncSession' if is_async else 'a Session'}, "
            f"not {'a Session' if wants_sync else 'an AsyncSession'}",
        )
    raise InvalidJobError(
        "handler",
        f"{kind}: the second parameter {second.name!r} must be annotated "
        f"{'AsyncSession' if is_async else 'Session'} (the only thing a handler can be given "
        "besides its job)",
    )
