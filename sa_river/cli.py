"""The ``sa-river`` / ``python -m sa_river`` command line.

Commands::

    migrate up       [--database-url URL] [--target REV]   upgrade (default target: heads)
    migrate down     [--database-url URL] --target REV     downgrade; REV "base" removes everything
    migrate current  [--database-url URL]                  print the applied revision(s)
    migrate sql      [--target REV] [--from REV]           print the offline SQL script
    worker  --app MODULE:ATTR [--queue NAME=N ...] [--database-url URL] [--poll-only] ...
            [--processes N] [--metrics-port PORT]          run a worker until SIGTERM/SIGINT
    enqueue --kind KIND [--args JSON] [--queue Q] ...      insert one job
    demo    [-n N] [--database-url URL]                    enqueue demo jobs and work them
    status  [--database-url URL] [--json]                  leader, live workers, job counts
    bench   [-n N] [--processes P] [--concurrency C] ...   sa_river beside a raw-SQL ceiling

Every command finds its database by one rule (:func:`sa_river.migrate.resolve_database_url`):
``--database-url``, else the environment variable ``SA_RIVER_DATABASE_URL``, else
``DATABASE_URL`` (an empty variable counts as unset). A variable is the better place for a URL
with a password: ``ps`` shows every process's argv to every user. A URL is checked before
anything connects (PostgreSQL, a known and installed synchronous driver, a numeric port, at most
one ``@``); a bad one from a variable is reported with the variable's name. ``worker``, ``demo``
and ``bench`` with no URL anywhere start an embedded PostgreSQL (data in ``./.sa_river/``;
``worker`` and ``demo`` migrate it) and say so in a WARNING on stderr: a worker on a private,
empty database would otherwise wait there forever without a word. ``migrate``, ``enqueue`` and
``status`` never do: tables, a job or counts in a database nobody else uses would only mislead.
``migrate down`` has no default target on purpose: removing the queue's tables (and its jobs)
must be asked for by name (``--target base``).

Every ``worker`` option ``--foo-bar`` can also be set by the environment variable
``SA_RIVER_FOO_BAR`` (``--queue``: ``SA_RIVER_QUEUES=default=100,mail=5``): the command line
wins over the environment, the environment over the defaults, and an empty variable counts as
unset. A malformed variable is a one-line error naming it (exit code 2). ``--app`` names a
``Workers`` registry or a function of no arguments returning one, imported with ``--app-dir``
(default: the current directory) first on ``sys.path``.

Exit codes: 0 success; 1 error (unreachable database, malformed URL, unknown revision, failed
migration), reported as one line on stderr; 2 usage error (argparse's convention), or a
malformed ``SA_RIVER_*`` worker variable.

Adding a command: write ``add_<name>_parser(subparsers)`` that registers its parser and sets
``handler=<function>`` with :meth:`argparse.ArgumentParser.set_defaults`, then call it from
:func:`build_parser`. A handler takes ``(args, out)`` -- the parsed namespace and the stream to
print to -- and returns the exit code; raising :class:`CommandFailed` (or one of the errors
:func:`main` knows) reports a one-line error with exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import alembic.util
import sqlalchemy.exc

from sa_river import config, migrate
from sa_river.errors import ConfigError, SaRiverError
from sa_river.supervisor import watch_supervisor
from sa_river.urls import DatabaseUrlError, command_line_url, redact_url

if TYPE_CHECKING:
    from sa_river.contrib.prometheus import MetricsServer
    from sa_river.worker import Worker
    from sa_river.workers import Workers

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliParser",
    "CommandFailed",
    "add_bench_parser",
    "add_demo_parser",
    "add_enqueue_parser",
    "add_migrate_parser",
    "add_status_parser",
    "add_worker_parser",
    "build_parser",
    "main",
    "redact_url",
]

logger = logging.getLogger("sa_river.cli")

PROG = "sa-river"
METRICS_HOST_DEFAULT = "0.0.0.0"
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

    after_parse: Callable[[CliParser, argparse.Namespace], None] | None = None
    """Run on this parser's namespace once its arguments are parsed (``worker`` fills in
    the options not on the command line from the environment, else their defaults)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A subcommand's parser is called through this method too, by the parent's
        # subparsers action (every Python from 3.x on), with the subcommand's arguments.
        parsed, extras = super().parse_known_args(
            args, argparse.Namespace() if namespace is None else namespace
        )
        if self.after_parse is not None:
            self.after_parse(self, parsed)
        return parsed, extras


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sa_river")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def build_parser() -> CliParser:
    """The top-level parser with every command registered."""
    parser = CliParser(
        prog=PROG,
        description="sa_river: a PostgreSQL job queue on SQLAlchemy, sharing River's tables.",
        epilog="Commands that use a database take --database-url; without it the URL is "
        f"${migrate.DATABASE_URL_ENV}, else ${migrate.DATABASE_URL_FALLBACK_ENV}. Exit codes: "
        "0 success; 1 an error, printed as one "
        "line on stderr (unreachable database, tables missing or out of date, bad URL...); "
        "2 a usage error. Add --help after a command for its options.",
    )
    parser.add_argument("--version", action="version", version=f"sa_river {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_migrate_parser(commands)
    add_worker_parser(commands)
    add_enqueue_parser(commands)
    add_demo_parser(commands)
    add_status_parser(commands)
    add_bench_parser(commands)
    return parser


def _add_database_url(parser: CliParser, *, env_tag: bool = False, embedded: bool = False) -> None:
    """``--database-url``, its help saying the order it is looked for in; ``env_tag``: name its
    variables as the other options of the command do (``[env: ...]``), rather than as its
    default; ``embedded``: the command falls back to the embedded PostgreSQL."""
    first, then = migrate.DATABASE_URL_ENVS
    fallback = (
        "; with none anywhere, an embedded PostgreSQL in ./.sa_river/ (a warning says so)"
        if embedded
        else ""
    )
    secret = "a variable is the better place for a password: ps shows every command's arguments "
    parser.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help=f"SQLAlchemy URL of the database, else ${first}, else ${then}{fallback}; {secret}"
        f"to every user [env: {first}, then {then}]"
        if env_tag
        else f"SQLAlchemy URL of the database (default: ${first}, else ${then}{fallback}); "
        f"{secret}to every user",
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

    up = actions.add_parser(
        "up",
        help="upgrade the river tables (default: to the latest)",
        description="Create or upgrade the river tables, serialised by an advisory lock so "
        "that several deploys can run it at once. Safe to repeat.",
    )
    _add_database_url(up)
    up.add_argument("--target", default="heads", metavar="REV", help="default: heads")
    up.add_argument("-v", "--verbose", action="store_true", help="log each revision run")
    up.set_defaults(handler=cmd_migrate_up)

    down = actions.add_parser(
        "down",
        help="downgrade the river tables; --target base removes them and their jobs",
        description="Downgrade to --target. There is no default on purpose: removing the "
        "tables (and every job in them) must be asked for by name, with --target base.",
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

    current = actions.add_parser(
        "current",
        help="print the applied sa_river revision",
        description="Print the sa_river revision the database is at ('base' if none), "
        "marking the latest one '(head)'.",
    )
    _add_database_url(current)
    current.set_defaults(handler=cmd_migrate_current)

    sql = actions.add_parser(
        "sql",
        help="print the SQL script of an upgrade, without touching a database",
        description="Print the SQL of an upgrade (Alembic's offline mode), for a DBA to "
        "review or run; no database is contacted.",
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


def _given_database_url(args: argparse.Namespace) -> str | None:
    """The command's database URL by :func:`sa_river.migrate.resolve_database_url`'s rule
    (``--database-url``, ``$SA_RIVER_DATABASE_URL``, ``$DATABASE_URL``), checked; ``None`` when
    none is set."""
    found = migrate.resolve_database_url(getattr(args, "database_url", None))
    return None if found is None else _check_database_url(found)


_NO_DATABASE_URL = "pass --database-url or set {} (or {})".format(*migrate.DATABASE_URL_ENVS)


def _database_url(args: argparse.Namespace) -> str:
    """The command's database URL; a :class:`CommandFailed` when there is none: ``migrate``,
    ``enqueue`` and ``status`` have no embedded fallback."""
    url = _given_database_url(args)
    if not url:
        raise CommandFailed(f"no database URL: {_NO_DATABASE_URL}")
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


# --- worker, enqueue, demo ------------------------------------------------------------------


def _queue_limit(text: str) -> tuple[str, int]:
    name, sep, limit = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=LIMIT, got {text!r}")
    try:
        return name, int(limit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"limit of {name!r} must be an integer") from None


SECONDS_MAX = 1_000_000_000
"""The largest duration any option takes, about 31 years: larger ones overflow the datetimes,
timedeltas and thread timeouts they become, and no setting needs them (retention 0 is forever)."""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    if value > SECONDS_MAX:
        raise argparse.ArgumentTypeError(
            f"must be at most {SECONDS_MAX} (about 31 years), got {text!r}"
        )
    return value


# Worker settings in seconds that go straight to WorkerConfig: (flag, field, default, help).
_WORKER_SECONDS: tuple[tuple[str, str, float, str], ...] = (
    (
        "--poll-interval",
        "fetch_poll_interval",
        config.FETCH_POLL_INTERVAL_DEFAULT,
        "fetch at least every S seconds when no notification arrives",
    ),
    (
        "--shutdown-timeout",
        "shutdown_timeout",
        config.SHUTDOWN_TIMEOUT_DEFAULT,
        "how long running jobs get to finish after the first SIGTERM/SIGINT",
    ),
    (
        "--heartbeat-interval",
        "heartbeat_interval",
        config.HEARTBEAT_INTERVAL_DEFAULT,
        "how often the worker records that it is alive",
    ),
    (
        "--rescue-after",
        "rescue_heartbeat_ttl",
        config.RESCUE_HEARTBEAT_TTL_DEFAULT,
        "a running job whose worker has not heartbeated for S seconds is rescued (made "
        "retryable); at least 3 x --heartbeat-interval",
    ),
    (
        "--rescuer-interval",
        "rescuer_interval",
        config.RESCUER_INTERVAL_DEFAULT,
        "how often the leader looks for jobs to rescue",
    ),
    (
        "--rescue-stuck-after",
        "rescue_stuck_after",
        config.RESCUE_STUCK_AFTER_DEFAULT,
        "rescue a running job whose worker never heartbeated here (a River Go worker) after S "
        "seconds",
    ),
    (
        "--completed-retention",
        "completed_retention",
        config.COMPLETED_RETENTION_DEFAULT,
        "delete completed jobs S seconds after they finished; 0 keeps them",
    ),
    (
        "--cancelled-retention",
        "cancelled_retention",
        config.CANCELLED_RETENTION_DEFAULT,
        "delete cancelled jobs S seconds after they finished; 0 keeps them",
    ),
    (
        "--discarded-retention",
        "discarded_retention",
        config.DISCARDED_RETENTION_DEFAULT,
        "delete discarded jobs S seconds after they finished; 0 keeps them",
    ),
)


class _StoreNamingOption(argparse.Action):
    """Store the value and, in ``<dest>_option``, which of the option's names was typed, so
    that an error about an option with an alias names what the user wrote."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_option", option_string)


class _SwitchNamingOption(argparse.BooleanOptionalAction):
    """``--foo`` / ``--no-foo``, recording which was typed as :class:`_StoreNamingOption`
    does."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        super().__call__(parser, namespace, values, option_string)
        setattr(namespace, f"{self.dest}_option", option_string)


ENV_PREFIX = "SA_RIVER_"
"""Every ``worker`` option ``--foo-bar`` can also be set by the environment variable
``SA_RIVER_FOO_BAR`` (``--queue``: ``SA_RIVER_QUEUES``)."""


class _EnvironmentValueError(Exception):
    """A malformed value in a ``SA_RIVER_*`` variable: one line naming the variable, exit 2."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


def add_worker_parser(commands: argparse._SubParsersAction[CliParser]) -> None:
    """Register ``worker``."""
    parser = commands.add_parser(
        "worker",
        help="run a worker: fetch and work jobs until SIGTERM/SIGINT",
        description="Run a worker on its own connection pool. The first SIGTERM/SIGINT stops "
        "it gracefully (running jobs finish, up to --shutdown-timeout); a second stops it hard.",
        epilog="Every option can also be set by the environment variable shown as [env: ...]. "
        "An option on the command line wins over its variable, and the variable over the "
        "default; an empty variable counts as unset. Switches take 1/0, true/false, yes/no "
        "or on/off. SA_RIVER_QUEUES holds every queue, comma-separated: "
        "SA_RIVER_QUEUES=default=100,mail=5 (a --queue on the command line replaces the whole "
        "list).",
    )
    # Given to supervised children in their environment, never in their argv: not in the table.
    _add_database_url(parser, env_tag=True, embedded=True)
    for option in _WORKER_OPTIONS:
        parser.add_argument(*option.flags, **option.argparse_keywords())
    parser.set_defaults(handler=cmd_worker)
    parser.after_parse = _resolve_worker_options


def _int_type(
    minimum: int, maximum: int | None = None, *, noun: str = "an integer"
) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number from ``minimum`` up to ``maximum``."""
    if maximum is not None:
        bound = f"must be between {minimum} and {maximum}"
    elif minimum == 0:
        bound = "must not be negative"
    else:
        bound = f"must be at least {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{bound}, got {value}")
        return value

    return parse


_port = _int_type(0, 65535, noun="a port number")
_positive_int = _int_type(1)
_non_negative_int = _int_type(0)


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse ``type`` for one of ``choices`` (all upper or all lower case), in any case:
    ``info``, ``Info`` and ``INFO`` are ``INFO``."""
    upper = all(choice.isupper() for choice in choices)

    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"expected one of {', '.join(choices)} (in any case), got {text!r}"
            )
        return value

    return parse


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _switch(text: str) -> bool:
    """A switch's value in the environment: ``1``/``true``/``yes``/``on`` or their opposites,
    in any case."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"expected one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}, got {text!r}"
    )


