"""Where every command finds its database, against real PostgreSQL.

- The one rule: ``--database-url``, else ``SA_RIVER_DATABASE_URL``, else ``DATABASE_URL`` (an
  empty variable counts as unset). Each step is shown to win over the next with two real
  databases that answer ``migrate current`` differently: one at the latest revision, one empty.
- ``migrate``, ``enqueue`` and ``status`` with no URL anywhere stop with a one-line error and
  start nothing.
- ``worker`` and ``demo`` with no URL anywhere run on the embedded PostgreSQL, and say so first,
  loudly: a WARNING line on stderr naming its data directory and how to use a real server (a
  real embedded server is started, in a temporary directory, in a subprocess that stops it).

Every wait is bounded; every process started here is killed on the way out if still alive.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _worker_helpers import wait_until
from sqlalchemy.engine import URL

from sa_river import cli, migrate

needs_pgserver = pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None,
    reason="the embedded PostgreSQL needs pip install 'sa_river[embedded]'",
)

VARIABLES = ("SA_RIVER_DATABASE_URL", "DATABASE_URL")


def _text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture(autouse=True)
def _no_url_from_the_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # where an embedded server would put its data, if one started


def _current(argv: list[str]) -> str:
    """What ``migrate current`` prints: ``... (head)`` for the migrated database, ``base`` for
    the empty one."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["migrate", "current", *argv], stdout=out, stderr=err)
    assert code == cli.EXIT_OK, err.getvalue()
    return out.getvalue().strip()


HEAD = f"{migrate.head_revisions()[0]} (head)"


@pytest.mark.parametrize("migrated_in", ["option", "variables"])
def test_the_option_wins_over_both_variables(
    migrated_in: str, db_url: URL, empty_db_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    option, variables = (
        (db_url, empty_db_url) if migrated_in == "option" else (empty_db_url, db_url)
    )
    for name in VARIABLES:
        monkeypatch.setenv(name, _text(variables))
    expected = HEAD if migrated_in == "option" else "base"
    assert _current(["--database-url", _text(option)]) == expected


@pytest.mark.parametrize("migrated_in", VARIABLES)
def test_sa_river_database_url_wins_over_database_url(
    migrated_in: str, db_url: URL, empty_db_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = next(name for name in VARIABLES if name != migrated_in)
    monkeypatch.setenv(migrated_in, _text(db_url))
    monkeypatch.setenv(other, _text(empty_db_url))
    assert _current([]) == (HEAD if migrated_in == "SA_RIVER_DATABASE_URL" else "base")


@pytest.mark.parametrize("sa_river_variable", [None, "", "  "], ids=["unset", "empty", "blank"])
def test_database_url_is_used_when_neither_the_option_nor_sa_river_database_url_is_set(
    sa_river_variable: str | None, db_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sa_river_variable is not None:
        monkeypatch.setenv("SA_RIVER_DATABASE_URL", sa_river_variable)
    monkeypatch.setenv("DATABASE_URL", _text(db_url))
    assert _current([]) == HEAD


@pytest.mark.parametrize(
    "argv",
    [
        ["migrate", "up"],
        ["migrate", "down", "--target", "base"],
        ["migrate", "current"],
        ["enqueue", "--kind", "k"],
        ["status"],
    ],
    ids=" ".join,
)
def test_commands_without_an_embedded_fallback_refuse_no_url_and_start_nothing(
    argv: list[str], tmp_path: Path
) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv, stdout=out, stderr=err) == cli.EXIT_ERROR
    assert err.getvalue() == (
        "sa-river: error: no database URL: pass --database-url or set SA_RIVER_DATABASE_URL "
        "(or DATABASE_URL)\n"
    )
    assert out.getvalue() == ""
    assert list(tmp_path.iterdir()) == []  # no embedded server's data


# --- the embedded PostgreSQL, in real processes ----------------------------------------------


def _environment_without_a_url() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name not in VARIABLES and not name.startswith("SA_RIVER_")
    }


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "event=embedded_database" in line]


def _check_warning(line: str, command: str, directory: Path) -> None:
    data = directory.resolve() / ".sa_river" / "pgdata"
    assert " WARNING sa_river.cli no database URL given " in line, line
    assert f"{command} runs on an embedded PostgreSQL private to this directory" in line
    assert f"data in {data};" in line
    assert "pass --database-url or set SA_RIVER_DATABASE_URL (or DATABASE_URL)" in line
    assert data.is_dir()


@needs_pgserver
def test_demo_without_a_url_warns_that_it_runs_on_the_embedded_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sa_river", "demo", "-n", "3", "--timeout", "60"],
        cwd=tmp_path,
        env=_environment_without_a_url(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [line] = _warnings(result.stderr)
    _check_warning(line, "demo", tmp_path)
    assert "3/3 demo jobs completed" in result.stdout


@needs_pgserver
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_worker_without_a_url_warns_on_stderr_before_it_starts(
    log_format: str, tmp_path: Path
) -> None:
    """The line comes in the worker's log format, before ``worker_started``, on stderr (stdout
    holds only the banner)."""
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sa_river",
                "worker",
                "--app",
                "sa_river.tools.demo:workers",
                "--log-format",
                log_format,
            ],
            cwd=tmp_path,
            env=_environment_without_a_url(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        wait_until(
            lambda: "worker_started" in stderr_path.read_text() or proc.poll() is not None,
            60,
            message=lambda: f"the worker to start; stderr:\n{stderr_path.read_text()[-3000:]}",
        )
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, stderr_path.read_text()
    lines = stderr_path.read_text().splitlines()
    if log_format == "json":
        entries = [json.loads(line) for line in lines]
        [warning] = [e for e in entries if e.get("event") == "embedded_database"]
        assert warning["level"] == "WARNING"
        _check_warning(
            f"x WARNING {warning['logger']} {warning['message']} event=embedded_database",
            "worker",
            tmp_path,
        )
        events = [e.get("event") for e in entries]
    else:
        [warning_line] = _warnings("\n".join(lines))
        _check_warning(warning_line, "worker", tmp_path)
        events = [line.rsplit("event=", 1)[-1].split()[0] for line in lines if "event=" in line]
    assert events.index("embedded_database") < events.index("worker_started")
    assert "embedded" not in stdout


def test_demo_creates_the_river_tables_in_the_database_it_is_given(
    empty_db_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on Python 3.13, where the embedded server cannot be installed: a URL, no tables yet.
    monkeypatch.setenv("DATABASE_URL", _text(empty_db_url))
    out = io.StringIO()
    assert cli.main(["demo", "-n", "20", "--concurrency", "5"], stdout=out) == 0
    assert "20/20 demo jobs completed" in out.getvalue()
    assert _current([]) == HEAD
