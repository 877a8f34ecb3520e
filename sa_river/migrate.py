"""Create, upgrade and remove the river tables with sa_river's shipped Alembic revisions.

The revisions live inside the package, in ``sa_river/migrations/versions/`` (addressable as
``"sa_river:migrations"``): an empty root revision ``sa_river_0001`` carrying the branch label
``sa_river``, then one revision per River schema version (``sa_river_0002`` is River's version 1,
..., ``sa_river_0008`` is River's version 7). Each revision also records its River version in
``river_migration`` (line ``main``), so River's own CLI and River UI see the schema as current.

sa_river's Alembic history always lives in its own version table, ``sa_river_alembic_version``,
never in your ``alembic_version``: a foreign revision id in your table would break every Alembic
environment that does not list sa_river's scripts. There are three ways in ("doors"):

**Door 1, the default: inside your own Alembic env.** Add two lines to your ``env.py``; then a plain
``alembic upgrade head`` brings the queue's tables up to date before your own revisions run::

    import sa_river.migrate as river_migrate

    with connectable.connect() as connection:
        river_migrate.upgrade(connection)             # sa_river's revisions, own version table
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_name=river_migrate.include_name,  # autogenerate leaves river tables alone
        )
        with context.begin_transaction():
            context.run_migrations()

:func:`upgrade` takes a PostgreSQL advisory lock first, so app instances that boot at once do not
race. On a connection that is *not* in a transaction (as above) it runs each revision in its own
transaction and returns with the connection outside any transaction, so your own
``context.begin_transaction()`` still commits. On a connection already in a transaction (for
example ``with engine.begin() as conn: upgrade(conn)``) it runs inside that transaction, which the
caller commits. In offline mode (``alembic upgrade head --sql``) your env.py has no connection and
must not call :func:`upgrade`: get the queue's part of the script from
``python -m sa_river migrate sql`` instead. See ``alembic/env.py`` in the repository for a complete
example, including removing the river tables on ``alembic downgrade base``.
With an ``AsyncConnection``, use ``await conn.run_sync(sa_river.migrate.upgrade)``.

**Door 2: standalone.** ``python -m sa_river migrate up|down|current|sql --database-url ...``, or
from Python :func:`command_upgrade`, :func:`command_downgrade`, :func:`command_current` and
:func:`command_sql`. They run ``alembic.command`` on :func:`alembic_config` and the shipped
``env.py``. Alembic's cookbook recipe works too::

    with engine.begin() as conn:
        alembic.command.upgrade(sa_river.migrate.alembic_config(connection=conn), "heads")

Door 1 and Door 2 share ``sa_river_alembic_version``, so you may start with one and move to the
other with nothing to stamp.

**Door 3: Alembic-native multiple bases**, for teams that want one ``alembic_version``. List the
package's versions in your ``version_locations`` (``pyproject.toml``: ``[tool.alembic]
version_locations = ["%(here)s/alembic/versions", "sa_river:migrations/versions"]``, or
``alembic.ini`` with ``path_separator = space`` -- the ``os`` separator that ``alembic init``
writes splits ``sa_river:migrations`` on the colon and silently drops it) and run
``alembic upgrade heads`` (plural: with two bases ``head`` is ambiguous). The history then lands
in *your* ``alembic_version``; moving between Door 3 and Doors 1-2 needs ``alembic stamp``.

To author a new sa_river revision::

    from alembic import command
    command.revision(alembic_config(), message="...", rev_id="sa_river_0009", head="sa_river@head")

A database that River's own Go migrator created already has the tables: adopt it by stamping
(``command.stamp(alembic_config(connection=conn), "sa_river_0008")``), not by upgrading.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO, TypeAlias

import alembic.op
from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType
    from alembic.runtime.migration import RevisionStep

__all__ = [
    "BRANCH_LABEL",
    "DATABASE_URL_ENV",
    "DATABASE_URL_ENVS",
    "DATABASE_URL_FALLBACK_ENV",
    "LOCK_KEY",
    "RIVER_ENUM_NAMES",
    "RIVER_FUNCTION_NAMES",
    "RIVER_TABLE_NAMES",
    "SCRIPT_LOCATION",
    "VERSION_TABLE",
    "DatabaseUrlSource",
    "alembic_config",
    "command_current",
    "command_downgrade",
    "command_sql",
    "command_upgrade",
    "current",
    "database_url_from_env",
    "downgrade",
    "head_revisions",
    "include_name",
    "migration_lock",
    "resolve_database_url",
    "script_directory",
    "upgrade",
]

VERSION_TABLE = "sa_river_alembic_version"
"""sa_river's own Alembic version table, in the same schema as the river tables."""