def _queue_list(text: str) -> list[tuple[str, int]]:
    """``SA_RIVER_QUEUES``: ``NAME=N`` items separated by commas (spaces around them ignored),
    the same as one ``--queue`` per item."""
    items = [item.strip() for item in text.split(",")]
    queues = [_queue_limit(item) for item in items if item]
    if not queues:
        raise argparse.ArgumentTypeError(f"expected NAME=LIMIT[,NAME=LIMIT...], got {text!r}")
    return queues


def _given(value: object) -> bool:
    """Whether a ``worker`` option has a value: ``None`` is its absence, and an empty one
    (``--id "$UNSET"``) is taken as absent too, leaving the default."""
    return value is not None and value != ""


ChildWords = Callable[[str, Any, int], list[str]]
"""``(flag, parsed value, child index)`` to the words supervised child ``index`` is given."""


def _child_value(flag: str, value: Any, index: int) -> list[str]:
    """``flag value`` as parsed, so the child parses back the same value."""
    return [flag, str(value)] if _given(value) else []


def _child_switch(flag: str, value: Any, index: int) -> list[str]:
    return [flag] if value else []


def _child_queues(flag: str, value: Any, index: int) -> list[str]:
    return [word for name, limit in value or () for word in (flag, f"{name}={limit}")]


