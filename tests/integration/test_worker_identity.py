"""A runner's identity for rescue is its incarnation, not its name.

Ids are often fixed (``--id``, a systemd unit, a supervised child restarted as ``s-1``). A
worker killed and started again under the same id must not keep its dead predecessor's jobs
``running`` by heartbeating the same row; ``status`` must show the process that runs now; and
of two live processes given one id, the newest owns it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime
from typing import Any

from _worker_helpers import insert_job, running_worker, wait_for_state
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from sa_river import Job, JobState, Workers
from sa_river.queries.client import client_register
from sa_river.queries.maintenance import RESCUED_WORKER_LOST
from sa_river.worker.heartbeat import Heartbeat

# Fast enough that a rescue happens within a second or two of a start.
FAST = {
    "heartbeat_interval": 0.2,
    "rescue_heartbeat_ttl": 0.8,
    "rescuer_interval": 0.2,
    "scheduler_interval": 0.2,
    "elect_interval": 0.5,
    "leader_ttl": 2.0,
}


def leave_running(engine: Engine, job_id: int, client_id: str, started_ago: str) -> None:
    """What a process SIGKILLed mid-job leaves: the job running in its attempt 1."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE river_job SET state = 'running', attempt = 1, "
                "attempted_at = now() - CAST(:ago AS interval), attempted_by = ARRAY[:by] "
                "WHERE id = :id"
            ),
            {"id": job_id, "by": client_id, "ago": started_ago},
        )


def leave_client_row(engine: Engine, client_id: str, *, started_ago: str) -> None:
    """The killed process's heartbeat row, still fresh: it died a moment ago."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sa_river_client (id, hostname, pid, started_at, heartbeat_at) "
                "VALUES (:id, 'old-host', 1, now() - CAST(:ago AS interval), now())"
            ),
            {"id": client_id, "ago": started_ago},
        )


def client_row(engine: Engine, client_id: str) -> tuple[str, int, datetime] | None:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT hostname, pid, started_at FROM sa_river_client WHERE id = :id"),
            {"id": client_id},
        ).first()
    return None if row is None else (row.hostname, row.pid, row.started_at)


def recording_workers(ran: list[int]) -> Workers:
    workers = Workers()

    @workers.handler("work")
    def work(job: Job[dict[str, Any]]) -> None:
        ran.append(job.id)

    return workers


def test_restart_under_the_same_id_rescues_the_dead_processs_jobs(
    db_url: URL, engine: Engine
) -> None:
    job_id = insert_job(engine, "work")
    leave_running(engine, job_id, "s", started_ago="30 seconds")
    leave_client_row(engine, "s", started_ago="1 minute")
    ran: list[int] = []

    with running_worker(db_url, recording_workers(ran), client_id="s", **FAST):
        row = wait_for_state(engine, job_id, JobState.COMPLETED, timeout=15)

    assert ran == [job_id]
    assert row.attempt == 2
    assert [e.error for e in row.errors] == [RESCUED_WORKER_LOST]
    assert row.attempted_by == ["s", "s"]


def test_status_shows_the_process_that_runs_now(db_url: URL, engine: Engine) -> None:
    leave_client_row(engine, "s", started_ago="1 hour")
    before = client_row(engine, "s")
    assert before is not None

    with running_worker(db_url, Workers(), client_id="s", **FAST):
        now = client_row(engine, "s")

    assert now is not None
    assert now[:2] == (socket.gethostname(), os.getpid())
    assert now[2] > before[2]
    assert client_row(engine, "s") is None  # a clean stop removes its own row


def test_a_newer_process_with_the_same_id_takes_it_over(db_url: URL, engine: Engine) -> None:
    with running_worker(db_url, Workers(), client_id="twin", **FAST) as older:
        with engine.begin() as conn:
            client_register(conn, client_id="twin", hostname="other-host", pid=2, queues=[])
        assert older._heartbeat.superseded.wait(5), "the older runner learns of it"
        assert older.stopped.wait(10), "a superseded runner stops"

    row = client_row(engine, "twin")
    assert row is not None
    assert row[:2] == ("other-host", 2)  # the older runner's stop leaves the newer's row


def test_a_lost_heartbeat_row_comes_back_as_the_same_incarnation(engine: Engine) -> None:
    heartbeat = Heartbeat(engine, client_id="h", queues=["default"], interval=1.0)
    heartbeat.beat()
    assert heartbeat.registered.is_set()
    first = client_row(engine, "h")
    assert first is not None
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM sa_river_client"))

    heartbeat.beat()

    again = client_row(engine, "h")
    assert again == first
    assert not heartbeat.superseded.is_set()


def test_a_stop_that_cannot_give_jobs_back_keeps_the_row_so_they_are_rescued(
    engine: Engine, db_url: URL
) -> None:
    """A runner that stops with a job still running in its name (its release refused) leaves
    its heartbeat row to go stale: deleting it would make the job look like a stranger's,
    rescued only after ``rescue_stuck_after`` (an hour by default) instead of the TTL."""
    started = threading.Event()
    workers = Workers()

    @workers.handler("hangs")
    def hangs(job: Job[dict[str, Any]]) -> None:
        started.set()
        time.sleep(3)

    job_id = insert_job(engine, "hangs")
    with engine.begin() as conn:  # refuse giving the job back, as a lost database would
        conn.execute(
            text(
                "CREATE FUNCTION refuse_release() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'release refused by the test'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse_release BEFORE UPDATE ON river_job FOR EACH ROW "
                "WHEN (OLD.state = 'running' AND NEW.state = 'available') "
                "EXECUTE FUNCTION refuse_release()"
            )
        )
    try:
        with running_worker(db_url, workers, client_id="keeps-row", shutdown_timeout=0.2):
            assert started.wait(10)
        assert wait_for_state(engine, job_id, JobState.RUNNING).attempt == 1
        assert client_row(engine, "keeps-row") is not None
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_release ON river_job"))
            conn.execute(text("DROP FUNCTION refuse_release()"))

    # The row goes stale and a leader rescues the job after the TTL, not after an hour.
    done = Workers()

    @done.handler("hangs")
    def returns(job: Job[dict[str, Any]]) -> None:
        pass

    with running_worker(db_url, done, **FAST, rescue_stuck_after=3600):
        row = wait_for_state(engine, job_id, JobState.COMPLETED, timeout=15)
    assert [e.error for e in row.errors] == [RESCUED_WORKER_LOST]
    assert row.attempt == 2


def test_a_clean_stop_removes_the_row(engine: Engine, db_url: URL) -> None:
    with running_worker(db_url, Workers(), client_id="clean-stop"):
        assert client_row(engine, "clean-stop") is not None
    assert client_row(engine, "clean-stop") is None
