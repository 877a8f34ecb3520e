"""Running a prebuilt statement straight on the DBAPI connection (internal): the hot paths.

The statements stay SQLAlchemy Core, compiled once per dialect. What is skipped is the work
``Connection.execute`` does on every call around the driver: the compiled-cache lookup,
parameter and result processing, and building result metadata and ``Row`` objects. For a
one-row insert that is well over half of the client's CPU, which is the cost a web request
pays. The statement runs on the very DBAPI connection (and so in the very transaction) the
caller's ``Session`` or ``Connection`` holds; errors are raised as SQLAlchemy's
``DBAPIError`` subclasses, as from ``execute``, and a lost connection is invalidated.

Only psycopg (3) connections that nobody observes take this path: with ``echo`` on, or a
``before_cursor_execute`` / ``after_cursor_execute`` listener registered (SQL tracing such as
OpenTelemetry's SQLAlchemy instrumentation, statement counters in tests), and with any other
driver, the same statement runs through ``Connection.execute``, seen as usual.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

__all__ = ["DriverStatement", "join_transaction"]

_NAMED = re.compile(r"%\((\w+)\)s")
"""A pyformat placeholder as SQLAlchemy's psycopg dialect renders it."""


class _Compiled(NamedTuple):
    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]


def join_transaction(conn: Connection) -> Any:
    """``conn``'s DBAPI connection, for a statement about to bypass ``Connection.execute``,
    after doing what that method's autobegin would: the caller's ``commit()`` or
    ``rollback()`` must see the transaction the statement runs in (psycopg starts it
    implicitly). In autocommit there is none to see, and a begin would only cost a rollback.
    """
    dbapi_connection: Any = conn.connection.dbapi_connection
    if not conn.in_transaction() and not getattr(dbapi_connection, "autocommit", False):
        conn.begin()
    return dbapi_connection


def _observed(conn: Connection) -> bool:
    """Whether something watches ``conn``'s statements: echo, or cursor-execute listeners."""
    dispatch = conn.dispatch
    return bool(conn.engine.echo or dispatch.before_cursor_execute or dispatch.after_cursor_execute)


class DriverStatement:
    """A Core statement run on the driver; :meth:`rows` returns plain tuples.

    >>> insert_one = DriverStatement(select(...))                        # doctest: +SKIP
    >>> insert_one.rows(conn, {"kind": "email", ...})                    # doctest: +SKIP
    [(42, 'available', ...)]
    """

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[type[Dialect], _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(type(dialect))
        if compiled is None:
            done = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            if "POSTCOMPILE" in str(done):
                # An "expanding" parameter (a Core in_() list) is filled in per call by
                # Connection.execute, which this bypasses: write such a test another way.
                raise TypeError("a DriverStatement cannot hold an in_() list of parameters")
            names: list[str] = []

            def positional(match: re.Match[str]) -> str:
                names.append(match.group(1))
                return "%s"

            # Positional placeholders: psycopg then takes the values as they come instead of
            # reordering a dict on every call. Literal values Core bound itself (its
            # ``param_N``) travel with every call as defaults.
            sql = _NAMED.sub(positional, str(done))
            # Core's own literals, as the driver takes them: an enum member by its value.
            defaults = {
                name: value.value if isinstance(value, Enum) else value
                for name, value in done.params.items()
            }
            compiled = _Compiled(sql, tuple(names), defaults)
            self._compiled[type(dialect)] = compiled
        return compiled

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run with ``values`` (every bound parameter the statement names) in ``conn``'s
        transaction; every row, as a tuple in the statement's column order."""
        return self._run(conn, values, fetch=True)[0]

    def rowcount(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; how many rows it changed."""
        return self._run(conn, values, fetch=False)[1]

    def _run(
        self, conn: Connection, values: Mapping[str, Any], *, fetch: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        dialect = conn.dialect
        if dialect.driver != "psycopg" or _observed(conn):
            result = conn.execute(self.statement, dict(values))
            if fetch:
                return [tuple(row) for row in result], -1
            return [], result.rowcount
        dbapi_connection = join_transaction(conn)
        sql, names, defaults = self._compile(dialect)
        params = [values[n] if n in values else defaults[n] for n in names]
        cursor = _cursor_of(conn, dbapi_connection)
        try:
            cursor.execute(sql, params)
            if fetch:
                rows: list[tuple[Any, ...]] = cursor.fetchall()
                if len(rows) > _KEPT_RESULT_ROWS:
                    _drop_cursor(conn, cursor)
                return rows, -1
            return [], int(cursor.rowcount)
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                sql,
                params,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=dialect,
            ) from exc


_CURSOR = "sa_river.driver_cursor"
"""Where a DBAPI connection's reused cursor is kept: the pool's per-connection ``info``."""

_KEPT_RESULT_ROWS = 128
"""A kept cursor holds its last result until the next statement: past this many rows (a large
batch insert) the cursor is closed instead, so an idle pooled connection never holds more."""


def _cursor_of(conn: Connection, dbapi_connection: Any) -> Any:
    """The cursor this module keeps for ``dbapi_connection``, made on first use.

    A psycopg cursor caches the adapters it looked up for each parameter and column type; a
    fresh cursor per call repeats those lookups, a third of a one-row insert's client time.
    One statement runs at a time on a connection, so sharing its cursor is safe; it is kept
    with its connection because the pool may keep ``info`` when it reconnects.
    """
    info = conn.connection.info
    kept = info.get(_CURSOR)
    if kept is None or kept[0] is not dbapi_connection:
        kept = info[_CURSOR] = (dbapi_connection, dbapi_connection.cursor())
    return kept[1]


def _drop_cursor(conn: Connection, cursor: Any) -> None:
    """Close the kept ``cursor`` (and its result); the next statement makes a new one."""
    conn.connection.info.pop(_CURSOR, None)
    cursor.close()