def _child_id(flag: str, value: Any, index: int) -> list[str]:
    """``X-<index + 1>`` for ``--id X``: ids must differ, or each child's registration would
    take the row of another and make the rescuer think it restarted."""
    return [flag, f"{value}-{index + 1}"] if _given(value) else []


def _child_metrics_port(flag: str, value: Any, index: int) -> list[str]:
    """``PORT + index``: each process serves its own metrics (0: each picks a free port)."""
    return [] if value is None else [flag, str(value + index if value else 0)]


def _not_for_children(flag: str, value: Any, index: int) -> list[str]:
    return []


def _job_timeout(seconds: float) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds else None


def _dest(flag: str) -> str:
    """The attribute argparse stores ``flag`` in."""
    return flag.removeprefix("--").replace("-", "_")


@dataclass(frozen=True)
class _WorkerOption:
    """One ``worker`` option, the only place it is defined: how argparse reads it (``flags``
    and the ``add_argument`` keywords ``parse``), its ``default``, its environment variable
    (:attr:`variable`) and how that variable's text is read (``from_env``, by default the
    option's ``type``), the :class:`~sa_river.config.WorkerConfig` field it sets (through
    ``to_config``), if any, and what each supervised child is given for it (``to_child``),
    so that a new option reaches the environment, ``--help`` and the children without a
    second list.

    argparse itself stores ``None`` for an option not on the command line (the ``default``
    here is never argparse's): :func:`_resolve_worker_options` then takes the variable's
    value, or the default.
    """

    flags: tuple[str, ...]
    parse: Mapping[str, Any]
    default: Any = None
    field: str | None = None
    to_config: Callable[[Any], Any] = lambda value: value
    to_child: ChildWords = _child_value
    env_name: str | None = None
    from_env: Callable[[str], Any] | None = None

    @property
    def dest(self) -> str:
        """The attribute argparse stores the option in."""
        return str(self.parse.get("dest") or _dest(self.flags[0]))

    @property
    def variable(self) -> str:
        """The environment variable of the option: ``SA_RIVER_FOO_BAR`` for ``--foo-bar``."""
        return self.env_name or ENV_PREFIX + _dest(self.flags[0]).upper()

    def read_env(self, text: str) -> Any:
        """The value of the variable's ``text``; :class:`argparse.ArgumentTypeError` if bad."""
        read = self.from_env or self.parse.get("type") or str
        return read(text)

    def argparse_keywords(self) -> dict[str, Any]:
        keywords = {**self.parse, "default": None}
        keywords["help"] = f"{keywords.get('help', '')} [env: {self.variable}]".lstrip()
        return keywords


