"""Database URLs: what each part of sa_river connects with, and the one-line reasons for the
URLs it refuses. No database involved.

Before ``sa_river.urls`` held these rules, the worker, the command line, the pytest plugin and
the notifier each had their own copy, and the copies disagreed; the tests marked "was:" pin
each case where they did.
"""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url

from sa_river import pytest_plugin
from sa_river.errors import ConfigError
from sa_river.urls import (
    URL_EXAMPLE,
    DatabaseUrlError,
    command_line_url,
    libpq_dsn,
    runner_url,
    url_text,
)

# --- runner_url: a runner's own Engine ---------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql+psycopg://bob:pw@db/app", "postgresql+psycopg://bob:pw@db/app"),
        ("postgresql://bob:pw@db/app", "postgresql+psycopg://bob:pw@db/app"),
        ("postgres://bob:pw@db/app", "postgresql+psycopg://bob:pw@db/app"),
        ("postgres+psycopg2://bob:pw@db/app", "postgresql+psycopg://bob:pw@db/app"),
        ("postgresql+asyncpg://bob:pw@db/app", "postgresql+psycopg://bob:pw@db/app"),
        ("postgresql+psycopg_async://bob@db:5433/app", "postgresql+psycopg://bob@db:5433/app"),
        (
            "postgresql+psycopg://bob@db/app?sslmode=require",
            "postgresql+psycopg://bob@db/app?sslmode=require",
        ),
    ],
)
def test_runner_url_is_psycopg_whatever_the_driver(given: str, expected: str) -> None:
    assert url_text(runner_url(given)) == expected


def test_runner_url_takes_a_url_or_an_engine() -> None:
    url = make_url("postgresql+psycopg2://bob:pw@db/app")
    assert url_text(runner_url(url)) == "postgresql+psycopg://bob:pw@db/app"
    engine = create_engine("postgresql+psycopg://bob:pw@db/app")  # connects to nothing yet
    try:
        assert runner_url(engine) == engine.url
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("", f"malformed database URL '': expected {URL_EXAMPLE}"),
        ("not a url", f"malformed database URL 'not a url': expected {URL_EXAMPLE}"),
        (
            "postgresql+psycopg://user:SECRET@host:notaport/db",
            "malformed database URL 'postgresql+psycopg://user:***@host:notaport/db': the port "
            "is not a number",
        ),
        (
            "sqlite:///jobs.db",
            f"database URL 'sqlite:///jobs.db' is not a PostgreSQL one: sa_river needs "
            f"{URL_EXAMPLE}",
        ),
        (
            "mysql+pymysql://user:SECRET@host/db",
            "database URL 'mysql+pymysql://user:***@host/db' is not a PostgreSQL one: sa_river "
            f"needs {URL_EXAMPLE}",
        ),
    ],
)
def test_runner_url_refuses_with_a_config_error_on_database_url(given: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        runner_url(given)
    assert isinstance(info.value, DatabaseUrlError)
    assert info.value.field == "database_url"
    assert info.value.reason == reason
    assert str(info.value) == f"database_url: {reason}"


def test_runner_url_refuses_a_non_url() -> None:
    with pytest.raises(DatabaseUrlError) as info:
        runner_url(42)  # type: ignore[arg-type]
    assert info.value.reason == "expected a URL string, URL or Engine, got int"


def test_runner_url_hides_the_password_of_a_non_postgresql_url_object() -> None:
    url = URL.create("mysql+pymysql", username="bob", password="SECRET", host="db")
    with pytest.raises(DatabaseUrlError) as info:
        runner_url(url)
    assert "SECRET" not in str(info.value)
    assert "bob:***@db" in str(info.value)


def test_runner_url_refuses_an_unescaped_at_in_the_password() -> None:
    # Was: the worker accepted it, SQLAlchemy ending the password at its first '@', so the rest
    # of the password became the host, and the connection error showed it.
    with pytest.raises(DatabaseUrlError) as info:
        runner_url("postgresql+psycopg://bob:SECRET@PART2@db/app")
    assert info.value.reason == (
        "malformed database URL 'postgresql+psycopg://bob:***@db/app': it has more than one "
        "'@'; write an '@' in the user name or password as %40"
    )
    assert url_text(runner_url("postgresql://bob:SECRET%40PART2@db/app")) == (
        "postgresql+psycopg://bob:SECRET%40PART2@db/app"
    )


@pytest.mark.parametrize(
    "given",
    [
        "bob:SECRET@db",
        "postgresql://bob:SECRET@db:abc/app",
        "postgresql://bob:SECRET@PART2@db/app",
        "mysql://bob:SECRET@db/app",
    ],
)
def test_the_worker_and_the_command_line_give_the_same_reason(given: str) -> None:
    # Was: the worker said "cannot parse ...; expected postgresql+psycopg://user@host/dbname"
    # and "sa_river needs PostgreSQL, got ...", the command line said it in other words.
    with pytest.raises(DatabaseUrlError) as for_worker:
        runner_url(given)
    with pytest.raises(DatabaseUrlError) as for_command_line:
        command_line_url(given)
    assert for_worker.value.reason == for_command_line.value.reason
    assert "SECRET" not in for_worker.value.reason
    assert "PART2" not in for_worker.value.reason


# --- command_line_url: the command line's engines keep the driver given ------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://bob:pw@db/app", "postgresql+psycopg://bob:pw@db/app"),
        ("postgresql://bob:pw@db/app", "postgresql+psycopg://bob:pw@db/app"),
        # Already right: the text itself, not SQLAlchemy's rendering of it.
        (
            "postgresql+psycopg://bob:p%2Fw@db/app?b=2&a=1",
            "postgresql+psycopg://bob:p%2Fw@db/app?b=2&a=1",
        ),
    ],
)
def test_command_line_url_spells_postgresql_with_psycopg_by_default(
    given: str, expected: str
) -> None:
    assert command_line_url(given) == expected


