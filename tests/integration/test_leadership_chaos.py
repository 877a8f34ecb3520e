"""Leader election and maintenance under process kills, against real PostgreSQL.

Every runner here is a separate process (``_runner_process_app.py``) with its own pool,
elector and maintenance; the tests SIGKILL them as a crash would.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _worker_helpers import wait_until
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

import sa_river

APP = Path(__file__).with_name("_runner_process_app.py")

pytestmark = pytest.mark.slow


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


class Runner:
    def __init__(self, url: URL, beliefs: Path, env: dict[str, str]) -> None:
        self.beliefs = beliefs
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), url_string(url), str(beliefs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **env},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert line, "the runner process printed nothing"
        assert line[0] == "ready", line
        self.client_id = line[1]
        self.killed_at: float | None = None

    def kill(self) -> None:
        self.killed_at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_pipe()

    def belief_intervals(self) -> list[tuple[float, float]]:
        """``(start, end)`` of each stretch in which this runner believed it led."""
        intervals: list[tuple[float, float]] = []
        start: float | None = None
        for line in self.beliefs.read_text().splitlines():
            stamp, value = line.split()
            if value == "1" and start is None:
                start = float(stamp)
            elif value == "0" and start is not None:
                intervals.append((start, float(stamp)))
                start = None
        if start is not None:
            end = self.killed_at if self.killed_at is not None else time.monotonic()
            intervals.append((start, end))
        return intervals


@pytest.fixture
def runners(db_url: URL, tmp_path: Path) -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for runner in started:
        runner.terminate()


def start_runner(runners: list[Runner], url: URL, tmp_path: Path, **env: str) -> Runner:
    runner = Runner(url, tmp_path / f"beliefs-{len(runners)}.txt", env)
    runners.append(runner)
    return runner


def current_leader(engine: Engine) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT leader_id FROM river_leader WHERE expires_at > now()")
        ).first()
    return None if row is None else str(row[0])


@pytest.fixture
def executions(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE executions (job_id bigint NOT NULL, client_id text NOT NULL, "
                "started_at timestamptz NOT NULL, finished_at timestamptz)"
            )
        )
    return engine


def test_follower_leads_within_ttl_after_the_leader_is_killed(
    db_url: URL, engine: Engine, runners: list[Runner], tmp_path: Path
) -> None:
    a = start_runner(runners, db_url, tmp_path)
    wait_until(lambda: current_leader(engine) == a.client_id, 10, message="a to lead")
    b = start_runner(runners, db_url, tmp_path)
    time.sleep(0.5)
    assert current_leader(engine) == a.client_id
    a.kill()
    killed = time.monotonic()
    wait_until(lambda: current_leader(engine) == b.client_id, 10, message="b to lead")
    takeover = time.monotonic() - killed
    # TTL 2 s + one elect interval 0.3 s + jitter up to 1 s, plus slack for a loaded machine.
    assert takeover < 2.0 + 0.3 + 1.0 + 1.5, takeover


def test_jobs_of_a_killed_worker_are_rescued_and_completed_exactly_once(
    db_url: URL, executions: Engine, runners: list[Runner], tmp_path: Path
) -> None:
    engine = executions
    victim = start_runner(runners, db_url, tmp_path)
    results = sa_river.insert_many(engine, [("sleepy", {"sleep": 1.5}) for _ in range(5)])
    ids = [r.job.id for r in results]

    def running_on_victim() -> bool:
        with engine.connect() as conn:
            n = conn.execute(
                text("SELECT count(*) FROM executions WHERE client_id = :c"),
                {"c": victim.client_id},
            ).scalar_one()
        return n == 5

    wait_until(running_on_victim, 15, message="the victim to start all five jobs")
    victim.kill()
    start_runner(runners, db_url, tmp_path)

    def all_completed() -> bool:
        with engine.connect() as conn:
            states = conn.execute(
                text("SELECT state FROM river_job WHERE id = ANY(:ids)"), {"ids": ids}
            ).scalars()
            return all(s == "completed" for s in states)

    wait_until(all_completed, 30, message="every job to be rescued and completed")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT job_id, client_id, started_at, finished_at FROM executions "
                "ORDER BY job_id, started_at"
            )
        ).all()
        errors = conn.execute(
            text("SELECT id, errors FROM river_job WHERE id = ANY(:ids)"), {"ids": ids}
        ).all()
    finished = [r for r in rows if r.finished_at is not None]
    assert sorted(r.job_id for r in finished) == sorted(ids)  # each completed exactly once
    for job_id in ids:
        attempts = [r for r in rows if r.job_id == job_id]
        # The killed attempt never finished; the rescue ran it again after, never alongside.
        assert [r.client_id == victim.client_id for r in attempts] == [True, False]
        assert attempts[1].started_at > attempts[0].started_at
    for _, job_errors in errors:
        assert job_errors
        assert "rescued" in job_errors[-1]["error"]


def test_a_slow_job_of_a_live_worker_is_not_rescued(
    db_url: URL, executions: Engine, runners: list[Runner], tmp_path: Path
) -> None:
    engine = executions
    start_runner(runners, db_url, tmp_path)
    # Runs for 4 s: longer than the rescue heartbeat TTL (2 s) and many rescuer intervals
    # (0.5 s), well within its 60 s timeout.
    job_id = sa_river.insert(engine, ("sleepy", {"sleep": 4})).job.id

    def finished() -> bool:
        return sa_river.get_job(engine, job_id).state == "completed"  # type: ignore[union-attr]

    wait_until(finished, 30, message="the slow job to complete")
    job = sa_river.get_job(engine, job_id)
    assert job is not None
    assert job.attempt == 1
    assert job.errors == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM executions")).scalar_one() == 1


def test_three_runners_with_random_leader_kills_never_have_two_leaders(
    db_url: URL, engine: Engine, runners: list[Runner], tmp_path: Path
) -> None:
    rng = random.Random(7)
    for _ in range(3):
        start_runner(runners, db_url, tmp_path)
    takeovers: list[float] = []
    kills = 0
    deadline = time.monotonic() + 60  # the issue asks for 60 s of random leader kills
    while time.monotonic() < deadline:
        leader_id = wait_until(lambda: current_leader(engine), 15, message="a leader")
        time.sleep(rng.uniform(0.5, 2.0))
        victim = next(
            (r for r in runners if r.client_id == leader_id and r.proc.poll() is None), None
        )
        if victim is None:
            continue
        victim.kill()
        kills += 1
        killed = time.monotonic()
        start_runner(runners, db_url, tmp_path)
        wait_until(
            lambda old=leader_id: current_leader(engine) not in (None, old),
            15,
            message="a new leader",
        )
        takeovers.append(time.monotonic() - killed)
    for runner in runners:
        runner.terminate()
    intervals = sorted(
        (start, end, index)
        for index, runner in enumerate(runners)
        for start, end in runner.belief_intervals()
    )
    overlaps = []
    latest_end, owner = float("-inf"), -1
    for start, end, index in intervals:
        if start < latest_end and index != owner:
            overlaps.append((owner, index, latest_end - start))
        if end > latest_end:
            latest_end, owner = end, index
    assert kills >= 10
    assert overlaps == []
    assert len({index for _, _, index in intervals}) >= 3
    print(f"takeover after SIGKILL: {[round(t, 2) for t in takeovers]}")
