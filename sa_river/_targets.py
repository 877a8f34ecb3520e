"""Run a function on the Connection behind whatever the caller handed us (internal).

Sessions and connections lend their current transaction (the caller commits or rolls back);
an engine opens a transaction of its own and commits it. A ``scoped_session`` (Flask-SQLAlchemy's
``db.session``) or ``async_scoped_session`` stands for the session it currently holds. The
async twins run the same sync function through ``run_sync``, so every statement has one
implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
)
from sqlalchemy.orm import Session, scoped_session

__all__ = ["AsyncTarget", "SyncTarget", "run_async", "run_sync", "unscoped", "unscoped_async"]

SyncTarget: TypeAlias = Session | scoped_session[Any] | Connection | Engine
AsyncTarget: TypeAlias = AsyncSession | async_scoped_session[Any] | AsyncConnection | AsyncEngine
_R = TypeVar("_R")


def unscoped(target: SyncTarget) -> Session | Connection | Engine:
    """``target``, or the session a ``scoped_session`` currently holds."""
    return target() if isinstance(target, scoped_session) else target


def unscoped_async(target: AsyncTarget) -> AsyncSession | AsyncConnection | AsyncEngine:
    """``target``, or the session an ``async_scoped_session`` currently holds."""
    return target() if isinstance(target, async_scoped_session) else target


def run_sync(
    target: SyncTarget, fn: Callable[[Connection], _R], *, what: str, atomic: bool = False
) -> _R:
    """``fn(connection)`` in ``target``'s transaction (an engine's own, committed).

    ``atomic``: ``fn`` writes with a single statement (anything after it only reads), so on an
    engine it runs in autocommit, that statement its own transaction: one round trip instead
    of BEGIN, the statement and COMMIT.
    """
    target = unscoped(target)
    if isinstance(target, Session):
        return fn(target.connection())
    if isinstance(target, Connection):
        return fn(target)
    if isinstance(target, Engine):
        if atomic:
            with target.connect() as conn:
                return _in_autocommit(conn, fn)
        with target.begin() as conn:
            return fn(conn)
    hint = ""
    if isinstance(target, AsyncSession | AsyncConnection | AsyncEngine):
        hint = f" (use {what}_async for async targets)"
    raise TypeError(
        f"{what} target must be a Session, Connection or Engine, got {type(target).__name__}" + hint
    )


def _in_autocommit(conn: Connection, fn: Callable[[Connection], _R]) -> _R:
    """``fn(conn)`` with every statement its own transaction, on a connection just checked out.

    psycopg's own switch when that is the driver: SQLAlchemy's ``isolation_level`` execution
    option does the same but reads and restores the level around it, which costs a single
    insert a third of its client time.
    """
    dbapi_connection: Any = conn.connection.dbapi_connection
    if conn.dialect.driver != "psycopg" or not hasattr(dbapi_connection, "autocommit"):
        return fn(conn.execution_options(isolation_level="AUTOCOMMIT"))
    dbapi_connection.autocommit = True
    try:
        return fn(conn)
    finally:
        try:
            if not dbapi_connection.closed:
                dbapi_connection.autocommit = False
        except Exception:
            # Never hand the pool a connection left in autocommit: drop it instead.
            conn.invalidate()


async def run_async(
    target: AsyncTarget, fn: Callable[[Connection], _R], *, what: str, atomic: bool = False
) -> _R:
    """Async twin of :func:`run_sync` for ``AsyncSession``/``AsyncConnection``/``AsyncEngine``."""
    target = unscoped_async(target)
    if isinstance(target, AsyncSession):
        return await target.run_sync(lambda session: fn(session.connection()))
    if isinstance(target, AsyncConnection):
        return await target.run_sync(fn)
    if isinstance(target, AsyncEngine):
        if atomic:
            async with target.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await autocommit.run_sync(fn)
        async with target.begin() as conn:
            return await conn.run_sync(fn)
    raise TypeError(
        f"{what}_async target must be an AsyncSession, AsyncConnection or AsyncEngine, "
        f"got {type(target).__name__}"
    )