def _seconds_option(flag: str, field: str, default: float, help_text: str) -> _WorkerOption:
    return _WorkerOption(
        (flag,),
        {"type": _seconds, "metavar": "S", "help": f"{help_text} (default {default:g})"},
        field=field,
    )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING")
LOG_FORMATS = ("text", "json")

_WORKER_OPTIONS: tuple[_WorkerOption, ...] = (
    _WorkerOption(
        ("--app",),
        {
            "metavar": "MODULE:ATTR",
            "help": "required: your sa_river.Workers registry, or a function of no arguments "
            "that returns one (called once in each worker process), e.g. myapp.jobs:workers "
            "or myapp.jobs:create_workers",
        },
    ),
    _WorkerOption(
        ("--app-dir",),
        {
            "metavar": "DIR",
            "help": "directory put first on the import path for --app (default: the current "
            "directory)",
        },
        default=".",
    ),
    _WorkerOption(
        ("--queue",),
        {
            "dest": "queues",
            "action": "append",
            "type": _queue_limit,
            "metavar": "NAME=N",
            "help": "a queue and how many of its jobs run at once (repeatable; default: "
            "default=100); the variable takes them all, comma-separated",
        },
        field="queues",
        to_config=dict,
        to_child=_child_queues,
        env_name=f"{ENV_PREFIX}QUEUES",
        from_env=_queue_list,
    ),
    _WorkerOption(
        ("--id",),
        {"dest": "client_id", "help": "worker id (default: random)"},
        field="client_id",
        to_child=_child_id,
    ),
    _WorkerOption(
        ("--poll-only",),
        {
            "action": _SwitchNamingOption,
            "help": "never LISTEN, fetch by polling only (PgBouncer transaction mode); "
            "default off, and --no-poll-only turns it off whatever the variable says",
        },
        default=False,
        field="poll_only",
        to_child=_child_switch,
        from_env=_switch,
    ),
    _WorkerOption(
        ("--job-timeout",),
        {
            "type": _seconds,
            "metavar": "S",
            "help": "default per-attempt timeout; 0 for none (default "
            f"{(config.JOB_TIMEOUT_DEFAULT or timedelta(0)).total_seconds():g})",
        },
        field="job_timeout",
        to_config=_job_timeout,
    ),
    *(_seconds_option(*row) for row in _WORKER_SECONDS),
    _WorkerOption(
        ("--log-level",),
        {
            "type": _choice(LOG_LEVELS),
            "metavar": "LEVEL",
            "help": "DEBUG (one line per attempt), INFO or WARNING, in any case (default INFO)",
        },
        default="INFO",
    ),
    _WorkerOption(
        ("--log-format",),
        {
            "type": _choice(LOG_FORMATS),
            "metavar": "FORMAT",
            "help": "text: a line with key=value fields; json: one JSON object per line "
            "(fields documented in docs/observability.md) (default text)",
        },
        default="text",
    ),
    _WorkerOption(
        ("--log-jobs",),
        {
            "action": _SwitchNamingOption,
            "help": "log one INFO line per finished attempt (event=job_done: job id, kind, "
            "queue, attempt, how it ended, duration), even at --log-level WARNING; default "
            "off, and --no-log-jobs turns it off whatever the variable says",
        },
        default=False,
        to_child=_child_switch,
        from_env=_switch,
    ),
    _WorkerOption(
        ("--processes",),
        {
            "type": _positive_int,
            "metavar": "N",
            "help": "run N worker processes under one supervisor that restarts any that die "
            "and forwards SIGTERM/SIGINT (default 1: this process is the worker); --queue "
            "limits apply to each process",
        },
        default=1,
        to_child=_not_for_children,  # a child is one worker process
    ),
    _WorkerOption(
        ("--metrics-port",),
        {
            "type": _port,
            "metavar": "PORT",
            "help": "serve Prometheus metrics on http://HOST:PORT/metrics while the worker "
            "runs (needs: pip install 'sa_river[prometheus]'); 0 picks a free port, printed "
            "at start. With --processes N, process i (0 to N-1) serves its own metrics on "
            "PORT+i: scrape all N ports",
        },
        to_child=_child_metrics_port,
    ),
    _WorkerOption(
        ("--metrics-host", "--metrics-addr"),
        {
            "dest": "metrics_host",
            "action": _StoreNamingOption,
            "metavar": "HOST",
            "help": f"address the metrics server listens on (default {METRICS_HOST_DEFAULT}: "
            "every interface, for a Prometheus on another machine; 127.0.0.1 for one on this "
            "machine only); --metrics-addr is the old name",
        },
    ),
)
"""Every option of ``worker`` but ``--database-url``, in ``--help`` order."""

_OPTIONS_BY_DEST: dict[str, _WorkerOption] = {option.dest: option for option in _WORKER_OPTIONS}

