"""pytest plugin: a new PostgreSQL database with the river tables for each test.

Installed with sa_river (entry point ``pytest11``: ``sa_river``), so the fixtures below are there
in any test suite of a project that depends on sa_river; ``-p no:sa_river`` turns it off.
Importing it connects to nothing: databases are made only when a test asks for a fixture.

Fixtures (all names start with ``sa_river_``):

``sa_river_engine``
    An ``Engine`` on a database of its own for this test, with the river tables at the latest
    revision; disposed and the database dropped after the test.
``sa_river_database_url``
    The URL of that database (a SQLAlchemy ``URL``, driver ``postgresql+psycopg``), for tests
    that make their own engines (``create_async_engine(url.set(drivername=
    "postgresql+psycopg_async"))``) or start a ``sa_river.Worker``.
``sa_river_prepare_database`` (session scope; override it)
    A function ``prepare(connection)`` that sets up the template database once per session;
    by default ``sa_river.migrate.upgrade``. Override it to add the application's own tables::

        @pytest.fixture(scope="session")
        def sa_river_prepare_database():
            def prepare(connection):
                sa_river.migrate.upgrade(connection)
                Base.metadata.create_all(connection)

            return prepare

``sa_river_server_url`` (session scope)
    The server databases are made on. First match wins: the ``--sa-river-database-url``
    option, the ``SA_RIVER_TEST_DATABASE_URL`` environment variable, the
    ``sa_river_database_url`` ini option (any database on the server; the user must be allowed
    to create databases), else an embedded server from the ``pgserver`` wheel
    (``pip install 'sa_river[embedded]'``) started for the session.

The template database is made and prepared once per session (per xdist worker); each test's
database is a copy of it (``CREATE DATABASE ... TEMPLATE``, some tens of milliseconds), so
tests may commit, open several connections and run workers without seeing each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

__all__ = [
    "DATABASE_URL_ENV",
    "sa_river_database_url",
    "sa_river_engine",
    "sa_river_prepare_database",
    "sa_river_server_url",
    "sa_river_template_database",
]

DATABASE_URL_ENV = "SA_RIVER_TEST_DATABASE_URL"
_OPTION = "--sa-river-database-url"
_INI = "sa_river_database_url"


def pytest_addoption(parser: pytest.Parser) -> None:
    help_text = (
        "a PostgreSQL URL on the server where sa_river's fixtures create throw-away "
        f"databases (default: ${DATABASE_URL_ENV}, then an embedded pgserver)"
    )
    group = parser.getgroup("sa_river", "sa_river test databases")
    group.addoption(_OPTION, dest="sa_river_database_url", metavar="URL", help=help_text)
    parser.addini(_INI, help_text, default=None)


def _server_url(text: str, source: str) -> URL:
    """The configured server's URL as the fixtures give it: with the psycopg 3 driver, which
    the fixture ``sa_river_database_url`` promises and a ``sa_river.Worker`` runs on,
    whatever driver ``text`` names. A URL sa_river cannot use is a usage error naming
    ``source``, where it was configured, with the password hidden."""
    from sa_river.urls import DatabaseUrlError, runner_url

    try:
        return runner_url(text)
    except DatabaseUrlError as exc:
        raise pytest.UsageError(f"{source}: {exc.reason}") from None


def _configured_url(config: pytest.Config) -> tuple[str, str] | None:
    """The configured server URL and where it was configured, first match winning."""
    option = config.getoption("sa_river_database_url", default=None)
    if option:
        return str(option), _OPTION
    env = os.environ.get(DATABASE_URL_ENV)
    if env:
        return env, DATABASE_URL_ENV
    ini = config.getini(_INI)
    return (str(ini), f"ini option {_INI}") if ini else None


@pytest.fixture(scope="session")
def sa_river_server_url(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[URL]:
    """The server the throw-away databases are made on (see the module docstring)."""
    configured = _configured_url(pytestconfig)
    if configured:
        yield _server_url(*configured)
        return
    import warnings

    try:
        with warnings.catch_warnings():
            # platformdirs warns at import time when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        pytest.fail(
            f"sa_river fixtures need a PostgreSQL server: set {DATABASE_URL_ENV} (or pass "
            f"{_OPTION}) to a URL such as postgresql+psycopg://postgres@localhost/postgres, "
            "or pip install 'sa_river[embedded]' for an embedded server",
            pytrace=False,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(  # type: ignore[attr-defined]
            tmp_path_factory.mktemp("sa_river_pg"), cleanup_mode="stop"
        )
    yield _server_url(server.get_uri(), "pgserver").set(password=None)


class _Databases:
    """Creates and drops databases on the server, through an AUTOCOMMIT connection."""

    def __init__(self, server_url: URL) -> None:
        self.server_url = server_url

    def _execute(self, sql: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def create(self, prefix: str, template: str | None = None) -> URL:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"  # our own name: safe to quote and format
        self._execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.server_url.set(database=name)

    def drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sa_river_prepare_database() -> Callable[[Connection], None]:
    """How the template database is set up: ``sa_river.migrate.upgrade``. Override to add yours."""
    from sa_river.migrate import upgrade

    return upgrade


@pytest.fixture(scope="session")
def sa_river_template_database(
    sa_river_server_url: URL, sa_river_prepare_database: Callable[[Connection], None]
) -> Iterator[str]:
    """Name of the database prepared once per session; each test's database copies it."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    databases = _Databases(sa_river_server_url)
    url = databases.create("sa_river_template")
    assert url.database is not None
    try:
        engine = create_engine(url, poolclass=NullPool)  # nothing may stay connected to it
        try:
            with engine.begin() as conn:
                sa_river_prepare_database(conn)
        finally:
            engine.dispose()
        yield url.database
    finally:
        databases.drop(url.database)


@pytest.fixture
def sa_river_database_url(
    sa_river_server_url: URL, sa_river_template_database: str
) -> Iterator[URL]:
    """URL of a new database with the river tables, dropped after the test."""
    databases = _Databases(sa_river_server_url)
    url = databases.create("sa_river_test", template=sa_river_template_database)
    assert url.database is not None
    try:
        yield url
    finally:
        databases.drop(url.database)


@pytest.fixture
def sa_river_engine(sa_river_database_url: URL) -> Iterator[Engine]:
    """An ``Engine`` on a new database with the river tables; disposed after the test."""
    from sqlalchemy import create_engine

    engine = create_engine(sa_river_database_url)
    try:
        yield engine
    finally:
        engine.dispose()