BRANCH_LABEL = "sa_river"
"""Branch label of the root revision; ``sa_river@head`` addresses sa_river's head anywhere."""

SCRIPT_LOCATION = "sa_river:migrations"
"""The shipped Alembic script directory, as a package resource."""

DATABASE_URL_ENV = "SA_RIVER_DATABASE_URL"
"""Environment variable read first for the database URL when none is given."""

DATABASE_URL_FALLBACK_ENV = "DATABASE_URL"
"""Read when ``SA_RIVER_DATABASE_URL`` is not set: the name hosting platforms and most
applications give their database URL, so that the queue finds the application's database
without being told twice."""

DATABASE_URL_ENVS = (DATABASE_URL_ENV, DATABASE_URL_FALLBACK_ENV)
"""The variables read for the database URL, first match wins (:func:`resolve_database_url`)."""

LOCK_KEY = 0x73615F7269766572
"""Key of the advisory lock held while migrating: the bytes of ``b"sa_river"`` as a bigint."""

RIVER_TABLE_NAMES: frozenset[str] = frozenset(
    {
        "river_client",  # River 5-6, dropped in 7; ignored if an older River schema has it
        "river_client_queue",
        "river_job",
        "river_leader",
        "river_migration",
        "river_notification",
        "river_queue",
        "sa_river_client",  # sa_river's own worker heartbeats
    }
)
"""Every table River's schema has had, and sa_river's own; :func:`include_name` hides them
from autogenerate."""

RIVER_ENUM_NAMES: frozenset[str] = frozenset({"river_job_state"})
RIVER_FUNCTION_NAMES: frozenset[str] = frozenset({"river_job_state_in_bitmask", "river_job_notify"})

# What MigrationContext calls with the current heads: the steps to run (alembic.command's "fn").
_MigrationFn = Callable[[Any, MigrationContext], Iterable["RevisionStep"]]


def script_directory() -> ScriptDirectory:
    """The shipped script directory (``sa_river:migrations``)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revisions() -> tuple[str, ...]:
    """The head revision ids of the shipped history (one, unless the history is broken)."""
    return tuple(script_directory().get_heads())


def alembic_config(
    url: str | URL | None = None,
    connection: Connection | None = None,
    *,
    stdout: TextIO | None = None,
    output_buffer: TextIO | None = None,
) -> Config:
    """An Alembic ``Config`` for the shipped revisions; no ini file needed.

    With ``connection``, the shipped env.py migrates on that connection (Alembic's "Sharing a
    Connection" recipe): inside its transaction if it has one, otherwise one transaction per
    revision. With ``url`` (or ``SA_RIVER_DATABASE_URL``), env.py opens its own connection.
    ``output_buffer`` receives the SQL of offline (``sql=True``) commands; ``stdout`` receives what
    Alembic's commands print.
    """
    cfg = Config(stdout=stdout if stdout is not None else sys.stdout, output_buffer=output_buffer)
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    # Set explicitly so Alembic does not warn about the legacy default; only script_location
    # is used, and it is not split on the separator.
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        # ConfigParser interpolation: a URL-encoded password ("%40") must be escaped.
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Hold sa_river's migration advisory lock on ``connection`` for the ``with`` block.

    Inside a transaction, a transaction-level lock (released when the caller commits or rolls
    back). Outside one, a session-level lock, released on exit; the block then starts and ends
    outside any transaction: what it leaves open is committed on success, rolled back on error.
    """
    key = {"key": LOCK_KEY}
    if connection.in_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)
        yield
        return
    connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
    connection.commit()
    try:
        yield
    except BaseException:
        _release_after_error(connection)
        raise
    if connection.in_transaction():
        connection.commit()
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
    connection.commit()