_FIELD_OPTIONS: dict[str, _WorkerOption] = {
    option.field: option for option in _WORKER_OPTIONS if option.field is not None
}
"""The option behind each WorkerConfig field, so that a ConfigError names the option."""


def _resolve_worker_options(parser: CliParser, args: argparse.Namespace) -> None:
    """Give every ``worker`` option its effective value, in ``args``: the command line's,
    else its environment variable's, else its default. ``args.given_as`` records, for each
    option that was given, the flag or the variable it came from, for error messages.

    Called by :meth:`CliParser.parse_known_args` once the ``worker`` arguments are parsed,
    so that a parsed ``worker`` namespace always holds the settings the worker runs with. A
    malformed variable is an :class:`_EnvironmentValueError` naming it.
    """
    given_as: dict[str, str] = {}
    for option in _WORKER_OPTIONS:
        value = getattr(args, option.dest, None)
        if value is not None:
            typed = getattr(args, f"{option.dest}_option", None)
            given_as[option.dest] = typed or option.flags[0]
            continue
        text = os.environ.get(option.variable, "").strip()
        if text:
            try:
                value = option.read_env(text)
            except argparse.ArgumentTypeError as exc:
                raise _EnvironmentValueError(
                    parser.prog, f"environment variable {option.variable}: {exc}"
                ) from None
            given_as[option.dest] = option.variable
        else:
            value = option.default
        setattr(args, option.dest, value)
    args.given_as = given_as
    if not args.app:
        parser.error(
            f"the following arguments are required: --app (or the environment variable "
            f"{_OPTIONS_BY_DEST['app'].variable})"
        )


def _named(args: argparse.Namespace, dest: str) -> str:
    """How the user gave option ``dest``: its flag or its variable; the flag for a default."""
    given_as: Mapping[str, str] = getattr(args, "given_as", {})
    return given_as.get(dest) or _OPTIONS_BY_DEST[dest].flags[0]


_APP_ACCEPTS = "a sa_river.Workers registry, or a function of no arguments that returns one"


def _kind_of(value: object) -> str:
    """What ``value`` is, for an error message: ``an int``, ``a flask.app.Flask``, ``None``..."""
    import types

    if value is None:
        return "None"
    if isinstance(value, types.ModuleType):
        return f"the module {value.__name__!r}"
    if isinstance(value, type):
        return f"the class {_type_name(value)}"
    if isinstance(value, types.FunctionType | types.MethodType | types.BuiltinFunctionType):
        return "a function"
    name = _type_name(type(value))
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _type_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _use_app_dir(args: argparse.Namespace) -> str:
    """Put ``--app-dir`` (absolute) first on ``sys.path``, as ``python -m`` does for the
    current directory and the ``sa-river`` console script does not; return it."""
    directory = os.path.abspath(str(args.app_dir))
    if not os.path.isdir(directory):
        absolute = "" if directory == args.app_dir else f" ({directory})"
        raise CommandFailed(
            f"{_named(args, 'app_dir')}: {args.app_dir!r} is not a directory{absolute}"
        )
    if sys.path[:1] != [directory]:
        sys.path.insert(0, directory)
    return directory


def _app_given(args: argparse.Namespace) -> str:
    """``--app myapp:workers`` or ``SA_RIVER_APP=myapp:workers``, as the user gave it."""
    name = _named(args, "app")
    return f"{name}={args.app}" if name.startswith(ENV_PREFIX) else f"{name} {args.app}"


