"""HeldConnection: one pooled connection a loop keeps across its turns (internal).

The producers and the completer each hold one connection in autocommit mode, so a fetch or a
batch is a single round trip, not a pool checkout, a pre-ping, ``BEGIN``, the statement and
``COMMIT``. After an error the connection is dropped (invalidated, so the pool does not hand it
out again); the next turn checks out a fresh, pinged one.
"""

from __future__ import annotations

from contextlib import suppress

from sqlalchemy import Connection, Engine

__all__ = ["HeldConnection"]


class HeldConnection:
    """A connection of ``engine``'s pool, checked out on first use and kept until dropped."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def get(self) -> Connection:
        """The held connection, checked out (in autocommit mode) if none is held."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
        return conn

    def drop(self, *, invalidate: bool = True) -> None:
        """Give the connection back; ``invalidate`` (after an error) closes it for good."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                if invalidate:
                    conn.invalidate()
                conn.close()