def _release_after_error(connection: Connection) -> None:
    # Best effort: the error being raised matters more than a failed unlock, and a lock on a
    # broken connection dies with its session anyway.
    try:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
        connection.commit()
    except Exception:
        if connection.in_transaction():
            connection.rollback()


@contextmanager
def _operations(ctx: MigrationContext) -> Iterator[None]:
    """``Operations.context(ctx)`` that restores an ``op`` proxy installed by an outer run.

    ``Operations.context`` removes the module-level ``op`` proxy on exit; when :func:`upgrade` is
    called from inside a running revision of the caller, that would break the caller's ``op``.
    """
    previous: Operations | None = getattr(alembic.op, "_proxy", None)
    try:
        with Operations.context(ctx):
            yield
    finally:
        if previous is not None:
            previous._install_proxy()


# Alembic's ``op`` is one module-level proxy per process: two threads migrating different
# databases at once would run revisions on each other's connection. The advisory lock only
# serialises runs on the same database, so runs in this process also take this lock.
_OP_PROXY_LOCK = threading.RLock()


def _run(connection: Connection, make_fn: Callable[[ScriptDirectory], _MigrationFn]) -> None:
    script = script_directory()
    with migration_lock(connection), _OP_PROXY_LOCK:
        ctx = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "script": script,
                "fn": make_fn(script),
                # Only takes effect when we own the transaction (see migration_lock).
                "transaction_per_migration": True,
            },
        )
        with _operations(ctx), ctx.begin_transaction():
            ctx.run_migrations()


def upgrade(connection: Connection, target: str = "heads") -> None:
    """Upgrade the river tables on ``connection`` to ``target`` (default: the latest).

    Meant for Door 1 (call it in your env.py before ``context.configure``) and for programs and
    test fixtures. Serialised by :func:`migration_lock`; a no-op when already at ``target``.
    Never call ``alembic.command.upgrade`` from inside an env.py: a nested Alembic environment
    tears down the outer ``alembic.context``.
    """

    def make_fn(script: ScriptDirectory) -> _MigrationFn:
        def fn(heads: Any, _ctx: MigrationContext) -> Iterable[RevisionStep]:
            return script._upgrade_revs(target, heads)  # what alembic.command.upgrade runs

        return fn

    _run(connection, make_fn)


def downgrade(connection: Connection, target: str) -> None:
    """Downgrade the river tables on ``connection`` to ``target``; ``"base"`` removes them all.

    Downgrading below ``sa_river_0005`` leaves the enum value ``pending`` in ``river_job_state``
    (PostgreSQL cannot drop an enum value; River does the same); ``"base"`` drops the type.
    The empty ``sa_river_alembic_version`` table stays, as Alembic's own version table does.
    """

    def make_fn(script: ScriptDirectory) -> _MigrationFn:
        def fn(heads: Any, _ctx: MigrationContext) -> Iterable[RevisionStep]:
            return script._downgrade_revs(target, heads)  # what alembic.command.downgrade runs

        return fn

    _run(connection, make_fn)


def current(connection: Connection) -> tuple[str, ...]:
    """The sa_river revision ids applied on ``connection``; ``()`` when none is."""
    was_in_transaction = connection.in_transaction()
    ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    heads = tuple(ctx.get_current_heads())
    if not was_in_transaction and connection.in_transaction():
        connection.commit()
    return heads


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """``include_name`` hook for your env.py: autogenerate ignores sa_river's objects.

    Hides River's tables (and everything in them), ``sa_river_alembic_version`` and the
    ``river_job_state`` enum, so ``alembic revision --autogenerate`` and ``alembic check`` never
    propose to drop or alter them. Everything else is included.
    """
    if type_ == "table":
        return name not in RIVER_TABLE_NAMES and name != VERSION_TABLE
    if type_ == "schema":
        return True
    if type_ in (
        "column",
        "index",
        "unique_constraint",
        "foreign_key_constraint",
        "check_constraint",
    ):
        return parent_names.get("table_name") not in RIVER_TABLE_NAMES
    # Alembic itself sends no other kinds; an autogenerate plugin comparing enum types may.
    return name not in RIVER_ENUM_NAMES


