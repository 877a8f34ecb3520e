"""Argument parsing and the checks ``sa-river`` makes before it touches a database: no
database involved."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from sa_river import cli


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
        "sa-river: error: no database URL: pass --database-url or set SA_RIVER_DATABASE_URL\n"
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


@pytest.mark.parametrize("from_env", [False, True], ids=["option", "environment"])
@pytest.mark.parametrize("command", URL_COMMANDS)
@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_database_url_is_one_line_hiding_the_password_and_creating_nothing(
    command: list[str],
    url: str,
    message: str,
    from_env: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if from_env:
        monkeypatch.setenv("SA_RIVER_DATABASE_URL", url)
        argv = command
    else:
        monkeypatch.delenv("SA_RIVER_DATABASE_URL", raising=False)
        argv = [*command, "--database-url", url]
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv, stdout=out, stderr=err) == cli.EXIT_ERROR
    assert err.getvalue() == f"sa-river: error: {message}\n"
    assert "SECRET" not in err.getvalue() + out.getvalue()
    assert "PART2" not in err.getvalue() + out.getvalue()
    assert list(tmp_path.iterdir()) == []  # no sqlite file, no embedded server's data


def test_postgres_scheme_is_accepted_as_postgresql_with_psycopg() -> None:
    # Heroku and libpq spell it postgres://; SQLAlchemy alone would not load a dialect for it,
    # and without a driver SQLAlchemy 2.0 would pick psycopg2, which sa_river does not install.
    assert (
        cli._check_database_url("postgres://bob:pw@db/app") == "postgresql+psycopg://bob:pw@db/app"
    )
    assert (
        cli._check_database_url("postgresql://bob:pw@db/app")
        == "postgresql+psycopg://bob:pw@db/app"
    )
    assert (
        cli._check_database_url("postgresql+psycopg://bob:pw@db:5433/app?sslmode=require")
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
    assert defined == {flag for option in cli._WORKER_OPTIONS for flag in option.flags}


# Every worker option, each with a value other than its default.
EVERY_WORKER_OPTION = {
    "--app": WORKER[1:],
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
    "--log-level": ["--log-level", "DEBUG"],
    "--log-format": ["--log-format", "json"],
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


def test_a_supervised_child_of_defaults_gets_defaults() -> None:
    args = cli.build_parser().parse_args(WORKER)
    cli._check_metrics_options(args)
    child = cli._child_argv(args, 0)
    assert child == ["worker", "--app", WORKER[2], "--log-level", "INFO", "--log-format", "text"]
    assert vars(cli.build_parser().parse_args(child)) == vars(args)


def test_metrics_port_0_is_0_in_every_child() -> None:
    args = cli.build_parser().parse_args([*WORKER, "--processes", "2", "--metrics-port", "0"])
    cli._check_metrics_options(args)
    child = cli._child_argv(args, 1)
    assert child[child.index("--metrics-port") + 1] == "0"


def test_an_empty_id_is_a_random_one_in_the_worker_and_its_children() -> None:
    args = cli.build_parser().parse_args([*WORKER, "--id", ""])
    assert "--id" not in cli._child_argv(args, 0)
    assert cli._worker_config(args).client_id != ""
