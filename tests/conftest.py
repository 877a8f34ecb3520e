"""Test databases: real PostgreSQL, one fresh database per test.

Where the server comes from, first match wins:

1. ``SA_RIVER_TEST_DATABASE_URL`` (any database on the server; tests create their own);
2. a server answering on ``127.0.0.1:5432`` as ``postgres`` (trust auth);
3. an embedded server started from the ``pgserver`` wheel for this session, and stopped at its
   end (``embedded_server``; tests/integration/test_test_database.py checks that nothing of it
   is left running).

A template database is migrated once per session with the shipped Alembic revisions; each test
that asks for ``db_url`` gets a copy of it (``CREATE DATABASE ... TEMPLATE``, ~50 ms), and
``empty_db_url`` gives a database with nothing in it. Both are dropped after the test, so tests
run in any order and may open as many connections as they like.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

LOCAL_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _answers(url: URL) -> bool:
    try:
        with psycopg.connect(_libpq_dsn(url), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def embedded_server() -> Iterator[URL]:
    """An embedded server from the ``pgserver`` wheel, in a new temporary directory, for the
    ``with`` block: stopped at its end, before its directory is deleted (deleting it first
    leaves the server running with nothing that can stop it)."""
    # pgserver (through platformdirs) warns at import time when XDG_RUNTIME_DIR is unset, and
    # the suite turns warnings into errors: import and start it with warnings silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError(
                "no PostgreSQL answers on 127.0.0.1:5432 and pgserver is not installed: "
                "pip install 'sa_river[embedded]' or set SA_RIVER_TEST_DATABASE_URL"
            ) from exc
    with tempfile.TemporaryDirectory(prefix="sa_river_pg_") as tmp_root:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pgserver.get_server(tmp_root, cleanup_mode="stop")
        try:
            uri = make_url(server.get_uri())
            yield uri.set(drivername="postgresql+psycopg", password=None)
        finally:
            server.cleanup()  # pg_ctl stop, while the data directory still exists


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """URL of a maintenance database on the test server (used to create and drop databases)."""
    configured = os.environ.get("SA_RIVER_TEST_DATABASE_URL")
    if configured:
        url = make_url(configured)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        yield url
        return
    local = make_url(LOCAL_SERVER_URL)
    if _answers(local):
        yield local
        return
    with embedded_server() as url:
        yield url


class DatabaseFactory:
    """Creates and drops throw-away databases on the test server."""

    def __init__(self, server_url: URL) -> None:
        self.server_url = server_url
        self._created: list[str] = []

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(_libpq_dsn(self.server_url), autocommit=True)

    def create(self, template: str | None = None, prefix: str = "sa_river_test") -> URL:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        sql = f'CREATE DATABASE "{name}"'
        if template:
            sql += f' TEMPLATE "{template}"'
        with self._admin() as conn:
            conn.execute(sql)
        self._created.append(name)
        return self.server_url.set(database=name)

    def drop(self, url: URL) -> None:
        assert url.database
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        if url.database in self._created:
            self._created.remove(url.database)

    def drop_all(self) -> None:
        for name in list(self._created):
            self.drop(self.server_url.set(database=name))


@pytest.fixture(scope="session")
def databases(server_url: URL) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(server_url)
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def template_db(databases: DatabaseFactory) -> str:
    """Name of a database migrated to head once per session, the template of ``db_url``."""
    from sa_river import migrate

    url = databases.create(prefix="sa_river_template")
    engine = create_engine(url, poolclass=_null_pool())
    try:
        with engine.begin() as conn:
            migrate.upgrade(conn)
    finally:
        engine.dispose()
    assert url.database
    return url.database


def _null_pool() -> type:
    from sqlalchemy.pool import NullPool

    return NullPool


@pytest.fixture
def empty_db_url(databases: DatabaseFactory) -> Iterator[URL]:
    """A new database with nothing in it."""
    url = databases.create()
    yield url
    databases.drop(url)


@pytest.fixture
def db_url(databases: DatabaseFactory, template_db: str) -> Iterator[URL]:
    """A new database with the river schema at head."""
    url = databases.create(template=template_db)
    yield url
    databases.drop(url)


@pytest.fixture
def engine(db_url: URL) -> Iterator[Engine]:
    """An Engine on a fresh migrated database, disposed after the test."""
    eng = create_engine(db_url, pool_size=5, max_overflow=20)
    yield eng
    eng.dispose()