def _find_app(args: argparse.Namespace) -> Any:
    """Import ``--app``'s module and return what ``ATTR`` names, checked to be a ``Workers``
    or a callable taking no arguments; a one-line :class:`CommandFailed` otherwise."""
    from sa_river.workers import Workers

    name, spec = _named(args, "app"), args.app
    given = _app_given(args)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CommandFailed(f"{name} must be MODULE:ATTR, got {spec!r}")
    directory = _use_app_dir(args)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = ""
        missing = getattr(exc, "name", None)
        if missing and module_name.split(".")[0] == missing.split(".")[0]:
            app_dir = _OPTIONS_BY_DEST["app_dir"]
            hint = (
                f" (searched {directory} first; {app_dir.flags[0]} or {app_dir.variable} "
                "names another directory)"
            )
        raise CommandFailed(f"cannot import {module_name!r} for {name}: {exc}{hint}") from None
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CommandFailed(
                f"{given}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if isinstance(found, Workers):
        return found
    if not callable(found):
        raise CommandFailed(f"{given} is {_kind_of(found)}; {name} takes {_APP_ACCEPTS}")
    try:
        signature = inspect.signature(found)
    except (TypeError, ValueError):  # some builtins have none: their call will tell
        return found
    try:
        signature.bind()
    except TypeError:
        raise CommandFailed(
            f"{given} is {_kind_of(found)} that needs arguments {signature}; {name} takes "
            f"{_APP_ACCEPTS}"
        ) from None
    return found


def _load_workers(args: argparse.Namespace) -> Workers:
    """The ``Workers`` registry of ``--app``: the object itself, or what its factory returns
    (called here, so once per worker process)."""
    from sa_river.workers import Workers

    found = _find_app(args)
    if isinstance(found, Workers):
        return found
    name, given = _named(args, "app"), _app_given(args)
    registry = found()
    if isinstance(registry, Workers):
        return registry
    if inspect.iscoroutine(registry):
        registry.close()  # never awaited: no RuntimeWarning
        raise CommandFailed(
            f"{given} returned a coroutine: an async factory is not supported, make it a "
            f"plain function; {name} takes {_APP_ACCEPTS}"
        )
    raise CommandFailed(
        f"{given} returned {_kind_of(registry)}, not a sa_river.Workers registry; {name} "
        f"takes {_APP_ACCEPTS}"
    )


def _database_url_or_embedded(args: argparse.Namespace, *, migrate_given: bool = False) -> str:
    """The URL of ``worker`` and ``demo``: the given one, its river tables checked to be
    current (or, with ``migrate_given``, migrated to head: the demo's own tables); else the
    embedded PostgreSQL's, migrated to head, after a warning."""
    url = _given_database_url(args)
    if url and migrate_given:
        migrate.command_upgrade(url)
        return url
    if url:
        heads = migrate.command_current(url)
        if set(heads) != set(migrate.head_revisions()):
            raise CommandFailed(
                f"the river tables in {redact_url(url)} are missing or out of date "
                f"(at {_describe(heads)}): run python -m sa_river migrate up"
            )
        return url
    url = _embedded_database_url(args.command)
    migrate.command_upgrade(url)
    return url


def _embedded_database_url(command: str) -> str:
    """Start (or reuse) the embedded PostgreSQL and say so as a WARNING on stderr (through
    logging, so that it comes in the worker's ``--log-format``; logging is configured first).

    Loud on purpose: a worker that found no URL would otherwise wait on an empty database of its
    own, forever and without a word, while the application's jobs pile up elsewhere.
    """
    from sa_river.embedded import EMBEDDED_DATA_DIR_DEFAULT, embedded_database_url

    url = embedded_database_url()
    logger.warning(
        "no database URL given (--database-url, %s and %s are all unset): %s runs on an "
        "embedded PostgreSQL private to this directory, data in %s; to use your database, %s",
        *migrate.DATABASE_URL_ENVS,
        command,
        EMBEDDED_DATA_DIR_DEFAULT.resolve(),
        _NO_DATABASE_URL,
        extra={"event": "embedded_database"},
    )
    return url


def cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    from sa_river.logfmt import configure_logging
    from sa_river.worker import Worker

    _check_metrics_options(args)
    # Before the database is looked at, and in the supervisor before any child starts: a bad
    # combination of settings is one error, not N children failing at start-up.
    worker_config = _worker_config(args)
    if args.processes > 1:
        # The supervisor checks that --app is there; a factory is called by each child only.
        _find_app(args)
        configure_logging(args.log_level, args.log_format, log_jobs=args.log_jobs)
        return _run_supervisor(args, _database_url_or_embedded(args), out)
    registry = _load_workers(args)
    configure_logging(args.log_level, args.log_format, log_jobs=args.log_jobs)
    url = _database_url_or_embedded(args)
    worker = Worker(url, registry, config=worker_config)
    # Bound before the worker starts, so a port in use fails before any job is fetched.
    metrics = _start_metrics(args, worker) if args.metrics_port is not None else None
    try:
        print(f"worker {worker.client_id} running {registry.kinds()}; Ctrl-C to stop", file=out)
        if metrics is not None:
            print(f"metrics on {metrics.url}", file=out)
        out.flush()
        watch_supervisor(lambda: os.kill(os.getpid(), signal.SIGTERM))
        worker.run()
    finally:
        if metrics is not None:
            metrics.stop()
    return EXIT_OK


def _worker_config(args: argparse.Namespace) -> config.WorkerConfig:
    """The ``WorkerConfig`` of ``worker``'s options; a bad one is a :class:`CommandFailed`
    naming the options (or the environment variables they came from), not the fields, since
    those are what the user wrote."""
    settings: dict[str, Any] = {}
    for option in _WORKER_OPTIONS:
        value = getattr(args, option.dest)
        if option.field is not None and _given(value):
            settings[option.field] = option.to_config(value)
    try:
        return config.WorkerConfig(**settings)
    except ConfigError as exc:
        message = str(exc)
        # Longest first: "rescue_heartbeat_ttl" must not be rewritten through "heartbeat_...".
        for field in sorted(_FIELD_OPTIONS, key=len, reverse=True):
            name = _named(args, _FIELD_OPTIONS[field].dest)
            message = re.sub(rf"\b{field}\b", name, message)
        raise CommandFailed(message) from None


def _check_metrics_options(args: argparse.Namespace) -> None:
    """Fail early and in one line if ``--metrics-port`` cannot work."""
    if args.metrics_port is None:
        if args.metrics_host is not None:
            port = _OPTIONS_BY_DEST["metrics_port"]
            needs = port.flags[0]
            if _named(args, "metrics_host") == _OPTIONS_BY_DEST["metrics_host"].variable:
                needs = f"{port.variable} (or {port.flags[0]})"
            raise CommandFailed(f"{_named(args, 'metrics_host')} needs {needs}")
        return
    if args.metrics_host is None:
        args.metrics_host = METRICS_HOST_DEFAULT
    try:
        import sa_river.contrib.prometheus  # noqa: F401
    except ImportError as exc:
        raise CommandFailed(f"{_named(args, 'metrics_port')}: {exc}") from None
    last = args.metrics_port + args.processes - 1
    if args.metrics_port and last > 65535:
        raise CommandFailed(
            f"{_named(args, 'metrics_port')} {args.metrics_port} with "
            f"{_named(args, 'processes')} {args.processes} needs ports up to {last}, past 65535"
        )


def _start_metrics(args: argparse.Namespace, worker: Worker) -> MetricsServer:
    from sa_river.contrib.prometheus import start_metrics_server

    try:
        return start_metrics_server(args.metrics_port, args.metrics_host, worker=worker)
    except OSError as exc:
        raise CommandFailed(
            f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc}"
        ) from None


