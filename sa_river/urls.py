"""Database URLs: the one place that reads them, checks them and turns them into what each part
of sa_river connects with (internal).

Which function to use:

- :func:`runner_url` -- a worker runner's own Engine (always the psycopg 3 driver);
- :func:`command_line_url` -- an engine of the command line (the driver given is kept);
- :func:`libpq_dsn` -- a raw psycopg connection, such as the notifier's LISTEN connection;
- :func:`url_text` -- a URL to hand to another process, password included;
- :func:`redact_url` -- a URL to show to people.

Every refusal is a :class:`DatabaseUrlError`, whose ``reason`` is one line that shows the URL
with its password hidden.
"""

from __future__ import annotations

import re

import sqlalchemy.exc
from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from sa_river.errors import ConfigError

__all__ = [
    "RUNNER_DRIVER",
    "URL_EXAMPLE",
    "DatabaseUrlError",
    "command_line_url",
    "libpq_dsn",
    "parse_database_url",
    "redact_url",
    "runner_url",
    "url_text",
]

RUNNER_DRIVER = "postgresql+psycopg"
"""The driver of a runner's own Engine: psycopg 3, sa_river's dependency and so always there."""

URL_EXAMPLE = "postgresql+psycopg://user:password@host:5432/dbname"
"""The form error messages suggest."""

_PASSWORD_IN_QUERY = re.compile(r"(?i)([?&]password=)[^&]*")


class DatabaseUrlError(ConfigError):
    """A database URL sa_river cannot use; a :class:`ConfigError` on ``database_url``.

    ``reason`` is the message without the field name, for the command line, which names no
    field: it says what is wrong and shows the URL with its password hidden.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("database_url", reason)
        self.reason = reason


def parse_database_url(text: str) -> URL:
    """``text`` parsed, or :class:`DatabaseUrlError` saying what is malformed.

    Checks first what SQLAlchemy would get wrong quietly: it ends a password at its first
    ``@``, so an unescaped ``@`` in a password would make the rest of the password the host,
    and the connection error would then show that part of it.
    """
    shown = redact_url(text)
    _, separator, rest = text.partition("://")
    if not separator:
        raise DatabaseUrlError(f"malformed database URL '{shown}': expected {URL_EXAMPLE}")
    if rest.count("@") > 1:
        raise DatabaseUrlError(
            f"malformed database URL '{shown}': it has more than one '@'; write an '@' in the "
            "user name or password as %40"
        )
    try:
        return make_url(text)
    except sqlalchemy.exc.ArgumentError:
        raise DatabaseUrlError(
            f"malformed database URL '{shown}': expected {URL_EXAMPLE}"
        ) from None
    except ValueError:  # the only one make_url raises: int() of the port
        raise DatabaseUrlError(
            f"malformed database URL '{shown}': the port is not a number"
        ) from None


def runner_url(database: str | URL | Engine) -> URL:
    """The URL a worker runner builds its own Engine from: ``database``'s, with the psycopg 3
    driver whatever driver it names.

    The runner's Engine is its own (never the application's pool), and psycopg 3 is the one
    driver sa_river is tested with and depends on: an async or psycopg2 URL, or an Engine an
    application made for its own driver, still gives a runner that works. ``postgres://``, as
    Heroku and libpq spell it, is PostgreSQL too. Anything else is a
    :class:`DatabaseUrlError`.
    """
    if isinstance(database, Engine):
        url = database.url
    elif isinstance(database, URL):
        url = database
    elif isinstance(database, str):
        url = parse_database_url(database)
    else:
        raise DatabaseUrlError(
            f"expected a URL string, URL or Engine, got {type(database).__name__}"
        )
    _require_postgresql(url)
    return url.set(drivername=RUNNER_DRIVER)


def command_line_url(text: str) -> str:
    """``text`` if the command line can create an engine from it, else
    :class:`DatabaseUrlError`; a ``postgres://`` or driverless URL comes back spelled
    ``postgresql+psycopg://``.

    Unlike :func:`runner_url` it keeps the driver given (``migrate``, ``status`` and ``enqueue``
    use it), so it refuses one that is unknown, asyncio or not installed. It runs before any
    engine exists: handed to SQLAlchemy, a ``sqlite:`` URL creates a file before the command
    fails, and a malformed one fails with a traceback that can show part of the password.
    """
    url = parse_database_url(text)
    _require_postgresql(url)
    # Without a driver, psycopg 3 (sa_river's own): SQLAlchemy 2.0 would pick psycopg2.
    drivername = f"postgresql+{url.drivername.partition('+')[2] or 'psycopg'}"
    shown = redact_url(text)  # as the user wrote it
    if url.drivername != drivername:
        url = url.set(drivername=drivername)
        text = url_text(url)
    driver = url.get_driver_name()
    try:
        dialect = url.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise DatabaseUrlError(
            f"unknown driver '{driver}' in database URL '{shown}': use {URL_EXAMPLE}"
        ) from None
    if dialect.is_async:
        raise DatabaseUrlError(
            f"database URL '{shown}' names the asyncio driver '{driver}': the command line "
            f"needs a synchronous one, as in {URL_EXAMPLE}"
        )
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise DatabaseUrlError(
            f"driver '{driver}' of database URL '{shown}' is not installed ({exc}): install it "
            f"or use {URL_EXAMPLE}"
        ) from None
    return text


def libpq_dsn(url: URL) -> str:
    """The psycopg connection string that connects where the runner's Engine for ``url`` does.

    Built by SQLAlchemy's psycopg dialect, which the runner's Engine connects through, rather
    than by rendering the URL as a libpq URI: the two read some URLs differently, and several
    hosts (``?host=a:5432&host=b:5433``), for one, would be a single host ``b:5433`` to libpq.
    """
    sync = runner_url(url)
    dialect = sync.get_dialect()()
    args, params = dialect.create_connect_args(sync)
    return make_conninfo(*args, **params)


def url_text(url: URL) -> str:
    """``url`` as text that parses back to the same URL, password included: for another
    process (in its environment, never its argv), never for showing (:func:`redact_url`)."""
    return url.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, even when the URL does not parse."""
    # SQLAlchemy ends the password at its first '@': with an unescaped '@' in the password, the
    # rest of it would be rendered as the host, so such a URL is only redacted as text.
    if url.count("@") <= 1:
        try:
            parsed = make_url(url)
        except (sqlalchemy.exc.ArgumentError, ValueError):
            pass
        else:
            if "@" not in (parsed.host or ""):
                return _PASSWORD_IN_QUERY.sub(r"\1***", parsed.render_as_string(hide_password=True))
    return _PASSWORD_IN_QUERY.sub(r"\1***", _redact_userinfo(url))


def _require_postgresql(url: URL) -> None:
    """:class:`DatabaseUrlError` unless ``url`` is PostgreSQL (``postgres://`` counts)."""
    if url.get_backend_name() not in ("postgresql", "postgres"):
        shown = redact_url(url_text(url))
        raise DatabaseUrlError(
            f"database URL '{shown}' is not a PostgreSQL one: sa_river needs {URL_EXAMPLE}"
        )


def _redact_userinfo(url: str) -> str:
    # A host never contains '@', so everything before the last one is user and password; past
    # the first ':' of it is the password (a user name cannot contain ':').
    head, at, rest = url.rpartition("@")
    if not at:
        return url
    scheme, separator, userinfo = head.partition("://") if "://" in head else ("", "", head)
    user, colon, _ = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}{separator}{user}:***@{rest}"
