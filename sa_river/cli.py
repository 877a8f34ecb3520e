"""The ``sa-river`` / ``python -m sa_river`` command line.

Commands::

    migrate up       [--database-url URL] [--target REV]   upgrade (default target: heads)
    migrate down     [--database-url URL] --target REV     downgrade; REV "base" removes everything
    migrate current  [--database-url URL]                  print the applied revision(s)
    migrate sql      [--target REV] [--from REV]           print the offline SQL script

``--database-url`` defaults to the ``SA_RIVER_DATABASE_URL`` environment variable.
``migrate down`` has no default target on purpose: removing the queue's tables (and its jobs)
must be asked for by name (``--target base``).

Exit codes: 0 success; 1 error (unreachable database, malformed URL, unknown revision, failed
migration), reported as one line on stderr; 2 usage error (argparse's convention).

Adding a command: write ``add_<name>_parser(subparsers)`` that registers its parser and sets
``handler=<function>`` with :meth:`argparse.ArgumentParser.set_defaults`, then call it from
:func:`build_parser`. A handler takes ``(args, out)`` -- the parsed namespace and the stream to
print to -- and returns the exit code; raising :class:`CommandFailed` (or one of the errors
:func:`main` knows) reports a one-line error with exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

import alembic.util
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from sa_river import migrate

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliParser",
    "CommandFailed",
    "add_migrate_parser",
    "build_parser",
    "main",
    "redact_url",
]

PROG = "sa-river"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, TextIO], int]


class CommandFailed(Exception):
    """An expected failure of a command: printed as one line, exit code 1."""


class _UsageError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class CliParser(argparse.ArgumentParser):
    """Raises instead of exiting on a usage error, so :func:`main` stays testable in process.

    Subcommand parsers are of this class too (``add_subparsers`` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


def build_parser() -> CliParser:
    """The top-level parser with every command registered."""
    parser = CliParser(
        prog=PROG,
        description="sa_river: a PostgreSQL job queue on SQLAlchemy, sharing River's tables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_migrate_parser(commands)
    return parser


def _add_database_url(parser: CliParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help=f"SQLAlchemy URL of the database (default: ${migrate.DATABASE_URL_ENV})",
    )


def add_migrate_parser(commands: argparse._SubParsersAction[CliParser]) -> None:
    """Register ``migrate {up,down,current,sql}``."""
    parser = commands.add_parser(
        "migrate",
        help="create, upgrade or remove the river tables",
        description="Run sa_river's shipped Alembic revisions (history in "
        f"{migrate.VERSION_TABLE}).",
    )
    actions = parser.add_subparsers(dest="migrate_command", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="upgrade the river tables (default: to the latest)")
    _add_database_url(up)
    up.add_argument("--target", default="heads", metavar="REV", help="default: heads")
    up.add_argument("-v", "--verbose", action="store_true", help="log each revision run")
    up.set_defaults(handler=cmd_migrate_up)

    down = actions.add_parser(
        "down", help="downgrade the river tables; --target base removes them and their jobs"
    )
    _add_database_url(down)
    down.add_argument(
        "--target",
        required=True,
        metavar="REV",
        help='revision to go down to, e.g. sa_river_0005, -1, or "base" for everything',
    )
    down.add_argument("-v", "--verbose", action="store_true", help="log each revision run")
    down.set_defaults(handler=cmd_migrate_down)

    current = actions.add_parser("current", help="print the applied sa_river revision")
    _add_database_url(current)
    current.set_defaults(handler=cmd_migrate_current)

    sql = actions.add_parser(
        "sql", help="print the SQL script of an upgrade, without touching a database"
    )
    sql.add_argument("--target", default="heads", metavar="REV", help="default: heads")
    sql.add_argument(
        "--from",
        dest="start",
        default=None,
        metavar="REV",
        help="revision the database is at (default: an empty database)",
    )
    sql.set_defaults(handler=cmd_migrate_sql)


def _database_url(args: argparse.Namespace) -> str:
    url: str | None = args.database_url or migrate.database_url_from_env()
    if not url:
        raise CommandFailed(
            f"no database URL: pass --database-url or set {migrate.DATABASE_URL_ENV}"
        )
    return url


def _describe(heads: Sequence[str]) -> str:
    if not heads:
        return "base"
    latest = set(migrate.head_revisions())
    return ", ".join(f"{rev} (head)" if rev in latest else rev for rev in heads)


def _log_revisions(args: argparse.Namespace) -> None:
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        logging.getLogger("alembic").setLevel(logging.INFO)


def cmd_migrate_up(args: argparse.Namespace, out: TextIO) -> int:
    url = _database_url(args)
    _log_revisions(args)
    heads = migrate.command_upgrade(url, args.target)
    print(f"sa_river schema at {_describe(heads)}", file=out)
    return EXIT_OK


def cmd_migrate_down(args: argparse.Namespace, out: TextIO) -> int:
    url = _database_url(args)
    _log_revisions(args)
    heads = migrate.command_downgrade(url, args.target)
    print(f"sa_river schema at {_describe(heads)}", file=out)
    return EXIT_OK


def cmd_migrate_current(args: argparse.Namespace, out: TextIO) -> int:
    heads = migrate.command_current(_database_url(args))
    print(_describe(heads), file=out)
    return EXIT_OK


def cmd_migrate_sql(args: argparse.Namespace, out: TextIO) -> int:
    out.write(migrate.command_sql(args.target, start=args.start))
    return EXIT_OK


# --- error reporting ------------------------------------------------------------------------

_PASSWORD_IN_URL = re.compile(r":[^:/@\s]*@")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, even when the URL does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return _PASSWORD_IN_URL.sub(":***@", url)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error_message(exc: BaseException, url: str | None) -> str:
    where = f" '{redact_url(url)}'" if url else ""
    if isinstance(exc, sqlalchemy.exc.NoSuchModuleError):
        return f"unsupported database URL{where}: {exc}"
    if isinstance(exc, sqlalchemy.exc.ArgumentError):
        return f"malformed database URL{where}: {exc}"
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return f"cannot use database{where}: {exc.orig if exc.orig is not None else exc}"
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return f"database error on{where}: {exc.orig if exc.orig is not None else exc}"
    return str(exc)


_KNOWN_ERRORS = (
    CommandFailed,
    alembic.util.CommandError,
    sqlalchemy.exc.ArgumentError,
    sqlalchemy.exc.DBAPIError,
)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the command line; return the exit code (0 ok, 1 error, 2 usage)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        # --help and --version print through sys.stdout and exit: keep them on our streams.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except _UsageError as exc:
        exc.parser.print_usage(err)
        print(f"{exc.parser.prog}: error: {exc}", file=err)
        return EXIT_USAGE
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args, out)
    except _KNOWN_ERRORS as exc:
        url = getattr(args, "database_url", None) or migrate.database_url_from_env()
        print(f"{PROG}: error: {_one_line(_error_message(exc, url))}", file=err)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