def _child_argv(args: argparse.Namespace, index: int) -> list[str]:
    """The ``worker`` arguments of supervised child ``index``, built from the effective
    options (command line, environment or default) by each one's ``to_child`` in
    :data:`_WORKER_OPTIONS`: the same options, except no ``--processes``, ``--id
    X-<index + 1>`` for ``--id X`` and ``--metrics-port PORT+index``. Each child's settings
    are its argv alone: :func:`_child_environment` blanks the variables it inherits.

    The database URL is not among them: it goes to the child in its environment
    (:func:`_run_supervisor`), since any user can read any process's argv with ``ps`` and the
    URL may hold a password.
    """
    argv = ["worker"]
    for option in _WORKER_OPTIONS:
        argv += option.to_child(option.flags[0], getattr(args, option.dest), index)
    return argv


def _child_environment(url: str) -> dict[str, str]:
    """What the supervisor adds to each child's (inherited) environment: the database URL, and
    every worker option's variable set empty (unset, for the child), so that no setting
    applies twice or differently: ``SA_RIVER_PROCESSES`` would make each child a supervisor,
    ``SA_RIVER_ID`` give them all one id, ``SA_RIVER_POLL_ONLY`` undo ``--no-poll-only``."""
    env = {option.variable: "" for option in _WORKER_OPTIONS}
    # What the child reads when it has no --database-url: the resolved URL, which may be the
    # embedded server's, or --database-url's when the environment holds another.
    env[migrate.DATABASE_URL_ENV] = url
    return env


def _run_supervisor(args: argparse.Namespace, url: str, out: TextIO) -> int:
    from functools import partial

    from sa_river.supervisor import Supervisor

    shutdown = (
        config.SHUTDOWN_TIMEOUT_DEFAULT if args.shutdown_timeout is None else args.shutdown_timeout
    )
    supervisor = Supervisor(
        partial(_child_argv, args),
        args.processes,
        stop_timeout=shutdown + 15.0,
        env=_child_environment(url),
    )
    print(
        f"supervisor {os.getpid()} running {args.processes} worker processes; Ctrl-C to stop",
        file=out,
    )
    out.flush()
    return supervisor.run()


def add_enqueue_parser(commands: argparse._SubParsersAction[CliParser]) -> None:
    """Register ``enqueue``."""
    parser = commands.add_parser(
        "enqueue",
        help="insert one job (for scripts and cron)",
        description="Insert one job and print its id and state. A worker that has a handler "
        "for --kind works it.",
    )
    _add_database_url(parser)
    parser.add_argument("--kind", required=True, help="the job kind, as registered in Workers")
    parser.add_argument("--args", default="{}", metavar="JSON", help="a JSON object (default {})")
    parser.add_argument("--queue", default=None, help="default: default")
    parser.add_argument(
        "--priority", type=int, default=None, help="1 (first) to 4 (last); default 1"
    )
    parser.add_argument("--max-attempts", type=int, default=None, metavar="N", help="default 25")
    parser.add_argument(
        "--scheduled-in",
        type=_seconds,
        default=None,
        metavar="S",
        help="run no sooner than S seconds from now",
    )
    parser.add_argument(
        "--tag", dest="tags", action="append", default=None, help="a tag; repeat for more"
    )
    parser.set_defaults(handler=cmd_enqueue)


def cmd_enqueue(args: argparse.Namespace, out: TextIO) -> int:
    import json
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import create_engine

    from sa_river.enqueue import insert
    from sa_river.options import InsertOpts

    try:
        data = json.loads(args.args)
    except ValueError as exc:
        raise CommandFailed(f"--args is not valid JSON: {exc}") from None
    scheduled_at = None
    if args.scheduled_in:
        scheduled_at = datetime.now(timezone.utc) + timedelta(seconds=args.scheduled_in)
    opts = InsertOpts(
        queue=args.queue,
        priority=args.priority,
        max_attempts=args.max_attempts,
        scheduled_at=scheduled_at,
        tags=args.tags,
    )
    engine = create_engine(_database_url(args), pool_size=1)
    try:
        result = insert(engine, (args.kind, data), opts)
    finally:
        engine.dispose()
    job = result.job
    note = " (unique duplicate)" if result.unique_skipped_as_duplicate else ""
    print(f"job {job.id} {job.state.value} in queue {job.queue}{note}", file=out)
    return EXIT_OK


def add_demo_parser(commands: argparse._SubParsersAction[CliParser]) -> None:
    """Register ``demo``."""
    parser = commands.add_parser(
        "demo",
        help="enqueue a batch of demo jobs and work them, with a progress bar",
        description="Enqueue demo jobs (sa_river.tools.demo) and run a worker until they "
        "are all finished. With no database URL an embedded PostgreSQL is used.",
    )
    _add_database_url(parser, embedded=True)
    parser.add_argument("-n", "--count", type=int, default=300, help="jobs to enqueue")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--timeout", type=_seconds, default=120.0, metavar="S")
    parser.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from sa_river.logfmt import configure_logging
    from sa_river.tools.demo import run_demo

    configure_logging("WARNING")
    # The demo is asked to run on this database: it creates River's tables there if needed.
    url = _database_url_or_embedded(args, migrate_given=True)
    finished = run_demo(
        url, count=args.count, concurrency=args.concurrency, timeout=args.timeout, out=out
    )
    return EXIT_OK if finished else EXIT_ERROR


