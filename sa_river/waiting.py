"""Waiting for a job to finish: :func:`wait_for` and :func:`wait_for_async`.

A waiter borrows one connection of the target's engine (never the caller's transaction, whose
snapshot might never show the change), LISTENs on the topic every statement that finalises jobs
notifies (``<schema>.sa_river_job_finalized``), and looks at its job when a notification names
it, and at least every ``poll_interval`` seconds in any case: jobs finalised without a
notification (cancelled before they ran, discarded by the rescuer, finalised by a River worker)
are found by that look. The connection stops listening before it goes back to the pool.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from sa_river._targets import AsyncTarget, SyncTarget, unscoped, unscoped_async
from sa_river.errors import JobWaitTimeout
from sa_river.queries.job_admin import job_get
from sa_river.queries.notify import CURRENT_SCHEMA_SQL, TOPIC_FINALIZED, listen_statement
from sa_river.types import FINALIZED_STATES, JobRow

__all__ = ["wait_for", "wait_for_async"]

_UNLISTEN = "UNLISTEN *"


def wait_for(
    target: SyncTarget, job_id: int, *, timeout: float = 30.0, poll_interval: float = 1.0
) -> JobRow:
    """Wait until job ``job_id`` is finalised (``completed``, ``cancelled`` or
    ``discarded``) and return it; its recorded output is ``row.metadata.get("output")``.

    ``target`` is an Engine, or a Session or Connection whose engine lends the waiter a
    connection of its own. Raises :class:`~sa_river.JobWaitTimeout` after ``timeout``
    seconds, and ``LookupError`` if there is no such job (or it was deleted meanwhile).

    >>> result = sa_river.insert(engine, Report(month="2026-11"))        # doctest: +SKIP
    >>> row = sa_river.wait_for(engine, result.job.id, timeout=60)       # doctest: +SKIP
    >>> row.metadata["output"]                                           # doctest: +SKIP
    {'pages': 12}
    """
    _check_times(timeout, poll_interval)
    engine = _sync_engine(target)
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        driver: Any = conn.connection.driver_connection
        schema = driver.execute(CURRENT_SCHEMA_SQL).fetchone()[0]
        driver.execute(listen_statement(f"{schema}.{TOPIC_FINALIZED}"))
        try:
            while True:
                row = _finalized(job_get(conn, job_id), job_id)
                if row is not None:
                    return row
                look_again_at = min(deadline, time.monotonic() + poll_interval)
                while (left := look_again_at - time.monotonic()) > 0:
                    notes = list(driver.notifies(timeout=left, stop_after=1))
                    if any(_names(note.payload, job_id) for note in notes):
                        break
                if time.monotonic() >= deadline:
                    found = job_get(conn, job_id)
                    last = _finalized(found, job_id)
                    if last is not None:
                        return last
                    raise JobWaitTimeout(job_id, timeout, found.state.value if found else None)
        finally:
            driver.execute(_UNLISTEN)


async def wait_for_async(
    target: AsyncTarget, job_id: int, *, timeout: float = 30.0, poll_interval: float = 1.0
) -> JobRow:
    """Async twin of :func:`wait_for`, for an ``AsyncEngine``, ``AsyncSession`` or
    ``AsyncConnection``.

    >>> row = await sa_river.wait_for_async(async_engine, job_id, timeout=60)  # doctest: +SKIP
    """
    _check_times(timeout, poll_interval)
    engine = _async_engine(target)
    deadline = time.monotonic() + timeout
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        driver: Any = (await conn.get_raw_connection()).driver_connection
        cursor = await driver.execute(CURRENT_SCHEMA_SQL)
        schema = (await cursor.fetchone())[0]
        await driver.execute(listen_statement(f"{schema}.{TOPIC_FINALIZED}"))
        try:
            while True:
                found = await conn.run_sync(lambda sync: job_get(sync, job_id))
                row = _finalized(found, job_id)
                if row is not None:
                    return row
                look_again_at = min(deadline, time.monotonic() + poll_interval)
                while (left := look_again_at - time.monotonic()) > 0:
                    notes = [n async for n in driver.notifies(timeout=left, stop_after=1)]
                    if any(_names(note.payload, job_id) for note in notes):
                        break
                if time.monotonic() >= deadline:
                    found = await conn.run_sync(lambda sync: job_get(sync, job_id))
                    last = _finalized(found, job_id)
                    if last is not None:
                        return last
                    raise JobWaitTimeout(job_id, timeout, found.state.value if found else None)
        finally:
            await driver.execute(_UNLISTEN)


def _check_times(timeout: float, poll_interval: float) -> None:
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not poll_interval > 0:
        raise ValueError(
            f"poll_interval must be a positive number of seconds, got {poll_interval!r}"
        )


def _finalized(row: JobRow | None, job_id: int) -> JobRow | None:
    if row is None:
        raise LookupError(f"there is no job {job_id} (never inserted, or deleted)")
    return row if row.state in FINALIZED_STATES else None


def _names(payload: str, job_id: int) -> bool:
    """Whether a finalized notification concerns ``job_id``: it lists it, or lists nothing
    (too many to list: every waiter looks)."""
    try:
        ids = json.loads(payload).get("ids")
    except (ValueError, AttributeError):
        return True
    return ids is None or job_id in ids


def _sync_engine(target: SyncTarget) -> Engine:
    bare = unscoped(target)
    if isinstance(bare, Engine):
        return bare
    if isinstance(bare, Connection):
        return bare.engine
    if isinstance(bare, Session):
        bind = bare.get_bind()
        return bind if isinstance(bind, Engine) else bind.engine
    hint = ""
    if isinstance(bare, AsyncEngine | AsyncConnection | AsyncSession):
        hint = " (use wait_for_async)"
    raise TypeError(
        f"wait_for target must be an Engine, Session or Connection, got {type(bare).__name__}"
        + hint
    )


def _async_engine(target: AsyncTarget) -> AsyncEngine:
    bare = unscoped_async(target)
    if isinstance(bare, AsyncEngine):
        return bare
    if isinstance(bare, AsyncConnection):
        return bare.engine
    if isinstance(bare, AsyncSession):
        if isinstance(bare.bind, AsyncEngine):
            return bare.bind
        if isinstance(bare.bind, AsyncConnection):
            return bare.bind.engine
        bind = bare.get_bind()  # a session bound per mapper: its sync engine
        return AsyncEngine(bind if isinstance(bind, Engine) else bind.engine)
    raise TypeError(
        "wait_for_async target must be an AsyncEngine, AsyncSession or AsyncConnection, "
        f"got {type(bare).__name__}"
    )
