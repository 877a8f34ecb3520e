"""Middleware: code of yours that wraps every handler call (tracing, Sentry, scoping).

A middleware receives the job and ``call_next``, the rest of the chain (the next middleware,
then the handler), and returns what ``call_next`` returned, or raises. It runs on the handler's
own thread (sync handlers) or in its own task (async handlers), so a context it opens covers
the handler's whole run, and an exception it raises is the attempt's outcome like the handler's
own (``raise JobCancel(...)`` cancels the job, any other error is retried by the rules).

A plain function wraps sync handlers, an ``async def`` wraps async handlers; subclass
:class:`Middleware` to wrap both:

>>> def timed(job, call_next):
...     started = time.monotonic()
...     try:
...         return call_next()
...     finally:
...         print(job.kind, f"{time.monotonic() - started:.3f}s")
>>> class Scoped(Middleware):
...     def work(self, job, call_next):
...         with some_scope(job.kind):
...             return call_next()
...     async def work_async(self, job, call_next):
...         with some_scope(job.kind):
...             return await call_next()
>>> workers = Workers(middleware=[timed, Scoped()])     # every kind
>>> @workers.handler(Report, middleware=[timed])         # doctest: +SKIP
... def report(job): ...

Order: the registry's middleware outermost, then the kind's own, each list from the outside in.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from sa_river.errors import InvalidJobError

if TYPE_CHECKING:
    from sa_river.workers import Job

__all__ = [
    "Middleware",
    "MiddlewareLike",
    "WrapAsync",
    "WrapSync",
    "middleware_chain",
    "validate_middleware",
]

WrapSync: TypeAlias = "Callable[[Job[Any], Callable[[], Any]], Any]"
WrapAsync: TypeAlias = "Callable[[Job[Any], Callable[[], Awaitable[Any]]], Awaitable[Any]]"


class Middleware:
    """Base class for a middleware that wraps sync and async handlers alike.

    Override :meth:`work` (sync handlers), :meth:`work_async` (async handlers) or both; the
    one not overridden passes the call through.
    """

    def work(self, job: Job[Any], call_next: Callable[[], Any]) -> Any:
        """Around a sync handler, on its thread; return ``call_next()``'s result."""
        return call_next()

    async def work_async(self, job: Job[Any], call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Around an async handler, in its task; return ``await call_next()``'s result."""
        return await call_next()


MiddlewareLike: TypeAlias = "Middleware | WrapSync | WrapAsync"
"""What ``middleware=`` lists take: a :class:`Middleware`, a ``def`` or an ``async def``."""


@dataclass(frozen=True)
class _Wrapper:
    sync: WrapSync | None
    async_: WrapAsync | None


def _wrapper(item: object, field: str) -> _Wrapper:
    if isinstance(item, Middleware):
        kind = type(item)
        return _Wrapper(
            item.work if kind.work is not Middleware.work else None,
            item.work_async if kind.work_async is not Middleware.work_async else None,
        )
    if inspect.iscoroutinefunction(item) or inspect.iscoroutinefunction(
        getattr(item, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        return _Wrapper(None, item)  # type: ignore[arg-type]
    if callable(item):
        return _Wrapper(item, None)
    raise InvalidJobError(
        field,
        f"must be a sa_river.Middleware, a function or an async function, got "
        f"{type(item).__name__}",
    )


def validate_middleware(items: Sequence[MiddlewareLike], field: str) -> tuple[_Wrapper, ...]:
    """The wrappers of ``items``, in order; raises naming ``field[i]`` for a bad item."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise InvalidJobError(field, f"must be a list of middleware, got {type(items).__name__}")
    return tuple(_wrapper(item, f"{field}[{i}]") for i, item in enumerate(items))


def middleware_chain(
    wrappers: Sequence[_Wrapper], *, is_async: bool
) -> tuple[WrapSync, ...] | tuple[WrapAsync, ...]:
    """The wrappers that apply to a sync (or async) handler, from the outside in."""
    if is_async:
        return tuple(w.async_ for w in wrappers if w.async_ is not None)
    return tuple(w.sync for w in wrappers if w.sync is not None)
