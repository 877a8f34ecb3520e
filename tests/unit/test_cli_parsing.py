"""Argument parsing and the checks ``sa-river`` makes before it touches a database: no
database involved."""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sa_river import cli

WORKER_VARIABLES = [option.variable for option in cli._WORKER_OPTIONS]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker variable and no ``DATABASE_URL`` (the last place every command looks for its
    URL) from the machine's environment, and ``sys.path`` as it was after the test (``worker``
    puts its ``--app-dir`` first on it)."""
    for name in [*WORKER_VARIABLES, "DATABASE_URL"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))


def parse(*argv: str) -> dict[str, object]:
    args = cli.build_parser().parse_args(list(argv))
    return vars(args)


def test_migrate_up_defaults_to_heads_and_no_url() -> None:
    args = parse("migrate", "up")
    assert args["command"] == "migrate"
    assert args["migrate_command"] == "up"
    assert args["target"] == "heads"
    assert args["database_url"] is None  # resolved from SA_RIVER_DATABASE_URL at run time
    assert args["handler"] is cli.cmd_migrate_up


def test_migrate_up_takes_url_and_target() -> None:
    args = parse(
        "migrate", "up", "--database-url", "postgresql://h/db", "--target", "sa_river@head"
    )
    assert args["database_url"] == "postgresql://h/db"
    assert args["target"] == "sa_river@head"


def test_migrate_down_requires_an_explicit_target() -> None:
    with pytest.raises(cli._UsageError, match="--target"):
        parse("migrate", "down", "--database-url", "postgresql://h/db")


def test_migrate_down_accepts_base_and_relative_targets() -> None:
    assert parse("migrate", "down", "--target", "base")["target"] == "base"
    assert parse("migrate", "down", "--target=-1")["target"] == "-1"
    assert parse("migrate", "down", "--target", "base")["handler"] is cli.cmd_migrate_down


def test_migrate_current_takes_only_a_url() -> None:
    args = parse("migrate", "current", "--database-url", "postgresql://h/db")
    assert args["handler"] is cli.cmd_migrate_current
    assert "target" not in args


def test_migrate_sql_needs_no_database() -> None:
    args = parse("migrate", "sql", "--from", "sa_river_0004", "--target", "sa_river_0006")
    assert args["handler"] is cli.cmd_migrate_sql
    assert args["start"] == "sa_river_0004"
    assert args["target"] == "sa_river_0006"
    assert "database_url" not in args
    assert parse("migrate", "sql")["start"] is None


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["migrate"],
        ["migrate", "sideways"],
        ["nope"],
        ["migrate", "up", "--bogus"],
        ["migrate", "down"],
    ],
)
def test_usage_errors_exit_2_with_usage_on_stderr(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv, stdout=out, stderr=err) == cli.EXIT_USAGE
    assert out.getvalue() == ""
    assert err.getvalue().startswith("usage: sa-river")
    assert "error:" in err.getvalue()


def test_help_exits_0_on_the_given_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["migrate", "--help"], stdout=out, stderr=err) == cli.EXIT_OK
    assert "up" in out.getvalue()
    assert "sql" in out.getvalue()
    assert err.getvalue() == ""


def test_missing_database_url_is_an_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SA_RIVER_DATABASE_URL", raising=False)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["migrate", "current"], stdout=out, stderr=err) == cli.EXIT_ERROR
    assert err.getvalue() == (
        "sa-river: error: no database URL: pass --database-url or set SA_RIVER_DATABASE_URL "
        "(or DATABASE_URL)\n"
    )


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql+psycopg://bob:s3cret@db:5432/app", "postgresql+psycopg://bob:***@db:5432/app"),
        ("postgresql://bob@db/app", "postgresql://bob@db/app"),
        ("not a url:s3cret@db", "not a url:***@db"),
    ],
)
def test_redact_url_hides_the_password(url: str, redacted: str) -> None:
    assert cli.redact_url(url) == redacted


def test_malformed_url_is_one_line_naming_the_url_without_password() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["migrate", "current", "--database-url", "nonsense:s3cret@x"], stdout=out, stderr=err
    )
    assert code == cli.EXIT_ERROR
    message = err.getvalue()
    assert message.count("\n") == 1
    assert message.startswith("sa-river: error: malformed database URL 'nonsense:***@x'")
    assert "s3cret" not in message


def test_version_flag_prints_the_package_version() -> None:
    import io
    from importlib.metadata import version

    from sa_river.cli import main

    out = io.StringIO()
    assert main(["--version"], stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue().strip() == f"sa_river {version('sa_river')}"


# --- values the command line refuses before doing anything ---------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e20", "must be at most 1000000000 (about 31 years), got '1e20'"),
        ("nan", "expected a finite number of seconds, got 'nan'"),
        ("inf", "expected a finite number of seconds, got 'inf'"),
        ("-inf", "expected a finite number of seconds, got '-inf'"),
        ("-5", "must not be negative, got '-5'"),
        ("soon", "expected seconds, got 'soon'"),
    ],
)
def test_scheduled_in_out_of_range_is_a_usage_error_not_a_traceback(
    value: str, reason: str
) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = ["enqueue", "--kind", "k", f"--scheduled-in={value}"]
    assert cli.main(argv, stdout=out, stderr=err) == cli.EXIT_USAGE
    assert out.getvalue() == ""
    assert err.getvalue().startswith("usage: sa-river enqueue")
    assert err.getvalue().splitlines()[-1] == (
        f"sa-river enqueue: error: argument --scheduled-in: {reason}"
    )


_URL_FORM = "postgresql+psycopg://user:password@host:5432/dbname"

# Each password is SECRET plus, after an '@' or ':' that was not percent-encoded, PART2: neither
# half may appear in the error.
BAD_URLS = [
    pytest.param(
        "postgresql://bob:SECRET@db:abc/app",
        "malformed database URL 'postgresql://bob:***@db:abc/app': the port is not a number",
        id="port-not-a-number",
    ),
    pytest.param(
        "postgresql+nosuchdriver://bob:SECRET@db/app",
        "unknown driver 'nosuchdriver' in database URL "
        f"'postgresql+nosuchdriver://bob:***@db/app': use {_URL_FORM}",
        id="unknown-driver",
    ),
    pytest.param(
        "postgresql+psycopg://bob:SECRET@PART2@db/app",
        "malformed database URL 'postgresql+psycopg://bob:***@db/app': it has more than one "
        "'@'; write an '@' in the user name or password as %40",
        id="unescaped-at-in-password",
    ),
    pytest.param(
        "postgresql+psycopg://bob:SECRET@PART2:x@db:5432/app",
        "malformed database URL 'postgresql+psycopg://bob:***@db:5432/app': it has more than "
        "one '@'; write an '@' in the user name or password as %40",
        id="unescaped-at-and-colon-in-password",
    ),
    pytest.param(
        "sqlite:///x.db",
        f"database URL 'sqlite:///x.db' is not a PostgreSQL one: sa_river needs {_URL_FORM}",
        id="sqlite",
    ),
    pytest.param(
        "mysql://bob:SECRET@db/app",
        "database URL 'mysql://bob:***@db/app' is not a PostgreSQL one: "
        f"sa_river needs {_URL_FORM}",
        id="mysql",
    ),
    pytest.param(
        "postgresql+psycopg_async://bob:SECRET@db/app",
        "database URL 'postgresql+psycopg_async://bob:***@db/app' names the asyncio driver "
        f"'psycopg_async': the command line needs a synchronous one, as in {_URL_FORM}",
        id="async-driver",
    ),
    pytest.param(
        "bob:SECRET@db",
        f"malformed database URL 'bob:***@db': expected {_URL_FORM}",
        id="no-scheme",
    ),
]

# Every command that takes a database URL.
URL_COMMANDS = [
    pytest.param(["migrate", "up"], id="migrate-up"),
    pytest.param(["migrate", "down", "--target", "base"], id="migrate-down"),
    pytest.param(["migrate", "current"], id="migrate-current"),
    pytest.param(["status"], id="status"),
    pytest.param(["enqueue", "--kind", "k"], id="enqueue"),
    pytest.param(["worker", "--app", "sa_river.tools.demo:workers"], id="worker"),
    pytest.param(["demo"], id="demo"),
    pytest.param(["bench"], id="bench"),
]


@pytest.mark.parametrize("source", ["--database-url", "SA_RIVER_DATABASE_URL", "DATABASE_URL"])
@pytest.mark.parametrize("command", URL_COMMANDS)
@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_database_url_is_one_line_hiding_the_password_and_creating_nothing(
    command: list[str],
    url: str,
    message: str,
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From wherever it came, a URL the command line cannot use is refused before anything
    connects; one found in a variable is named by it (``DATABASE_URL`` may well hold an
    application's URL that the user never meant for the queue)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SA_RIVER_DATABASE_URL", raising=False)
    if source == "--database-url":
        argv, where = [*command, "--database-url", url], ""
    else:
        monkeypatch.setenv(source, url)
        argv, where = command, f"environment variable {source}: "
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv, stdout=out, stderr=err) == cli.EXIT_ERROR
    assert err.getvalue() == f"sa-river: error: {where}{message}\n"
    assert "SECRET" not in err.getvalue() + out.getvalue()
    assert "PART2" not in err.getvalue() + out.getvalue()
    assert list(tmp_path.iterdir()) == []  # no sqlite file, no embedded server's data


def test_postgres_scheme_is_accepted_as_postgresql_with_psycopg() -> None:
    # Heroku and libpq spell it postgres://; SQLAlchemy alone would not load a dialect for it,
    # and without a driver SQLAlchemy 2.0 would pick psycopg2, which sa_river does not install.
    def checked(url: str) -> str | None:
        return cli._given_database_url(argparse.Namespace(database_url=url))

    assert checked("postgres://bob:pw@db/app") == "postgresql+psycopg://bob:pw@db/app"
    assert checked("postgresql://bob:pw@db/app") == "postgresql+psycopg://bob:pw@db/app"
    assert (
        checked("postgresql+psycopg://bob:pw@db:5433/app?sslmode=require")
        == "postgresql+psycopg://bob:pw@db:5433/app?sslmode=require"
    )


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://bob:SECRET@PART2@db/app", "postgresql://bob:***@db/app"),
        ("postgresql://bob:SECRET@PART2:x@db:abc/app", "postgresql://bob:***@db:abc/app"),
        ("postgresql://bob:SECRET@db:abc/app", "postgresql://bob:***@db:abc/app"),
        ("postgresql://bob@db/app?password=SECRET&sslmode=require", None),
        ("postgresql://bob@db:abc/app?sslmode=require&password=SECRET", None),
    ],
)
def test_redact_url_hides_passwords_sqlalchemy_would_misparse(
    url: str, redacted: str | None
) -> None:
    shown = cli.redact_url(url)
    assert "SECRET" not in shown
    assert "PART2" not in shown
    if redacted is not None:
        assert shown == redacted


# --- worker settings ------------------------------------------------------------------------------

WORKER = ["worker", "--app", "sa_river.tools.demo:workers"]


def test_worker_flags_reach_the_worker_config() -> None:
    from datetime import timedelta

    args = cli.build_parser().parse_args(
        [
            *WORKER,
            "--queue",
            "mail=3",
            "--id",
            "w1",
            "--poll-only",
            "--poll-interval",
            "2",
            "--shutdown-timeout",
            "7",
            "--job-timeout",
            "9",
            "--heartbeat-interval",
            "10",
            "--rescue-after",
            "45",
            "--rescuer-interval",
            "15",
            "--rescue-stuck-after",
            "600",
            "--completed-retention",
            "3600",
            "--cancelled-retention",
            "0",
            "--discarded-retention",
            "2592000",
        ]
    )
    config = cli._worker_config(args)
    assert dict(config.queues) == {"mail": 3}
    assert config.client_id == "w1"
    assert config.poll_only is True
    assert config.fetch_poll_interval == 2
    assert config.shutdown_timeout == 7
    assert config.job_timeout == timedelta(seconds=9)
    assert config.heartbeat_interval == 10
    assert config.rescue_heartbeat_ttl == 45
    assert config.rescuer_interval == 15
    assert config.rescue_stuck_after == 600
    assert config.completed_retention == 3600
    assert config.cancelled_retention == 0  # kept forever
    assert config.discarded_retention == 2592000


def test_worker_without_flags_gets_the_worker_config_defaults() -> None:
    from sa_river.config import WorkerConfig

    config = cli._worker_config(cli.build_parser().parse_args(WORKER))
    defaults = WorkerConfig()
    for field in (
        "queues",
        "poll_only",
        "fetch_poll_interval",
        "shutdown_timeout",
        "job_timeout",
        "heartbeat_interval",
        "rescue_heartbeat_ttl",
        "rescuer_interval",
        "rescue_stuck_after",
        "completed_retention",
        "cancelled_retention",
        "discarded_retention",
    ):
        assert getattr(config, field) == getattr(defaults, field), field


@pytest.mark.parametrize(
    ("flags", "start"),
    [
        (
            ["--heartbeat-interval", "20"],
            "sa-river: error: --rescue-after: must be at least 3 x --heartbeat-interval (60s), "
            "got 30s",
        ),
        (
            ["--heartbeat-interval", "5", "--rescue-after", "10"],
            "sa-river: error: --rescue-after: must be at least 3 x --heartbeat-interval (15s), "
            "got 10s",
        ),
        (["--rescuer-interval", "0"], "sa-river: error: --rescuer-interval: must be positive"),
        (["--heartbeat-interval", "0"], "sa-river: error: --heartbeat-interval: must be positive"),
        (["--poll-interval", "0"], "sa-river: error: --poll-interval: must be positive"),
        (["--queue", "mail=0"], "sa-river: error: --queue: limit of queue 'mail'"),
    ],
)
def test_bad_worker_setting_is_one_line_naming_the_flag(
    flags: list[str], start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SA_RIVER_DATABASE_URL", raising=False)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main([*WORKER, *flags], stdout=out, stderr=err) == cli.EXIT_ERROR
    assert err.getvalue().startswith(start)
    assert err.getvalue().count("\n") == 1
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    "flag",
    [
        "--heartbeat-interval",
        "--rescue-after",
        "--rescuer-interval",
        "--rescue-stuck-after",
        "--completed-retention",
        "--cancelled-retention",
        "--discarded-retention",
    ],
)
@pytest.mark.parametrize(
    ("value", "reason"),
    [("-1", "must not be negative, got '-1'"), ("nan", "expected a finite number")],
)
def test_malformed_worker_seconds_are_usage_errors_naming_the_flag(
    flag: str, value: str, reason: str
) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main([*WORKER, f"{flag}={value}"], stdout=out, stderr=err) == cli.EXIT_USAGE
    assert (
        err.getvalue()
        .splitlines()[-1]
        .startswith(f"sa-river worker: error: argument {flag}: {reason}")
    )


def test_supervised_children_get_the_worker_flags_but_not_the_url() -> None:
    argv = [
        *WORKER,
        "--database-url",
        "postgresql+psycopg://bob:SECRET@db/app",
        "--processes",
        "2",
        "--id",
        "w",
        "--heartbeat-interval",
        "10",
        "--rescue-after",
        "45",
        "--rescuer-interval",
        "15",
        "--rescue-stuck-after",
        "600",
        "--completed-retention",
        "3600",
        "--cancelled-retention",
        "0",
        "--discarded-retention",
        "60",
        "--job-timeout",
        "0",
        "--metrics-port",
        "9100",
        "--metrics-addr",
        "127.0.0.1",
    ]
    args = cli.build_parser().parse_args(argv)
    cli._check_metrics_options(args)
    child = cli._child_argv(args, 1)
    assert "--database-url" not in child
    assert not any("SECRET" in word for word in child)
    assert child[child.index("--metrics-port") + 1] == "9101"
    assert child[child.index("--metrics-host") + 1] == "127.0.0.1"
    # The child's own options build the same config as the supervisor's.
    parent_config = cli._worker_config(args)
    child_config = cli._worker_config(cli.build_parser().parse_args(child))
    assert child_config.client_id == "w-2"
    assert child_config == dataclasses.replace(parent_config, client_id="w-2")


@pytest.mark.parametrize("option", ["--metrics-host", "--metrics-addr"])
def test_metrics_host_and_its_old_name_addr_set_the_same_value(option: str) -> None:
    args = cli.build_parser().parse_args([*WORKER, "--metrics-port", "0", option, "::1"])
    assert args.metrics_host == "::1"


@pytest.mark.parametrize("option", ["--metrics-host", "--metrics-addr"])
def test_metrics_host_without_a_port_names_the_option_given(
    option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SA_RIVER_DATABASE_URL", raising=False)
    err = io.StringIO()
    argv = [*WORKER, option, "127.0.0.1"]
    assert cli.main(argv, stdout=io.StringIO(), stderr=err) == cli.EXIT_ERROR
    assert err.getvalue() == f"sa-river: error: {option} needs --metrics-port\n"


def test_metrics_host_defaults_to_every_interface() -> None:
    args = cli.build_parser().parse_args([*WORKER, "--metrics-port", "0"])
    cli._check_metrics_options(args)
    assert args.metrics_host == "0.0.0.0"


def _worker_parser() -> cli.CliParser:
    commands = cli.CliParser(prog="sa-river").add_subparsers(dest="command")
    cli.add_worker_parser(commands)
    parser = commands.choices["worker"]
    assert isinstance(parser, cli.CliParser)
    return parser


def test_every_worker_option_but_the_url_is_in_the_one_table() -> None:
    # A flag added to the worker parser any other way would not reach supervised children.
    defined = {
        flag
        for action in _worker_parser()._actions
        for flag in action.option_strings
        if action.dest not in ("help", "database_url")
    }
    # The switches are BooleanOptionalActions: argparse adds their --no-... itself.
    table = {flag for option in cli._WORKER_OPTIONS for flag in option.flags}
    assert defined == table | {"--no-poll-only", "--no-log-jobs"}


# Every worker option, each with a value other than its default.
EVERY_WORKER_OPTION = {
    "--app": WORKER[1:],
    "--app-dir": ["--app-dir", "/tmp"],
    "--queue": ["--queue", "mail=3", "--queue", "default=7"],
    "--id": ["--id", "w"],
    "--poll-only": ["--poll-only"],
    "--job-timeout": ["--job-timeout", "0.25"],
    "--poll-interval": ["--poll-interval", "2.5"],
    "--shutdown-timeout": ["--shutdown-timeout", "7"],
    "--heartbeat-interval": ["--heartbeat-interval", "10"],
    "--rescue-after": ["--rescue-after", "45"],
    "--rescuer-interval": ["--rescuer-interval", "15"],
    "--rescue-stuck-after": ["--rescue-stuck-after", "600"],
    "--completed-retention": ["--completed-retention", "3600"],
    "--cancelled-retention": ["--cancelled-retention", "0"],
    "--discarded-retention": ["--discarded-retention", "1e-05"],
    "--log-level": ["--log-level", "debug"],
    "--log-format": ["--log-format", "JSON"],
    "--log-jobs": ["--log-jobs"],
    "--processes": ["--processes", "3"],
    "--metrics-port": ["--metrics-port", "9100"],
    "--metrics-host": ["--metrics-addr", "::1"],
}


def test_a_supervised_child_parses_back_every_option_it_is_given() -> None:
    assert set(EVERY_WORKER_OPTION) == {option.flags[0] for option in cli._WORKER_OPTIONS}
    argv = ["worker", *(word for words in EVERY_WORKER_OPTION.values() for word in words)]
    args = cli.build_parser().parse_args(argv)
    cli._check_metrics_options(args)
    for index in range(3):
        child = vars(cli.build_parser().parse_args(cli._child_argv(args, index)))
        for option in cli._WORKER_OPTIONS:
            expected = {
                "--id": f"w-{index + 1}",
                "--processes": 1,
                "--metrics-port": 9100 + index,
            }.get(option.flags[0], getattr(args, option.dest))
            assert child[option.dest] == expected, option.flags[0]


def _settings(args: argparse.Namespace) -> dict[str, object]:
    """The effective worker options of a parsed namespace (not where they came from)."""
    return {option.dest: getattr(args, option.dest) for option in cli._WORKER_OPTIONS}


def test_a_supervised_child_of_defaults_gets_defaults() -> None:
    args = cli.build_parser().parse_args(WORKER)
    cli._check_metrics_options(args)
    child = cli._child_argv(args, 0)
    assert child == [
        "worker",
        "--app",
        WORKER[2],
        "--app-dir",
        ".",
        "--log-level",
        "INFO",
        "--log-format",
        "text",
    ]
    assert _settings(cli.build_parser().parse_args(child)) == _settings(args)


def test_metrics_port_0_is_0_in_every_child() -> None:
    args = cli.build_parser().parse_args([*WORKER, "--processes", "2", "--metrics-port", "0"])
    cli._check_metrics_options(args)
    child = cli._child_argv(args, 1)
    assert child[child.index("--metrics-port") + 1] == "0"


def test_an_empty_id_is_a_random_one_in_the_worker_and_its_children() -> None:
    args = cli.build_parser().parse_args([*WORKER, "--id", ""])
    assert "--id" not in cli._child_argv(args, 0)
    assert cli._worker_config(args).client_id != ""


# --- worker settings from the environment -----------------------------------------------------


def _option(flag: str) -> cli._WorkerOption:
    return next(option for option in cli._WORKER_OPTIONS if option.flags[0] == flag)


def test_every_worker_option_has_its_own_variable_named_after_it() -> None:
    variables = {option.flags[0]: option.variable for option in cli._WORKER_OPTIONS}
    assert len(set(variables.values())) == len(variables)
    for flag, variable in variables.items():
        expected = "SA_RIVER_" + flag.removeprefix("--").replace("-", "_").upper()
        assert variable == {"--queue": "SA_RIVER_QUEUES"}.get(flag, expected), flag
    assert variables["--id"] == "SA_RIVER_ID"
    assert variables["--app-dir"] == "SA_RIVER_APP_DIR"
    assert variables["--metrics-host"] == "SA_RIVER_METRICS_HOST"  # not the old name's
    # None of them is one the project already uses for something else.
    assert not {"SA_RIVER_DATABASE_URL", "SA_RIVER_SUPERVISOR_PID"} & set(variables.values())


def test_worker_help_lists_every_variable() -> None:
    out = io.StringIO()
    assert cli.main(["worker", "--help"], stdout=out, stderr=io.StringIO()) == cli.EXIT_OK
    text = " ".join(out.getvalue().split())  # argparse wraps lines anywhere between words
    for variable in WORKER_VARIABLES:
        assert f"[env: {variable}]" in text, variable
    assert "[env: SA_RIVER_DATABASE_URL, then DATABASE_URL]" in text
    assert "SA_RIVER_QUEUES=default=100,mail=5" in text
    assert "--no-poll-only" in text


# Every option: (command-line words, their value, the variable's text, its value). The two
# values differ from each other and from the default.
PRECEDENCE = {
    "--app": (["--app", "flag.mod:workers"], "flag.mod:workers", "env.mod:w", "env.mod:w"),
    "--app-dir": (["--app-dir", "/srv/a"], "/srv/a", "/srv/b", "/srv/b"),
    "--queue": (
        ["--queue", "a=1", "--queue", "b=2"],
        [("a", 1), ("b", 2)],
        "default=100, mail=5,",
        [("default", 100), ("mail", 5)],
    ),
    "--id": (["--id", "flag-id"], "flag-id", "env-id", "env-id"),
    "--poll-only": (["--no-poll-only"], False, "yes", True),
    "--job-timeout": (["--job-timeout", "5"], 5.0, "0", 0.0),
    "--poll-interval": (["--poll-interval", "2"], 2.0, "0.25", 0.25),
    "--shutdown-timeout": (["--shutdown-timeout", "7"], 7.0, "9", 9.0),
    "--heartbeat-interval": (["--heartbeat-interval", "2"], 2.0, "3", 3.0),
    "--rescue-after": (["--rescue-after", "45"], 45.0, "60", 60.0),
    "--rescuer-interval": (["--rescuer-interval", "15"], 15.0, "20", 20.0),
    "--rescue-stuck-after": (["--rescue-stuck-after", "600"], 600.0, "700", 700.0),
    "--completed-retention": (["--completed-retention", "3600"], 3600.0, "0", 0.0),
    "--cancelled-retention": (["--cancelled-retention", "60"], 60.0, "1e3", 1000.0),
    "--discarded-retention": (["--discarded-retention", "1"], 1.0, "2", 2.0),
    "--log-level": (["--log-level", "warning"], "WARNING", "debug", "DEBUG"),
    "--log-format": (["--log-format", "Text"], "text", "JSON", "json"),
    "--log-jobs": (["--no-log-jobs"], False, "on", True),
    "--processes": (["--processes", "3"], 3, "4", 4),
    "--metrics-port": (["--metrics-port", "9100"], 9100, "9200", 9200),
    "--metrics-host": (["--metrics-addr", "::1"], "::1", "127.0.0.1", "127.0.0.1"),
}


TWO_VALUED = {"--poll-only", "--log-format", "--log-jobs"}


def test_the_precedence_table_covers_every_option() -> None:
    assert set(PRECEDENCE) == {option.flags[0] for option in cli._WORKER_OPTIONS}
    for flag, (_, flag_value, _, env_value) in PRECEDENCE.items():
        assert flag_value != env_value, flag
        assert _option(flag).default != env_value, flag
        # An option of two values can only win over its variable by giving the default.
        assert _option(flag).default != flag_value or flag in TWO_VALUED, flag


def _parse_worker(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str]
) -> dict[str, Any]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if "--app" not in argv and "SA_RIVER_APP" not in env:
        argv = [*argv, "--app", "m:w"]
    return vars(cli.build_parser().parse_args(["worker", *argv]))


@pytest.mark.parametrize("flag", PRECEDENCE)
def test_a_variable_sets_its_option(flag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    option = _option(flag)
    _, _, text, value = PRECEDENCE[flag]
    args = _parse_worker(monkeypatch, [], {option.variable: text})
    assert args[option.dest] == value
    assert args["given_as"][option.dest] == option.variable


@pytest.mark.parametrize("flag", PRECEDENCE)
def test_the_command_line_wins_over_the_variable(
    flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    option = _option(flag)
    words, value, text, _ = PRECEDENCE[flag]
    args = _parse_worker(monkeypatch, words, {option.variable: text})
    assert args[option.dest] == value
    assert args["given_as"][option.dest] == words[0]


@pytest.mark.parametrize("flag", PRECEDENCE)
@pytest.mark.parametrize("text", [None, "", "  "], ids=["unset", "empty", "blank"])
def test_without_either_the_option_has_its_default(
    flag: str, text: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    option = _option(flag)
    env = {} if text is None else {option.variable: text}
    if flag == "--app":  # required: only where it comes from can vary
        args = _parse_worker(monkeypatch, ["--app", "m:w"], env)
        assert args["app"] == "m:w"
        return
    args = _parse_worker(monkeypatch, [], env)
    assert args[option.dest] == option.default
    assert option.dest not in args["given_as"]


def test_a_bad_variable_is_not_read_when_its_option_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = _parse_worker(monkeypatch, ["--poll-interval", "2"], {"SA_RIVER_POLL_INTERVAL": "x"})
    assert args["poll_interval"] == 2.0


def test_variables_alone_build_the_same_config_as_the_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = [word for words, *_ in PRECEDENCE.values() for word in words]
    from_flags = cli.build_parser().parse_args(["worker", *flags])
    for flag, (words, _, _, _) in PRECEDENCE.items():
        # The variable's text that means what the flag's words mean.
        text = {
            "--queue": "a=1,b=2",
            "--poll-only": "false",
            "--log-jobs": "off",
            "--metrics-host": "::1",
        }.get(flag, words[-1])
        monkeypatch.setenv(_option(flag).variable, text)
    from_env = cli.build_parser().parse_args(["worker"])
    assert _settings(from_env) == _settings(from_flags)
    assert cli._worker_config(from_env) == cli._worker_config(from_flags)
    assert set(from_env.given_as.values()) == set(WORKER_VARIABLES)


BAD_VARIABLES = [
    ("SA_RIVER_POLL_INTERVAL", "soon", "expected seconds, got 'soon'"),
    ("SA_RIVER_RESCUE_AFTER", "-1", "must not be negative, got '-1'"),
    ("SA_RIVER_COMPLETED_RETENTION", "nan", "expected a finite number of seconds, got 'nan'"),
    ("SA_RIVER_JOB_TIMEOUT", "1e20", "must be at most 1000000000 (about 31 years), got '1e20'"),
    ("SA_RIVER_QUEUES", "default=100,mail", "expected NAME=LIMIT, got 'mail'"),
    ("SA_RIVER_QUEUES", "mail=five", "limit of 'mail' must be an integer"),
    ("SA_RIVER_QUEUES", ", ,", "expected NAME=LIMIT[,NAME=LIMIT...], got ', ,'"),
    ("SA_RIVER_PROCESSES", "0", "must be at least 1, got 0"),
    ("SA_RIVER_PROCESSES", "two", "expected an integer, got 'two'"),
    ("SA_RIVER_METRICS_PORT", "70000", "must be between 0 and 65535, got 70000"),
    ("SA_RIVER_POLL_ONLY", "maybe", "expected one of 1/true/yes/on or 0/false/no/off, got 'maybe'"),
    (
        "SA_RIVER_LOG_LEVEL",
        "verbose",
        "expected one of DEBUG, INFO, WARNING (in any case), got 'verbose'",
    ),
    ("SA_RIVER_LOG_FORMAT", "xml", "expected one of text, json (in any case), got 'xml'"),
]


@pytest.mark.parametrize(("variable", "value", "reason"), BAD_VARIABLES)
def test_a_bad_variable_is_one_line_naming_the_variable_not_the_flag(
    variable: str, value: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(WORKER, stdout=out, stderr=err) == cli.EXIT_USAGE
    assert err.getvalue() == (
        f"sa-river worker: error: environment variable {variable}: {reason}\n"
    )
    flag = next(o.flags[0] for o in cli._WORKER_OPTIONS if o.variable == variable)
    assert flag not in err.getvalue()
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        (
            {"SA_RIVER_HEARTBEAT_INTERVAL": "20"},
            [],
            "--rescue-after: must be at least 3 x SA_RIVER_HEARTBEAT_INTERVAL (60s), got 30s",
        ),
        (
            {"SA_RIVER_HEARTBEAT_INTERVAL": "5", "SA_RIVER_RESCUE_AFTER": "10"},
            [],
            "SA_RIVER_RESCUE_AFTER: must be at least 3 x SA_RIVER_HEARTBEAT_INTERVAL (15s), "
            "got 10s",
        ),
        (
            {"SA_RIVER_RESCUE_AFTER": "10"},
            ["--heartbeat-interval", "5"],
            "SA_RIVER_RESCUE_AFTER: must be at least 3 x --heartbeat-interval (15s), got 10s",
        ),
        ({"SA_RIVER_POLL_INTERVAL": "0"}, [], "SA_RIVER_POLL_INTERVAL: must be positive"),
        ({"SA_RIVER_QUEUES": "mail=0"}, [], "SA_RIVER_QUEUES: limit of queue 'mail'"),
        (
            {"SA_RIVER_METRICS_HOST": "127.0.0.1"},
            [],
            "SA_RIVER_METRICS_HOST needs SA_RIVER_METRICS_PORT (or --metrics-port)",
        ),
        (
            {"SA_RIVER_METRICS_PORT": "65535", "SA_RIVER_PROCESSES": "2"},
            [],
            "SA_RIVER_METRICS_PORT 65535 with SA_RIVER_PROCESSES 2 needs ports up to 65536",
        ),
        ({"SA_RIVER_APP_DIR": "/no/such/dir"}, [], "SA_RIVER_APP_DIR: '/no/such/dir' is not a"),
    ],
)
def test_contradicting_settings_name_the_variables_they_came_from(
    env: dict[str, str], flags: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("prometheus_client")
    monkeypatch.delenv("SA_RIVER_DATABASE_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main([*WORKER, *flags], stdout=out, stderr=err) == cli.EXIT_ERROR
    assert err.getvalue().startswith(f"sa-river: error: {message}"), err.getvalue()
    assert err.getvalue().count("\n") == 1


def test_app_only_from_the_environment_and_missing_app_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    err = io.StringIO()
    assert cli.main(["worker"], stdout=io.StringIO(), stderr=err) == cli.EXIT_USAGE
    assert err.getvalue().startswith("usage: sa-river worker")
    assert err.getvalue().splitlines()[-1] == (
        "sa-river worker: error: the following arguments are required: --app "
        "(or the environment variable SA_RIVER_APP)"
    )
    monkeypatch.setenv("SA_RIVER_APP", "sa_river.tools.demo:workers")
    assert cli.build_parser().parse_args(["worker"]).app == "sa_river.tools.demo:workers"


@pytest.mark.parametrize("text", ["info", "INFO", "Info", " iNfO "])
def test_log_level_takes_any_case(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.build_parser().parse_args([*WORKER, "--log-level", text]).log_level == "INFO"
    monkeypatch.setenv("SA_RIVER_LOG_LEVEL", text)
    assert cli.build_parser().parse_args(WORKER).log_level == "INFO"


def test_a_bad_log_level_on_the_command_line_is_a_usage_error_naming_the_flag() -> None:
    err = io.StringIO()
    argv = [*WORKER, "--log-level", "loud"]
    assert cli.main(argv, stdout=io.StringIO(), stderr=err) == cli.EXIT_USAGE
    assert err.getvalue().splitlines()[-1] == (
        "sa-river worker: error: argument --log-level: expected one of DEBUG, INFO, WARNING "
        "(in any case), got 'loud'"
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [(t, True) for t in ("1", "true", "TRUE", "yes", "On")]
    + [(t, False) for t in ("0", "false", "No", "off")],
)
def test_poll_only_variable_spellings(
    text: str, value: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SA_RIVER_POLL_ONLY", text)
    assert cli.build_parser().parse_args(WORKER).poll_only is value
    # Either way the command line wins, both ways.
    assert cli.build_parser().parse_args([*WORKER, "--poll-only"]).poll_only is True
    assert cli.build_parser().parse_args([*WORKER, "--no-poll-only"]).poll_only is False


def test_queues_on_the_command_line_replace_the_variables_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SA_RIVER_QUEUES", "default=100,mail=5")
    assert dict(cli._worker_config(cli.build_parser().parse_args(WORKER)).queues) == {
        "default": 100,
        "mail": 5,
    }
    args = cli.build_parser().parse_args([*WORKER, "--queue", "reports=2"])
    assert dict(cli._worker_config(args).queues) == {"reports": 2}


# --- supervised children and the environment ------------------------------------------------------


def _child_settings(
    args: argparse.Namespace, index: int, url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, object]:
    """What child ``index`` parses: its argv, in the environment the supervisor gives it
    (this one's, plus :func:`cli._child_environment`)."""
    with monkeypatch.context() as m:
        for name, value in cli._child_environment(url).items():
            m.setenv(name, value)
        return _settings(cli.build_parser().parse_args(cli._child_argv(args, index)))


def test_children_of_a_supervisor_configured_by_the_environment_get_the_same_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for flag, (_, _, text, _) in PRECEDENCE.items():
        monkeypatch.setenv(_option(flag).variable, text)
    args = cli.build_parser().parse_args(["worker"])
    cli._check_metrics_options(args)
    assert args.processes == 4
    for index in range(4):
        child = _child_settings(args, index, "postgresql://db/app", monkeypatch)
        expected = dict(
            _settings(args), processes=1, client_id=f"env-id-{index + 1}", metrics_port=9200 + index
        )
        assert child == expected
        # The children are runners, not supervisors of their own, and differ in their ids.
        assert child["processes"] == 1


def test_the_command_line_wins_in_the_children_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SA_RIVER_POLL_ONLY", "1")
    monkeypatch.setenv("SA_RIVER_ID", "shared")
    monkeypatch.setenv("SA_RIVER_LOG_LEVEL", "DEBUG")
    argv = [*WORKER, "--processes", "2", "--no-poll-only", "--id", "", "--log-level", "warning"]
    args = cli.build_parser().parse_args(argv)
    for index in range(2):
        child = _child_settings(args, index, "postgresql://db/app", monkeypatch)
        assert child["poll_only"] is False
        assert child["client_id"] is None  # a random id each, not "shared" for both
        assert child["log_level"] == "WARNING"


def test_children_get_the_url_and_every_worker_variable_blanked() -> None:
    env = cli._child_environment("postgresql+psycopg://bob:SECRET@db/app")
    assert env.pop("SA_RIVER_DATABASE_URL") == "postgresql+psycopg://bob:SECRET@db/app"
    assert env == dict.fromkeys(WORKER_VARIABLES, "")


# --- --app: a registry or a factory, imported from --app-dir --------------------------------------

APP_MODULE = """
import sa_river

calls = []


def _build():
    workers = sa_river.Workers()

    @workers.handler("hello")
    def hello(job):
        return None

    return workers


workers = _build()


def create_workers():
    calls.append(1)
    return _build()


def needs_config(config, *, debug=False):
    return _build()


def returns_dict():
    return {"hello": None}


async def async_factory():
    return _build()


settings = {"workers": 1}
count = 3
"""


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module, in its own directory ``tmp_path / "app"`` (not on ``sys.path``), with a
    registry, a factory and things that are neither; its name is unique to the test."""
    name = f"cli_app_{tmp_path.name.replace('-', '_')}"
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / f"{name}.py").write_text(APP_MODULE)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def _worker_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["worker", *argv])


def test_app_names_a_registry(app_module: str) -> None:
    from sa_river import Workers

    registry = cli._load_workers(_worker_args("--app", f"{app_module}:workers", "--app-dir", "app"))
    assert isinstance(registry, Workers)
    assert registry is sys.modules[app_module].workers


def test_app_names_a_factory_called_once(app_module: str) -> None:
    from sa_river import Workers

    args = _worker_args("--app", f"{app_module}:create_workers", "--app-dir", "app")
    registry = cli._load_workers(args)
    assert isinstance(registry, Workers)
    assert "hello" in registry.kinds()
    assert sys.modules[app_module].calls == [1]
    # The supervisor's check imports the module and finds the factory without calling it.
    assert cli._find_app(args) is sys.modules[app_module].create_workers
    assert sys.modules[app_module].calls == [1]


@pytest.mark.parametrize(
    ("attr", "problem"),
    [
        ("settings", "is a dict"),
        ("count", "is an int"),
        ("returns_dict", "returned a dict, not a sa_river.Workers registry"),
        ("async_factory", "returned a coroutine: an async factory is not supported"),
        ("needs_config", "is a function that needs arguments (config, *, debug=False)"),
        ("nothing", "module '{module}' has no attribute 'nothing'"),
    ],
)
@pytest.mark.parametrize("from_env", [False, True], ids=["option", "environment"])
def test_app_that_is_neither_is_one_line_saying_what_it_found_and_what_it_takes(
    attr: str, problem: str, from_env: bool, app_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SA_RIVER_DATABASE_URL", raising=False)
    spec = f"{app_module}:{attr}"
    if from_env:
        monkeypatch.setenv("SA_RIVER_APP", spec)
        monkeypatch.setenv("SA_RIVER_APP_DIR", "app")
        argv, given, name = ["worker"], f"SA_RIVER_APP={spec}", "SA_RIVER_APP"
    else:
        argv, given, name = ["worker", "--app", spec, "--app-dir", "app"], f"--app {spec}", "--app"
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv, stdout=out, stderr=err) == cli.EXIT_ERROR
    message = err.getvalue()
    assert message.count("\n") == 1, message
    assert message.startswith(f"sa-river: error: {given}")
    assert problem.format(module=app_module) in message
    if attr != "nothing":
        assert message.rstrip().endswith(
            f"{name} takes a sa_river.Workers registry, or a function of no arguments that "
            "returns one"
        )
    assert out.getvalue() == ""


def test_app_is_imported_from_the_app_dir_first(app_module: str, tmp_path: Path) -> None:
    args = _worker_args("--app", f"{app_module}:workers", "--app-dir", "app")
    cli._load_workers(args)
    assert sys.path[0] == str(tmp_path / "app")
    assert sys.modules[app_module].__file__ == str(tmp_path / "app" / f"{app_module}.py")


def test_app_dir_defaults_to_the_current_directory(app_module: str, tmp_path: Path) -> None:
    # The module is in ./app, not in the current directory: not found, and the error says
    # where it looked and how to look elsewhere.
    err = io.StringIO()
    argv = ["worker", "--app", f"{app_module}:workers"]
    assert cli.main(argv, stdout=io.StringIO(), stderr=err) == cli.EXIT_ERROR
    assert err.getvalue() == (
        f"sa-river: error: cannot import '{app_module}' for --app: No module named "
        f"'{app_module}' (searched {tmp_path} first; --app-dir or SA_RIVER_APP_DIR names "
        "another directory)\n"
    )
    assert sys.path[0] == str(tmp_path)


def test_bad_app_spec_is_one_line() -> None:
    err = io.StringIO()
    assert cli.main(["worker", "--app", "nocolon"], stdout=io.StringIO(), stderr=err) == 1
    assert err.getvalue() == "sa-river: error: --app must be MODULE:ATTR, got 'nocolon'\n"
