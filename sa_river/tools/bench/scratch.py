"""Scratch databases for a bench run, and the plain psycopg connections the chores use.

Every workload runs on a database of its own, created on the server the bench was given and
dropped at the end, so a run never touches an application's data and never inherits a table
bloated by an earlier workload.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from sa_river import migrate
from sa_river.urls import libpq_dsn

__all__ = ["ScratchDatabases", "execute", "raw_connect", "scalar"]


class ScratchDatabases:
    """A migrated template database, and copies of it for each workload; all dropped at the end.

    ``CREATE DATABASE ... TEMPLATE`` copies the schema in a fraction of a second, so each
    workload starts on a database nobody else has touched.
    """

    def __init__(self, server_url: URL) -> None:
        self.server_url = server_url
        self.prefix = f"sa_river_bench_{uuid.uuid4().hex[:8]}"
        self._created: list[str] = []
        self._count = 0
        self.template: str | None = None

    def create(self) -> URL:
        """A new database, migrated to head (the template is made and migrated on first use)."""
        if self.template is None:
            self.template = self._create_database(None)
            engine = create_engine(self.server_url.set(database=self.template), poolclass=NullPool)
            try:
                with engine.begin() as conn:
                    migrate.upgrade(conn)
            finally:
                engine.dispose()
        return self.server_url.set(database=self._create_database(self.template))

    def _create_database(self, template: str | None) -> str:
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        with raw_connect(self.server_url) as conn:
            conn.execute(sql)
        self._created.append(name)
        return name

    def drop(self, url: URL) -> None:
        with raw_connect(self.server_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        if url.database in self._created:
            self._created.remove(str(url.database))

    def drop_all(self) -> None:
        """Drop every database this run created; an error on one does not keep the rest."""
        for name in reversed(list(self._created)):
            with suppress(psycopg.Error):
                self.drop(self.server_url.set(database=name))


def raw_connect(url: URL) -> psycopg.Connection[Any]:
    """A plain psycopg connection in autocommit: the ceilings' and the chores' connection."""
    return psycopg.connect(libpq_dsn(url), autocommit=True)


def scalar(url: URL, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row of ``sql``, on a connection of its own."""
    with raw_connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def execute(url: URL, *statements: str | tuple[str, Sequence[Any]]) -> None:
    """Run each statement (text, or text and parameters) on one connection of its own."""
    with raw_connect(url) as conn:
        for statement in statements:
            sql, params = (statement, ()) if isinstance(statement, str) else statement
            conn.execute(sql, params)