def test_command_line_url_refuses_what_the_runner_would_map() -> None:
    # Different on purpose: migrate, status and enqueue build engines with the driver given,
    # so an asyncio one cannot work there, while a runner always uses psycopg.
    given = "postgresql+asyncpg://bob:SECRET@db/app"
    assert runner_url(given).drivername == "postgresql+psycopg"
    with pytest.raises(DatabaseUrlError, match="names the asyncio driver 'asyncpg'"):
        command_line_url(given)


def test_command_line_url_shows_the_url_as_written() -> None:
    with pytest.raises(DatabaseUrlError) as info:
        command_line_url("postgres+nosuchdriver://bob:SECRET@db/app")
    assert info.value.reason == (
        "unknown driver 'nosuchdriver' in database URL 'postgres+nosuchdriver://bob:***@db/app'"
        f": use {URL_EXAMPLE}"
    )


# --- libpq_dsn: a raw psycopg connection, such as the notifier's -------------------------------


def test_libpq_dsn_connects_where_the_runner_engine_does() -> None:
    url = runner_url("postgresql+asyncpg://bob:p%40ss%20w%27rd@db:5433/app?sslmode=require")
    assert conninfo_to_dict(libpq_dsn(url)) == {
        "host": "db",
        "port": "5433",
        "dbname": "app",
        "user": "bob",
        "password": "p@ss w'rd",
        "sslmode": "require",
    }


def test_libpq_dsn_keeps_every_host() -> None:
    # Was: the notifier rendered the URL as a libpq URI, where the repeated host parameter
    # left one host, 'b:5433' (no such host), while the runner's Engine connected to a or b.
    url = runner_url("postgresql+psycopg://bob@/app?host=a:5432&host=b:5433")
    params = conninfo_to_dict(libpq_dsn(url))
    assert (params["host"], params["port"]) == ("a,b", "5432,5433")


def test_libpq_dsn_of_a_socket_url() -> None:
    params = conninfo_to_dict(libpq_dsn(runner_url("postgresql://bob@/app?host=/run/pg")))
    assert params == {"host": "/run/pg", "dbname": "app", "user": "bob"}


# --- url_text: for another process -------------------------------------------------------------


def test_url_text_parses_back_to_the_same_url() -> None:
    url = URL.create(
        "postgresql+psycopg", username="bob", password="p@ss:/w?rd", host="db", database="app"
    )
    assert make_url(url_text(url)) == url


# --- the pytest plugin's server URL ------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        "postgresql+psycopg2://bob@db/app",
        "postgres+psycopg2://bob@db/app",
        "postgresql+asyncpg://bob@db/app",
        "postgresql://bob@db/app",
    ],
)
def test_plugin_server_url_is_psycopg_as_its_fixtures_promise(given: str) -> None:
    # Was: psycopg2 and pg8000 URLs were kept, though sa_river_database_url is documented as
    # postgresql+psycopg, and "postgres+psycopg2" stayed "postgres+...", which SQLAlchemy
    # cannot load.
    url = pytest_plugin._server_url(given, "SA_RIVER_TEST_DATABASE_URL")
    assert url_text(url) == "postgresql+psycopg://bob@db/app"


def test_plugin_bad_server_url_is_a_usage_error_naming_where_it_came_from() -> None:
    # Was: a malformed URL failed the fixture with SQLAlchemy's own exception and traceback.
    with pytest.raises(pytest.UsageError) as info:
        pytest_plugin._server_url("postgresql://bob:SECRET@db:abc/app", "--sa-river-database-url")
    assert str(info.value) == (
        "--sa-river-database-url: malformed database URL 'postgresql://bob:***@db:abc/app': "
        "the port is not a number"
    )