def add_status_parser(commands: argparse._SubParsersAction[CliParser]) -> None:
    """Register ``status``."""
    parser = commands.add_parser(
        "status",
        help="print the current leader, live workers and job counts per queue",
        description="Print the current leader, the workers that heartbeated recently, and the "
        "number of jobs per queue and state. Read-only.",
    )
    _add_database_url(parser)
    parser.add_argument(
        "--alive-within",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="a worker counts as live if it heartbeated this recently (default 30)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    import json

    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from sa_river.queries.client import client_list_alive
    from sa_river.queries.job_admin import job_count_by_queue_and_state
    from sa_river.queries.leader import leader_get
    from sa_river.types import JobState

    engine = create_engine(_database_url(args), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            leader = leader_get(conn)
            clients = client_list_alive(conn, args.alive_within)
            counts = job_count_by_queue_and_state(conn)
    finally:
        engine.dispose()
    states = list(JobState)
    if args.json:
        document = {
            "leader": None
            if leader is None
            else {
                "leader_id": leader.leader_id,
                "elected_at": leader.elected_at.isoformat(),
                "expires_at": leader.expires_at.isoformat(),
            },
            "workers": [
                {
                    "id": c.id,
                    "hostname": c.hostname,
                    "pid": c.pid,
                    "queues": list(c.queues),
                    "heartbeat_at": c.heartbeat_at,
                }
                for c in clients
            ],
            "queues": {q: {s.value: n.get(s, 0) for s in states} for q, n in counts.items()},
        }
        print(json.dumps(document, default=str, indent=2), file=out)
        return EXIT_OK
    if leader is None:
        print("leader: none", file=out)
    else:
        print(
            f"leader: {leader.leader_id} (term {leader.elected_at.isoformat(timespec='seconds')},"
            f" expires {leader.expires_at.isoformat(timespec='seconds')})",
            file=out,
        )
    print(file=out)
    _table(
        out,
        ["worker", "host", "pid", "queues", "last heartbeat"],
        [
            [
                c.id,
                c.hostname,
                str(c.pid),
                ",".join(c.queues),
                c.heartbeat_at.isoformat(timespec="seconds"),
            ]
            for c in clients
        ],
    )
    print(file=out)
    _table(
        out,
        ["queue", *(s.value for s in states)],
        [[q, *(str(n.get(s, 0)) for s in states)] for q, n in sorted(counts.items())],
    )
    return EXIT_OK


def _table(out: TextIO, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, ["-" * w for w in widths], *rows]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)
    if not rows:
        print("(none)", file=out)


# --- bench ------------------------------------------------------------------------------------


def add_bench_parser(commands: argparse._SubParsersAction[CliParser]) -> None:
    """Register ``bench``."""
    from sa_river.tools.bench.report import WORKLOADS

    parser = commands.add_parser(
        "bench",
        help="benchmark enqueue, work and pickup latency beside a raw-SQL ceiling",
        description="Run each workload through sa_river and as a minimal raw psycopg loop on "
        "scratch databases of the server (created and dropped), and print one table with "
        "the ratio of each sa_river figure to its ceiling. With no database URL the embedded "
        "PostgreSQL is used. Progress goes to stderr.",
    )
    _add_database_url(parser, embedded=True)
    parser.add_argument("-n", type=_positive_int, default=20000, help="jobs per workload")
    parser.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="P",
        help="worker processes (and raw drainer processes) for burn-down and continuous",
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, default=100, metavar="C", help="slots per process"
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds of the continuous workload; latency inserts for S/2 seconds at 50/s",
    )
    parser.add_argument(
        "--retained",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="first fill N finalised rows, to show fetching stays index-backed at scale",
    )
    parser.add_argument(
        "--rounds", type=_positive_int, default=1, help="rounds per workload (the median wins)"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        metavar="LIST",
        help="comma-separated subset of: " + ", ".join(WORKLOADS),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    from sa_river.tools.bench.report import WORKLOADS, BenchOptions
    from sa_river.tools.bench.run import bench_main, default_server_url

    chosen = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown or not chosen:
        raise CommandFailed(
            f"unknown workload(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(WORKLOADS)
        )
    url = _given_database_url(args)
    if url is None:
        from sa_river.logfmt import configure_logging

        configure_logging("WARNING")  # for the warning: a run on it measures no server of yours
        url = _embedded_database_url(args.command)
    server_url, _ = default_server_url(url)
    options = BenchOptions(
        server_url=server_url,
        n=args.n,
        processes=args.processes,
        concurrency=args.concurrency,
        duration=args.duration,
        retained=args.retained,
        rounds=args.rounds,
        workloads=tuple(w for w in WORKLOADS if w in chosen),
    )
    return bench_main(options, out, sys.stderr, args.json)


# --- database URLs and error reporting --------------------------------------------------------


def _check_database_url(found: migrate.DatabaseUrlSource) -> str:
    """The URL found as the command line's engines use it
    (:func:`~sa_river.urls.command_line_url`), or :class:`CommandFailed` with its one-line
    reason, naming the variable it came from (``DATABASE_URL`` may be an application's URL the
    user never thought of as the queue's)."""
    try:
        return command_line_url(found.url)
    except DatabaseUrlError as exc:
        where = "" if found.source.startswith("-") else f"environment variable {found.source}: "
        raise CommandFailed(f"{where}{exc.reason}") from None


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
    if isinstance(exc, sqlalchemy.exc.ProgrammingError) and "does not exist" in str(exc.orig):
        return (
            f"the river tables in{where} are missing or out of date ({exc.orig}); "
            "run: python -m sa_river migrate up"
        )
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return f"database error on{where}: {exc.orig if exc.orig is not None else exc}"
    return str(exc)


_KNOWN_ERRORS = (
    CommandFailed,
    SaRiverError,
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
    except _EnvironmentValueError as exc:
        # The command line is fine: no usage line, just what is wrong with which variable.
        print(f"{exc.prog}: error: {_one_line(str(exc))}", file=err)
        return EXIT_USAGE
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args, out)
    except _KNOWN_ERRORS as exc:
        found = migrate.resolve_database_url(getattr(args, "database_url", None))
        url = None if found is None else found.url
        print(f"{PROG}: error: {_one_line(_error_message(exc, url))}", file=err)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
