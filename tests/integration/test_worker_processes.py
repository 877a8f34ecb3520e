"""Worker processes against real PostgreSQL: two processes share a queue and run every job
exactly once; SIGTERM stops a process cleanly with nothing left running.

Each process runs ``_worker_process_app.py`` (beside this file): a ``Worker.run()`` with one sync
handler that records every execution in the table ``executions``. The processes start working
together on a ``go`` line, so both take part. Every wait is bounded and every process started
here is killed on the way out if it is still alive.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _worker_helpers import count_states, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

import sa_river

APP = Path(__file__).with_name("_worker_process_app.py")


class WorkerProcess:
    """One ``_worker_process_app.py`` process."""

    def __init__(
        self,
        url: URL,
        log: Path,
        *,
        sleep: float = 0.0,
        limit: int = 10,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(APP),
                url.render_as_string(hide_password=False),
                str(sleep),
                str(limit),
                str(shutdown_timeout),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        self.client_id = ""

    def wait_ready(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        assert lines, f"worker process not ready after {timeout:g}s: {self.stderr()}"
        word, _, client_id = lines[0].strip().partition(" ")
        assert word == "ready", f"unexpected output {lines[0]!r}: {self.stderr()}"
        self.client_id = client_id
        return client_id

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker process {self.proc.pid} did not exit within {timeout:g}s: {self.stderr()}"
            ) from None

    def stderr(self) -> str:
        self._log_file.flush()
        return self.log.read_text()[-4000:]

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log_file.close()


@pytest.fixture
def executions(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE executions (job_id bigint NOT NULL, client_id text)"))
    return engine


@pytest.fixture
def spawn(db_url: URL, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.cleanup()


def start(spawn: list[WorkerProcess], db_url: URL, tmp_path: Path, **kw: float) -> WorkerProcess:
    process = WorkerProcess(db_url, tmp_path / f"worker{len(spawn)}.log", **kw)  # type: ignore[arg-type]
    spawn.append(process)
    return process


def scalar(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_two_processes_run_5000_jobs_exactly_once(
    db_url: URL, executions: Engine, spawn: list[WorkerProcess], tmp_path: Path
) -> None:
    total = 5000
    assert sa_river.insert_many_fast(executions, [("noop", {})] * total) == total
    processes = [start(spawn, db_url, tmp_path) for _ in range(2)]
    client_ids = {p.wait_ready() for p in processes}
    assert len(client_ids) == 2
    for process in processes:
        process.go()

    wait_until(
        lambda: count_states(executions) == {"completed": total},
        60,
        interval=0.2,
        message=lambda: f"all {total} jobs completed; states {count_states(executions)}",
    )
    for process in processes:
        process.signal(signal.SIGTERM)
    for process in processes:
        assert process.wait_exit(20) == 0, process.stderr()

    assert scalar(executions, "SELECT count(*) FROM executions") == total
    assert scalar(executions, "SELECT count(DISTINCT job_id) FROM executions") == total
    with executions.connect() as conn:
        per_process: dict[str, int] = dict(
            conn.execute(text("SELECT client_id, count(*) FROM executions GROUP BY 1")).all()
        )
        # Every job ran one attempt, fetched by the process that recorded its execution.
        mismatched = conn.execute(
            text(
                "SELECT count(*) FROM river_job j JOIN executions e ON e.job_id = j.id "
                "WHERE j.attempt <> 1 OR j.attempted_by <> ARRAY[e.client_id] "
                "OR j.finalized_at IS NULL"
            )
        ).scalar_one()
    assert set(per_process) == client_ids
    assert all(n > 0 for n in per_process.values()), per_process
    assert mismatched == 0


def test_sigterm_mid_work_exits_cleanly_with_nothing_running(
    db_url: URL, executions: Engine, spawn: list[WorkerProcess], tmp_path: Path
) -> None:
    sa_river.insert_many_fast(executions, [("noop", {})] * 200)
    process = start(spawn, db_url, tmp_path, sleep=0.2, limit=5)
    process.wait_ready()
    process.go()
    wait_until(
        lambda: (
            count_states(executions).get("completed", 0) >= 5
            and count_states(executions).get("running", 0) > 0
        ),
        30,
        message=lambda: f"work under way; states {count_states(executions)}",
    )
    with executions.connect() as conn:
        running_before = set(
            conn.execute(text("SELECT id FROM river_job WHERE state = 'running'")).scalars()
        )
    signalled = time.monotonic()
    process.signal(signal.SIGTERM)
    assert process.wait_exit(10) == 0, process.stderr()
    assert time.monotonic() - signalled < 5

    states = count_states(executions)
    assert "running" not in states, states
    assert set(states) <= {"completed", "available"}, states
    with executions.connect() as conn:
        completed = set(
            conn.execute(text("SELECT id FROM river_job WHERE state = 'completed'")).scalars()
        )
        executed = list(conn.execute(text("SELECT job_id FROM executions")).scalars())
        uncounted = conn.execute(
            text("SELECT count(*) FROM river_job WHERE state = 'available' AND attempt <> 0")
        ).scalar_one()
    # The jobs running at SIGTERM were allowed to finish; nothing else ran.
    assert running_before <= completed
    assert sorted(executed) == sorted(completed)
    assert uncounted == 0


def test_a_second_sigterm_stops_hard(
    db_url: URL, executions: Engine, spawn: list[WorkerProcess], tmp_path: Path
) -> None:
    sa_river.insert_many_fast(executions, [("noop", {})] * 2)
    process = start(spawn, db_url, tmp_path, sleep=30, limit=2, shutdown_timeout=30)
    process.wait_ready()
    process.go()
    wait_until(
        lambda: count_states(executions) == {"running": 2},
        30,
        message=lambda: f"both jobs running; states {count_states(executions)}",
    )
    process.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.proc.poll() is None  # still waiting for the jobs to finish
    signalled = time.monotonic()
    process.signal(signal.SIGTERM)
    assert process.wait_exit(10) == 0, process.stderr()
    assert time.monotonic() - signalled < 5
    assert count_states(executions) == {"available": 2}
    assert scalar(executions, "SELECT max(attempt) FROM river_job") == 0
