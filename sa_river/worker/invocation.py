"""Calling a handler (internal): its middleware, its session, and completion in that session.

The executor decides *when* an attempt runs and records how it ended; this module decides
*how* the handler is called. For a handler that takes a session, the whole attempt is one
transaction: the session is opened, the middleware and the handler run, the job's completion
(with its recorded output) is written through the session's connection, fenced by attempt like
every outcome, and the session commits. The handler's writes and the completion so commit
together or not at all. If the completion finds the attempt no longer running (rescued,
cancelled, timed out and recorded), the session is rolled back instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from sa_river.args import encode_json
from sa_river.middleware import WrapAsync, WrapSync, middleware_chain
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.workers import Handler, Job, Workers

__all__ = ["COMPLETED_IN_SESSION", "HandlerSessions", "Invoker", "encoded_output"]

logger = logging.getLogger("sa_river.executor")


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


COMPLETED_IN_SESSION: Any = _Marker("COMPLETED_IN_SESSION")
"""What an invocation returns when it already completed the job in the handler's session (or
found the attempt no longer running): the executor then reports no outcome of its own."""

_SESSION_POOL_SIZE = 10
"""Connections the default handler-session engine keeps; more (up to one per slot) are opened
for a burst and closed again."""


def encoded_output(job: Job[Any], value: Any) -> str | None:
    """The output to store for an attempt that returned ``value``: ``value`` itself when it is
    not ``None``, else what the handler recorded; raises naming ``output`` if not JSON."""
    if value is not None:
        return encode_json(value, field="output")
    return job._output


class HandlerSessions:
    """Makes the sessions handlers ask for: from the registry's ``session_factory``, else on
    engines of its own to the runner's database, made on first use and sized to its slots."""

    def __init__(
        self,
        url: URL,
        factory: Any,
        slots: int,
        *,
        pooled: bool = True,
        async_refused: str | None = None,
    ) -> None:
        self._url = url
        self._slots = slots
        self._pooled = pooled
        self._async_refused = async_refused
        factories = factory if isinstance(factory, tuple) else (factory,)
        self._sync: Callable[[], Session] | None = None
        self._async: Callable[[], AsyncSession] | None = None
        for item in factories:
            if item is None:
                continue
            if isinstance(item, async_sessionmaker):
                self._async = item
            elif isinstance(item, sessionmaker):
                self._sync = item
            else:
                from sa_river.errors import ConfigError

                raise ConfigError(
                    "session_factory",
                    "must be a sessionmaker, an async_sessionmaker, or a tuple of one of each, "
                    f"got {type(item).__name__}",
                )
        self._engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None

    def _pool(self) -> dict[str, Any]:
        if not self._pooled:
            return {"poolclass": NullPool}
        size = min(self._slots, _SESSION_POOL_SIZE)
        return {"pool_size": size, "max_overflow": self._slots - size, "pool_pre_ping": True}

    def sync_session(self) -> Session:
        if self._sync is None:
            self._engine = create_engine(self._url, **self._pool())
            self._sync = sessionmaker(self._engine, expire_on_commit=False)
        return self._sync()

    def async_session(self) -> AsyncSession:
        if self._async_refused is not None:
            raise RuntimeError(self._async_refused)
        if self._async is None:
            self._async_engine = _create_async_engine(self._url, **self._pool())
            self._async = async_sessionmaker(self._async_engine, expire_on_commit=False)
        return self._async()

    def close(self) -> None:
        """Close the sync engine this made (the async one: :meth:`close_async`)."""
        if self._engine is not None:
            self._engine.dispose()

    async def close_async(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.dispose()


class Invoker:
    """Calls one kind's handler with its middleware (the registry's, then the kind's own)."""

    def __init__(
        self, handler: Handler, workers: Workers, sessions: HandlerSessions | None
    ) -> None:
        self.handler = handler
        wrappers = (*workers.middleware, *handler.middleware)
        if handler.session is not None and sessions is None:
            raise RuntimeError(f"{handler.kind}: its handler takes a session, but none is offered")
        self._sessions: HandlerSessions = sessions  # type: ignore[assignment]
        if handler.is_async:
            self._async_chain: tuple[WrapAsync, ...] = middleware_chain(wrappers, is_async=True)
            plain = not self._async_chain
        else:
            self._sync_chain: tuple[WrapSync, ...] = middleware_chain(wrappers, is_async=False)
            plain = not self._sync_chain
        if plain and handler.session is None:
            # Nothing around the handler: the executor calls it directly (the common case, and
            # a closure and a loop per job less).
            self.call = self.call_async = handler.fn  # type: ignore[method-assign]

    # -- sync -----------------------------------------------------------------------------

    def call(self, job: Job[Any]) -> Any:
        """Run a sync handler; its return value, or :data:`COMPLETED_IN_SESSION`."""
        fn = self.handler.fn
        if self.handler.session is None:
            return _through(self._sync_chain, job, lambda: fn(job))
        try:
            with self._sessions.sync_session() as session, session.begin():
                value = _through(self._sync_chain, job, lambda: fn(job, session))
                completed = _completion(job, value)
                if job.id not in job_set_state_if_running_many(session.connection(), [completed]):
                    raise _Fenced
        except _Fenced:
            _log_fenced(job)
        return COMPLETED_IN_SESSION

    # -- async ----------------------------------------------------------------------------

    async def call_async(self, job: Job[Any]) -> Any:
        """Run an async handler; its return value, or :data:`COMPLETED_IN_SESSION`."""
        fn = self.handler.fn
        if self.handler.session is None:
            return await _through_async(self._async_chain, job, lambda: fn(job))
        try:
            async with self._sessions.async_session() as session, session.begin():
                value = await _through_async(self._async_chain, job, lambda: fn(job, session))
                completed = _completion(job, value)
                changed = await session.run_sync(
                    lambda sync: job_set_state_if_running_many(sync.connection(), [completed])
                )
                if job.id not in changed:
                    raise _Fenced
        except _Fenced:
            _log_fenced(job)
        return COMPLETED_IN_SESSION


class _Fenced(Exception):
    """The attempt was no longer running when its session came to complete it: roll back."""


def _completion(job: Job[Any], value: Any) -> AttemptOutcome:
    return AttemptOutcome.completed(job.id, job.attempt, output=encoded_output(job, value))


def _through(chain: tuple[WrapSync, ...], job: Job[Any], call: Callable[[], Any]) -> Any:
    """``call()`` inside every wrapper of ``chain``, the first outermost."""
    for wrap in reversed(chain):
        call = _bound(wrap, job, call)
    return call()


def _bound(wrap: WrapSync, job: Job[Any], inner: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: wrap(job, inner)


async def _through_async(
    chain: tuple[WrapAsync, ...], job: Job[Any], call: Callable[[], Awaitable[Any]]
) -> Any:
    for wrap in reversed(chain):
        call = _bound_async(wrap, job, call)
    return await call()


def _bound_async(
    wrap: WrapAsync, job: Job[Any], inner: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    return lambda: wrap(job, inner)


def _log_fenced(job: Job[Any]) -> None:
    logger.warning(
        "job %d (%s) attempt %d: no longer running when its handler finished (rescued, "
        "cancelled or timed out); the handler's session was rolled back",
        job.id,
        job.kind,
        job.attempt,
        extra={"event": "job_fenced", "job_id": job.id, "kind": job.kind},
    )
