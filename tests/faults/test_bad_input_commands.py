"""Bad input through the real commands: a clear one-line error, and nothing lost or half-written.

- A worker process whose handler fails with an error PostgreSQL cannot store as it is (a file
  name that is not UTF-8, as ``os.fsdecode`` gives it) records the error escaped and retries or
  discards the job by the rules: nothing stays ``running``, and its log has no traceback and no
  logging error.
- ``python -m sa_river enqueue`` given values it cannot use (durations out of range, a URL it
  cannot use, args it cannot store) prints one error line naming the value, exits non-zero,
  never shows the password, inserts nothing and creates no file.

The API's own table of bad inputs (every insert entry point, each field) is
``tests/integration/test_bad_input.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

import sa_river
from tests.faults._fault_app import UNDECODABLE_FILE_NAME
from tests.faults._harness import ROOT, Fleet, traceback_count, url_string
from tests.integration._worker_helpers import insert_job, wait_until

STORED_NAME = UNDECODABLE_FILE_NAME.encode("utf-8", "backslashreplace").decode()


def _states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state::text, count(*) FROM river_job GROUP BY 1"))
        return {state: int(n) for state, n in rows}


def test_a_handler_error_holding_an_undecodable_file_name_is_stored_escaped(
    fault_engine: Engine, fleet: Fleet
) -> None:
    retried = insert_job(
        fault_engine, "fault_unstorable_error", opts=sa_river.InsertOpts(max_attempts=2)
    )
    fleet.start(queue_limit=2)

    def finished() -> sa_river.JobRow | None:
        row = sa_river.get_job(fault_engine, retried)
        return row if row is not None and row.state == sa_river.JobState.DISCARDED else None

    row = wait_until(finished, 30, interval=0.2, message=lambda: fleet.log_tail())
    fleet.stop_all()

    assert [error.attempt for error in row.errors] == [1, 2]
    assert all(f"cannot open {STORED_NAME}" in error.error for error in row.errors), row.errors
    assert all(STORED_NAME in error.trace for error in row.errors)
    assert _states(fault_engine) == {"discarded": 1}
    log = fleet.log_text()
    assert traceback_count(log) == 0, log[-4000:]
    assert "Logging error" not in log, log[-4000:]


SECRET = "pa55word"


def _enqueue(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sa_river", "enqueue", "--database-url", url, *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--scheduled-in", "1e20"], "--scheduled-in"),
        (["--scheduled-in", "nan"], "--scheduled-in"),
        (["--scheduled-in", "inf"], "--scheduled-in"),
        (["--scheduled-in", "-5"], "--scheduled-in"),
        (["--priority", "9"], "priority"),
        (["--max-attempts", "0"], "max_attempts"),
        (["--args", "[1, 2]"], "args"),
        (["--args", '{"name": "\\udce9"}'], "args.name"),
        (["--queue", ""], "queue"),
        (["--tag", "a,b"], "tag"),
    ],
)
def test_enqueue_refuses_bad_values_in_one_line_and_inserts_nothing(
    fault_db: URL, fault_engine: Engine, tmp_path: Path, args: list[str], named: str
) -> None:
    url = url_string(fault_db.set(password=SECRET))

    done = _enqueue(url, "--kind", "fault_short", *args, cwd=tmp_path)

    assert done.returncode in (1, 2), done
    assert "Traceback" not in done.stderr, done.stderr
    error_lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1, done.stderr
    assert named in error_lines[0], done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert _states(fault_engine) == {}


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:notaport/db",
        f"postgresql+nosuchdriver://postgres:{SECRET}@127.0.0.1/db",
        f"postgresql+psycopg://postgres:{SECRET}@with@at@127.0.0.1/db",
        "sqlite:///jobs.db",
    ],
)
def test_enqueue_refuses_a_database_url_it_cannot_use_without_showing_the_password(
    tmp_path: Path, url: str
) -> None:
    done = _enqueue(url, "--kind", "fault_short", cwd=tmp_path)

    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert SECRET[:4] not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no jobs.db