# --- Door 2: standalone commands (used by ``python -m sa_river migrate``) -----------------------

UrlOrConnection: TypeAlias = "str | URL | Engine | Connection"
"""What the ``command_*`` helpers accept: a URL (string or object), an Engine or a Connection."""


def _engine_for(url: str | URL) -> Engine:
    parsed = make_url(url)
    connect_args: dict[str, Any] = {}
    if (
        parsed.get_backend_name() == "postgresql"
        and parsed.get_driver_name() in ("psycopg", "psycopg2")
        and "connect_timeout" not in parsed.query
    ):
        connect_args["connect_timeout"] = 10  # fail fast on an unreachable host
    return create_engine(parsed, poolclass=NullPool, connect_args=connect_args)


@contextmanager
def _connection(target: UrlOrConnection) -> Iterator[Connection]:
    if isinstance(target, Connection):
        yield target
        return
    engine = target if isinstance(target, Engine) else _engine_for(target)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        if not isinstance(target, Engine):
            engine.dispose()


def command_upgrade(target: UrlOrConnection, revision: str = "heads") -> tuple[str, ...]:
    """Upgrade through ``alembic.command.upgrade`` and the shipped env.py; return the new heads."""
    with _connection(target) as connection:
        command.upgrade(alembic_config(connection=connection), revision)
        return current(connection)


def command_downgrade(target: UrlOrConnection, revision: str) -> tuple[str, ...]:
    """Downgrade through ``alembic.command.downgrade``; ``"base"`` removes the river tables."""
    with _connection(target) as connection:
        command.downgrade(alembic_config(connection=connection), revision)
        return current(connection)


def command_current(target: UrlOrConnection) -> tuple[str, ...]:
    """The applied sa_river revision ids; ``()`` when none is."""
    with _connection(target) as connection:
        return current(connection)


def command_sql(revision: str = "heads", start: str | None = None) -> str:
    """The offline (``--sql``) PostgreSQL script from ``start`` (default: empty) to ``revision``.

    Each revision is wrapped in its own ``BEGIN; ... COMMIT;`` and recorded in
    ``sa_river_alembic_version`` and ``river_migration``, so the script can be handed to a DBA
    and the database later managed by Doors 1 or 2. No database connection is needed.
    """
    buffer = io.StringIO()
    cfg = alembic_config(output_buffer=buffer)
    command.upgrade(cfg, f"{start}:{revision}" if start else revision, sql=True)
    return buffer.getvalue()


class DatabaseUrlSource(NamedTuple):
    """A database URL and where it was found: ``--database-url`` or the variable's name."""

    url: str
    source: str


def resolve_database_url(
    given: str | None = None, *, option: str = "--database-url"
) -> DatabaseUrlSource | None:
    """The database URL by the one rule of every command: ``given`` (what ``option`` was set
    to), else ``$SA_RIVER_DATABASE_URL``, else ``$DATABASE_URL``; ``None`` when none is set.

    Spaces around a value are dropped (a secret file's trailing newline), and an empty value
    counts as unset, as for every ``SA_RIVER_*`` variable, so a variable can be blanked without
    being unset. The URL is returned unchecked (:func:`sa_river.urls.command_line_url` checks
    it); ``source`` names where it was found, for messages about it: an application's
    ``DATABASE_URL`` that the command line cannot use should be named as such, not shown as a
    URL the user never typed.
    """
    if given and given.strip():
        return DatabaseUrlSource(given.strip(), option)
    for variable in DATABASE_URL_ENVS:
        value = os.environ.get(variable, "").strip()
        if value:
            return DatabaseUrlSource(value, variable)
    return None


def database_url_from_env() -> str | None:
    """The URL of :func:`resolve_database_url` with nothing given: ``$SA_RIVER_DATABASE_URL``,
    else ``$DATABASE_URL``; ``None`` when neither is set (or both are empty)."""
    found = resolve_database_url()
    return None if found is None else found.url
