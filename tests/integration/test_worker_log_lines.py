"""What a ``worker`` command writes to stderr, in a real process against real PostgreSQL.

- ``--log-jobs`` (or ``SA_RIVER_LOG_JOBS``) prints one INFO ``job_done`` line per finished
  attempt, with the job's id, kind, queue, attempt, duration and how it ended; without it, at
  the default level, there is none.
- Every record is one line in both log formats, even when a handler's error message has line
  breaks and when a handler logs a traceback: each line of stderr is a whole record (a JSON
  object, or a line that starts with its time and level).

The worker finds its database in ``DATABASE_URL`` alone, the last step of the URL rule. Every
wait is bounded and the worker process is killed on the way out if it is still alive.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _worker_helpers import count_states, wait_until
from sqlalchemy import Engine
from sqlalchemy.engine import URL

import sa_river
from sa_river.options import InsertOpts

APP_SOURCE = '''\
"""Handlers whose errors and logs span several lines."""

import logging

import sa_river

log = logging.getLogger("logjobs_app")
workers = sa_river.Workers()


@workers.handler("ok")
def ok(job):
    pass


@workers.handler("boom")
def boom(job):
    raise ValueError("first line\\nsecond line\\r\\nthird line")


@workers.handler("noisy")
def noisy(job):
    try:
        {}["missing\\nkey"]
    except KeyError:
        log.exception("lookup failed\\nfor job %d", job.id)
'''

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ ")
STOP_TIMEOUT = 30.0


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "logjobs.py").write_text(APP_SOURCE)
    return directory


class Worker:
    def __init__(self, argv: list[str], env: dict[str, str], stderr: Path) -> None:
        self.stderr = stderr
        with stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sa_river", "worker", *argv],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )

    def output(self) -> str:
        return self.stderr.read_text()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(STOP_TIMEOUT) == 0, self.output()[-4000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def started() -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    yield workers
    for worker in workers:
        worker.kill()


def _records(output: str, log_format: str) -> list[dict[str, str]]:
    """Each line of ``output`` read as one whole record: its level, message and fields."""
    records = []
    for line in output.splitlines():
        if log_format == "json":
            entry = json.loads(line)  # a piece of a record would not parse
            records.append({key: str(value) for key, value in entry.items()})
            continue
        assert TEXT_LINE.match(line), f"not a record of its own: {line!r}"
        _, level, logger, rest = line.split(" ", 3)
        words = rest.split(" ")
        fields = {}
        while words and re.fullmatch(r"[a-z_]+=[^\"]+", words[-1]):  # the fields end the line
            key, value = words.pop().split("=", 1)
            fields[key] = value
        message, _, exception = " ".join(words).partition(" exception=")
        record = {"level": level, "logger": logger, "message": message, **fields}
        if exception:
            record["exception"] = json.loads(exception)
        records.append(record)
    return records


@pytest.mark.parametrize(
    ("log_format", "how"),
    [("json", "flag"), ("text", "variable"), ("text", "off")],
)
def test_worker_log_lines(
    log_format: str,
    how: str,
    db_url: URL,
    engine: Engine,
    app_dir: Path,
    tmp_path: Path,
    started: list[Worker],
) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SA_RIVER_") and name != "PYTHONPATH"
    }
    env["DATABASE_URL"] = db_url.render_as_string(hide_password=False)
    argv = ["--app", "logjobs:workers", "--app-dir", str(app_dir), "--poll-interval", "0.2"]
    argv += ["--log-format", log_format]
    if how == "flag":
        argv.append("--log-jobs")
    elif how == "variable":
        env["SA_RIVER_LOG_JOBS"] = "yes"
    worker = Worker(argv, env, tmp_path / "stderr.log")
    started.append(worker)
    wait_until(
        lambda: "worker_started" in worker.output() or worker.proc.poll() is not None,
        message=lambda: f"the worker to start: {worker.output()[-3000:]}",
    )
    once = InsertOpts(max_attempts=1)
    ids = {
        kind: sa_river.insert(engine, (kind, {}), once).job.id for kind in ("ok", "boom", "noisy")
    }
    wait_until(
        lambda: count_states(engine) == {"completed": 2, "discarded": 1},
        message=lambda: f"the jobs to finish ({count_states(engine)}): {worker.output()[-3000:]}",
    )
    wait_until(  # the handler's log line, written before its attempt's outcome
        lambda: "lookup failed" in worker.output(),
        message=lambda: f"the handler's log line: {worker.output()[-3000:]}",
    )
    worker.stop()

    records = _records(worker.output(), log_format)
    by_event: dict[str, list[dict[str, str]]] = {}
    for record in records:
        by_event.setdefault(record.get("event", ""), []).append(record)

    # The failure's own line: its multi-line error on one line.
    [failed] = by_event["job_failed"]
    assert failed["job_id"] == str(ids["boom"])
    assert "first line second line third line" in failed["message"]

    # The handler's logger.exception: one record, its message's break escaped in the text
    # format, its traceback whole.
    [logged] = [r for r in records if r["logger"] == "logjobs_app"]
    assert logged["level"] == "ERROR"
    expected = f"lookup failed\nfor job {ids['noisy']}"
    assert logged["message"] == (
        expected if log_format == "json" else expected.replace("\n", "\\n")
    )
    assert logged["exception"].startswith("Traceback (most recent call last):\n")
    assert logged["exception"].endswith("KeyError: 'missing\\nkey'")

    done = by_event.get("job_done", [])
    if how == "off":
        assert done == []
        return
    assert sorted(int(r["job_id"]) for r in done) == sorted(ids.values())
    for record in done:
        kind = next(k for k, i in ids.items() if i == int(record["job_id"]))
        assert record["level"] == "INFO"
        assert record["logger"] == "sa_river.executor"
        assert record["kind"] == kind
        assert record["queue"] == "default"
        assert record["attempt"] == "1"
        assert float(record["duration_ms"]) >= 0
        # Each job has one attempt: the failing one is discarded at once.
        ending, state = (
            ("ended with ValueError", "discarded") if kind == "boom" else ("succeeded", "completed")
        )
        assert record["state"] == state
        assert record["message"] == f"job {record['job_id']} ({kind}) attempt 1 {ending} -> {state}"
    # Only the job lines were opened up: the executor's other DEBUG records stay hidden.
    assert all(r["level"] != "DEBUG" for r in records)
