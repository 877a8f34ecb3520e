"""Argument parsing of ``sa-river migrate``: no database involved."""

from __future__ import annotations

import io

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
