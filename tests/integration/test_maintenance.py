"""Leader-only maintenance against real PostgreSQL: scheduler, rescuer, cleaner, queue cleaner.

Jobs are inserted through the public API; SQL UPDATEs only set up states and timestamps a test
needs (a job "running on a dead worker", "finalised two days ago"). The code under test is the
real services, called through ``run_once()`` or started with a short interval.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

import sa_river
from sa_river import InsertOpts, JobArgs, JobState, UniqueOpts
from sa_river.maintenance.cleaner import JobCleaner
from sa_river.maintenance.queue_cleaner import QueueCleaner
from sa_river.maintenance.rescuer import JobRescuer
from sa_river.maintenance.scheduler import JobScheduler
from sa_river.queries.job_admin import job_get
from sa_river.queries.job_fetch import job_get_available
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.queries.maintenance import RESCUED_STUCK, RESCUED_WORKER_LOST, job_delete_finalized
from sa_river.types import JobRow
from sa_river.urls import libpq_dsn

S = JobState
UTC = timezone.utc
CHANNEL = "public.river_insert"
WAIT = 5.0  # seconds: the most any single wait in this file may take
CONFLICT = {"unique_key_conflict": "scheduler_discarded"}
# Unique across every live state but retryable: a failed job lets a new duplicate in.
NO_RETRYABLE = ("available", "completed", "pending", "running", "scheduled")


class Report(JobArgs, kind="report"):
    report_id: int


def leader() -> bool:
    return True


def follower() -> bool:
    return False


def insert(engine: Engine, args: Any = None, **opts: Any) -> int:
    result = sa_river.insert(
        engine, args if args is not None else ("plain", {}), InsertOpts(**opts)
    )
    assert not result.unique_skipped_as_duplicate
    return result.job.id


def insert_unique(engine: Engine, report_id: int, by_state: Any = None, **opts: Any) -> int:
    return insert(
        engine,
        Report(report_id=report_id),
        unique=UniqueOpts(by_args=True, by_state=by_state),
        **opts,
    )


def sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def set_job(engine: Engine, job_id: int, assignments: str, **params: Any) -> None:
    """A fixture UPDATE: ``assignments`` is SQL like ``state = 'retryable', attempt = 1``."""
    sql(engine, f"UPDATE river_job SET {assignments} WHERE id = :job_id", job_id=job_id, **params)


def get(engine: Engine, job_id: int) -> JobRow:
    with engine.connect() as conn:
        row = job_get(conn, job_id)
    assert row is not None, f"job {job_id} is gone"
    return row


def states(engine: Engine, *ids: int) -> list[JobState]:
    return [get(engine, i).state for i in ids]


def count(engine: Engine, table: str, where: str = "true") -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar_one())


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def scheduler(engine: Engine, **kwargs: Any) -> JobScheduler:
    kwargs.setdefault("interval", 5.0)
    kwargs.setdefault("is_leader", leader)
    kwargs.setdefault("lookahead", 0.0)
    return JobScheduler(engine, **kwargs)


class Listener:
    """A separate autocommit connection LISTENing on the insert channel."""

    def __init__(self, url: URL) -> None:
        self.conn = psycopg.connect(libpq_dsn(url), autocommit=True)
        self.conn.execute(f'LISTEN "{CHANNEL}"')

    def until_marker(self, engine: Engine) -> list[dict[str, Any]]:
        """Payloads heard before a marker job committed now (delivery is in commit order)."""
        insert(engine, queue="marker")
        heard: list[dict[str, Any]] = []
        for note in self.conn.notifies(timeout=WAIT):
            payload = json.loads(note.payload)
            if payload == {"queue": "marker"}:
                return heard
            heard.append(payload)
        raise AssertionError(f"marker not heard within {WAIT}s; heard {heard}")


@pytest.fixture
def listener(db_url: URL) -> Iterator[Listener]:
    lst = Listener(db_url)
    yield lst
    lst.conn.close()


# --- scheduler -----------------------------------------------------------------------------


class TestScheduler:
    def test_promotes_due_scheduled_and_retryable_jobs_and_leaves_future_ones(
        self, engine: Engine
    ) -> None:
        later = datetime.now(UTC) + timedelta(hours=1)
        due_scheduled = insert(engine, scheduled_at=later)
        due_retryable = insert(engine, scheduled_at=later)
        within_lookahead = insert(engine, scheduled_at=later)
        future_scheduled = insert(engine, scheduled_at=later)
        future_retryable = insert(engine, scheduled_at=later)
        available = insert(engine)
        set_job(engine, due_scheduled, "scheduled_at = now() - interval '1 second'")
        set_job(
            engine,
            due_retryable,
            "state = 'retryable', attempt = 1, scheduled_at = now() - interval '1 minute'",
        )
        set_job(engine, within_lookahead, "scheduled_at = now() + interval '3 seconds'")
        set_job(engine, future_retryable, "state = 'retryable', attempt = 1")
        assert (
            states(engine, due_scheduled, within_lookahead, future_scheduled) == [S.SCHEDULED] * 3
        )

        assert scheduler(engine, lookahead=10.0).run_once() == 3

        assert states(engine, due_scheduled, due_retryable, within_lookahead) == [S.AVAILABLE] * 3
        assert states(engine, future_scheduled, future_retryable, available) == [
            S.SCHEDULED,
            S.RETRYABLE,
            S.AVAILABLE,
        ]
        # A job made available early still waits for its time at fetch: scheduled_at is kept.
        assert get(engine, within_lookahead).scheduled_at > datetime.now(UTC)
        assert get(engine, due_retryable).attempt == 1
        assert scheduler(engine, lookahead=10.0).run_once() == 0

    def test_lookahead_zero_leaves_jobs_not_yet_due(self, engine: Engine) -> None:
        soon = insert(engine, scheduled_at=datetime.now(UTC) + timedelta(seconds=30))
        assert scheduler(engine, lookahead=0.0).run_once() == 0
        assert states(engine, soon) == [S.SCHEDULED]

    def test_notifies_each_queue_with_new_available_jobs_once(
        self, engine: Engine, listener: Listener
    ) -> None:
        later = datetime.now(UTC) + timedelta(hours=1)
        for queue in ("q1", "q1", "q2"):
            job_id = insert(engine, queue=queue, scheduled_at=later)
            set_job(engine, job_id, "scheduled_at = now() - interval '1 second'")
        insert(engine, queue="q3", scheduled_at=later)  # not due: no notification
        assert listener.until_marker(engine) == []  # the inserts above notified nobody

        assert scheduler(engine).run_once() == 3

        heard = listener.until_marker(engine)
        assert sorted(p["queue"] for p in heard) == ["q1", "q2"]

    def test_batches_until_a_short_batch(self, engine: Engine, listener: Listener) -> None:
        later = datetime.now(UTC) + timedelta(hours=1)
        ids = [insert(engine, scheduled_at=later) for _ in range(7)]
        sql(engine, "UPDATE river_job SET scheduled_at = now() - interval '1 second'")
        calls = 0

        def counting_leader() -> bool:
            nonlocal calls
            calls += 1
            return True

        assert scheduler(engine, batch_size=3, is_leader=counting_leader).run_once() == 7
        assert states(engine, *ids) == [S.AVAILABLE] * 7
        assert calls == 3  # 3 + 3 + 1: leadership checked before every batch
        # One notification per batch (per transaction) that made the queue available.
        assert listener.until_marker(engine) == [{"queue": "default"}] * 3

    def test_a_scheduled_unique_job_is_not_discarded_as_its_own_duplicate(
        self, engine: Engine
    ) -> None:
        """River 0.12.0 discarded every unique job passing its scheduler: the conflict check
        found the job itself holding its own key; a job never
        conflicts with itself."""
        with Session(engine) as session, session.begin():
            result = sa_river.insert(
                session,
                Report(report_id=7),
                InsertOpts(
                    unique=UniqueOpts(by_args=True),
                    scheduled_at=datetime.now(UTC) + timedelta(seconds=2),
                ),
            )
        job_id = result.job.id
        assert not result.unique_skipped_as_duplicate
        row = get(engine, job_id)
        assert row.state is S.SCHEDULED
        assert row.unique_key is not None
        assert S.SCHEDULED in (row.unique_states or ())  # it holds its own key while scheduled

        service = scheduler(engine, lookahead=0.0)
        assert service.run_once() == 0  # not due yet
        assert get(engine, job_id).state is S.SCHEDULED
        wait_until(lambda: datetime.now(UTC) > row.scheduled_at + timedelta(milliseconds=50), "due")

        assert service.run_once() == 1

        promoted = get(engine, job_id)
        assert promoted.state is S.AVAILABLE
        assert promoted.finalized_at is None
        assert "unique_key_conflict" not in promoted.metadata
        assert count(engine, "river_job", "state = 'discarded'") == 0
        # It still holds its key: inserting it again finds it.
        again = sa_river.insert(
            engine, Report(report_id=7), InsertOpts(unique=UniqueOpts(by_args=True))
        )
        assert again.unique_skipped_as_duplicate
        assert again.job.id == job_id
        # And it runs to completion.
        with engine.begin() as conn:
            fetched = job_get_available(conn, queue="default", limit=10, client_id="w1")
            assert [j.id for j in fetched] == [job_id]
            completed = AttemptOutcome.completed(job_id, fetched[0].attempt)
            done = job_set_state_if_running_many(conn, [completed])
        assert done == {job_id: S.COMPLETED}

    def test_duplicate_is_discarded_when_another_live_job_holds_the_key(
        self, engine: Engine
    ) -> None:
        x = insert_unique(engine, 1, by_state=NO_RETRYABLE)
        # X failed: retryable is outside its unique states, so it lets go of the key ...
        set_job(engine, x, "state = 'retryable', attempt = 1, scheduled_at = now() + interval '1h'")
        # ... and a new job Y with the same key gets in.
        y = insert_unique(engine, 1, by_state=NO_RETRYABLE)
        assert y != x
        assert scheduler(engine).run_once() == 0  # X is not due yet
        set_job(engine, x, "scheduled_at = now() - interval '1 second'")
        y_before = get(engine, y)

        assert scheduler(engine).run_once() == 1

        discarded = get(engine, x)
        assert discarded.state is S.DISCARDED
        assert discarded.finalized_at is not None
        assert discarded.metadata == CONFLICT
        assert discarded.attempt == 1
        assert get(engine, y) == y_before  # the holder is untouched

    def test_due_jobs_sharing_a_key_nobody_holds_first_wins(self, engine: Engine) -> None:
        x = insert_unique(engine, 1, by_state=NO_RETRYABLE, priority=2)
        set_job(engine, x, "state = 'retryable', attempt = 1, scheduled_at = now() - interval '9s'")
        y = insert_unique(engine, 1, by_state=NO_RETRYABLE, priority=2)
        set_job(engine, y, "state = 'retryable', attempt = 1, scheduled_at = now() - interval '5s'")
        # Of these two, the higher priority (lower number) wins although it is due later.
        z = insert_unique(engine, 2, by_state=NO_RETRYABLE, priority=3)
        set_job(engine, z, "state = 'retryable', attempt = 1, scheduled_at = now() - interval '9s'")
        w = insert_unique(engine, 2, by_state=NO_RETRYABLE, priority=1)
        set_job(engine, w, "state = 'retryable', attempt = 1, scheduled_at = now() - interval '1s'")

        assert scheduler(engine).run_once() == 4

        assert states(engine, x, y) == [S.AVAILABLE, S.DISCARDED]
        assert states(engine, w, z) == [S.AVAILABLE, S.DISCARDED]
        assert get(engine, y).metadata == CONFLICT
        assert get(engine, z).metadata == CONFLICT
        assert get(engine, x).metadata == {}

    def test_a_due_job_already_holding_the_key_wins_over_a_more_urgent_one(
        self, engine: Engine
    ) -> None:
        """Promoting the more urgent one first would collide with the holder mid-statement."""
        later = datetime.now(UTC) + timedelta(hours=1)
        retrying = insert_unique(engine, 1, by_state=NO_RETRYABLE, priority=1)
        set_job(engine, retrying, "state = 'retryable', attempt = 1")
        holder = insert_unique(engine, 1, by_state=NO_RETRYABLE, priority=4, scheduled_at=later)
        sql(engine, "UPDATE river_job SET scheduled_at = now() - interval '1 second'")

        assert scheduler(engine).run_once() == 2

        assert states(engine, holder, retrying) == [S.AVAILABLE, S.DISCARDED]

    def test_a_duplicate_that_would_hold_its_key_when_discarded_waits(self, engine: Engine) -> None:
        """Discarding it would collide too (its unique states include discarded): it is left
        as it is, and the rest of the batch still goes through."""
        with_discarded = (*NO_RETRYABLE, "discarded")
        x = insert_unique(engine, 1, by_state=with_discarded)
        set_job(engine, x, "state = 'retryable', attempt = 1, scheduled_at = now() - interval '1s'")
        y = insert_unique(engine, 1, by_state=with_discarded)
        other = insert(engine, scheduled_at=datetime.now(UTC) + timedelta(hours=1))
        set_job(engine, other, "scheduled_at = now() - interval '1 second'")

        assert scheduler(engine).run_once() == 1

        assert states(engine, x, y, other) == [S.RETRYABLE, S.AVAILABLE, S.AVAILABLE]

    def test_non_unique_and_differently_keyed_jobs_are_all_promoted(self, engine: Engine) -> None:
        later = datetime.now(UTC) + timedelta(hours=1)
        ids = [insert(engine, scheduled_at=later) for _ in range(3)]
        ids += [insert_unique(engine, n, scheduled_at=later) for n in range(3)]
        sql(engine, "UPDATE river_job SET scheduled_at = now() - interval '1 second'")
        assert scheduler(engine).run_once() == 6
        assert states(engine, *ids) == [S.AVAILABLE] * 6

    def test_follower_changes_nothing(self, engine: Engine, listener: Listener) -> None:
        job_id = insert(engine, scheduled_at=datetime.now(UTC) + timedelta(hours=1))
        set_job(engine, job_id, "scheduled_at = now() - interval '1 second'")
        assert scheduler(engine, is_leader=follower).run_once() == 0
        assert states(engine, job_id) == [S.SCHEDULED]
        assert listener.until_marker(engine) == []

    def test_started_service_runs_only_while_leading(self, engine: Engine) -> None:
        leading = threading.Event()
        service = scheduler(engine, interval=0.05, is_leader=leading.is_set)
        first = insert(engine, scheduled_at=datetime.now(UTC) + timedelta(hours=1))
        set_job(engine, first, "scheduled_at = now() - interval '1 second'")
        service.start()
        try:
            time.sleep(0.3)  # several intervals as a follower
            assert service.runs == 0
            assert states(engine, first) == [S.SCHEDULED]

            leading.set()
            wait_until(lambda: states(engine, first) == [S.AVAILABLE], "promotion as leader")

            leading.clear()
            runs = service.runs
            second = insert(engine, scheduled_at=datetime.now(UTC) + timedelta(hours=1))
            set_job(engine, second, "scheduled_at = now() - interval '1 second'")
            time.sleep(0.3)
            assert service.runs <= runs + 1  # at most a run that had already checked
            assert states(engine, second) == [S.SCHEDULED]

            leading.set()
            wait_until(lambda: states(engine, second) == [S.AVAILABLE], "promotion again")
        finally:
            assert service.stop(WAIT)


# --- rescuer -------------------------------------------------------------------------------


def rescuer(engine: Engine, **kwargs: Any) -> JobRescuer:
    kwargs.setdefault("interval", 30.0)
    kwargs.setdefault("is_leader", leader)
    kwargs.setdefault("heartbeat_ttl", 30.0)
    kwargs.setdefault("stuck_after", 3600.0)
    # These tests look at one round; the hold-back after a term starts has tests of its own.
    kwargs.setdefault("initial_hold_back", 0.0)
    return JobRescuer(engine, **kwargs)


def add_client(
    engine: Engine, client_id: str, heartbeat_age: str, *, started_ago: str = "1 day"
) -> None:
    sql(
        engine,
        "INSERT INTO sa_river_client (id, hostname, pid, started_at, heartbeat_at) "
        "VALUES (:id, 'host', 1, now() - CAST(:started AS interval), "
        "now() - CAST(:age AS interval))",
        id=client_id,
        age=heartbeat_age,
        started=started_ago,
    )


def running_job(
    engine: Engine,
    attempted_by: list[str],
    *,
    started_ago: str = "1 minute",
    attempt: int = 1,
    max_attempts: int = 25,
    errors: int = 0,
) -> int:
    job_id = insert(engine, max_attempts=max_attempts)
    old_errors = [
        json.dumps({"at": "2024-01-01T00:00:00Z", "attempt": n, "error": "boom", "trace": ""})
        for n in range(1, errors + 1)
    ]
    set_job(
        engine,
        job_id,
        "state = 'running', attempt = :attempt, attempted_at = now() - CAST(:ago AS interval), "
        "attempted_by = :by, errors = CAST(:errors AS jsonb[])",
        attempt=attempt,
        ago=started_ago,
        by=attempted_by,
        errors=old_errors or None,
    )
    return job_id


class TestRescuer:
    def test_job_of_a_worker_with_a_stale_heartbeat_is_retried(self, engine: Engine) -> None:
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"], attempt=2, errors=1)
        before = datetime.now(UTC)

        assert rescuer(engine).run_once() == 1

        row = get(engine, job_id)
        assert row.state is S.RETRYABLE
        assert row.attempt == 2  # unchanged: the next fetch counts the next attempt
        assert row.finalized_at is None
        assert (
            before - timedelta(seconds=5)
            < row.scheduled_at
            < datetime.now(UTC) + timedelta(seconds=1)
        )
        assert [e.error for e in row.errors] == ["boom", RESCUED_WORKER_LOST]
        rescue_error = row.errors[-1]
        assert rescue_error.attempt == 2
        assert rescue_error.trace == ""
        assert abs(rescue_error.at - datetime.now(UTC)) < timedelta(seconds=30)

    def test_job_out_of_attempts_is_discarded(self, engine: Engine) -> None:
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"], attempt=3, max_attempts=3)

        assert rescuer(engine).run_once() == 1

        row = get(engine, job_id)
        assert row.state is S.DISCARDED
        assert row.finalized_at is not None
        assert [e.error for e in row.errors] == [RESCUED_WORKER_LOST]

    def test_job_with_cancellation_requested_is_cancelled(self, engine: Engine) -> None:
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"])
        set_job(engine, job_id, """metadata = '{"cancel_attempted_at": "2024-01-01"}'""")

        assert rescuer(engine).run_once() == 1

        row = get(engine, job_id)
        assert row.state is S.CANCELLED
        assert row.finalized_at is not None

    def test_job_of_a_live_worker_is_never_touched(self, engine: Engine) -> None:
        """A slow job on a heartbeating worker runs on, however long."""
        add_client(engine, "alive", "0 seconds")
        add_client(engine, "dead", "5 minutes")
        # Only the current attempt's worker (the last of attempted_by) counts.
        slow = running_job(engine, ["dead", "alive"], started_ago="2 hours")
        lost = running_job(engine, ["alive", "dead"], started_ago="2 hours")
        before = get(engine, slow)

        assert rescuer(engine, stuck_after=60.0).run_once() == 1

        assert get(engine, slow) == before
        assert states(engine, lost) == [S.RETRYABLE]

    def test_job_of_an_unknown_worker_is_rescued_only_when_stuck(self, engine: Engine) -> None:
        """River's Go workers do not heartbeat here: time alone decides, after stuck_after."""
        stuck = running_job(engine, ["go-worker"], started_ago="2 hours")
        recent = running_job(engine, ["go-worker"], started_ago="10 minutes")
        before = get(engine, recent)

        assert rescuer(engine, stuck_after=3600.0).run_once() == 1

        row = get(engine, stuck)
        assert row.state is S.RETRYABLE
        assert [e.error for e in row.errors] == [RESCUED_STUCK]
        assert get(engine, recent) == before

    def test_jobs_in_other_states_are_ignored(self, engine: Engine) -> None:
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"], started_ago="2 hours")
        set_job(engine, job_id, "state = 'retryable'")
        assert rescuer(engine, stuck_after=60.0).run_once() == 0

    def test_finishing_late_after_a_rescue_changes_nothing(self, engine: Engine) -> None:
        """The old worker's completion only applies to rows still running."""
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"])
        assert rescuer(engine).run_once() == 1
        rescued = get(engine, job_id)

        with engine.begin() as conn:
            late = AttemptOutcome.completed(job_id, rescued.attempt)
            changed = job_set_state_if_running_many(conn, [late])

        assert changed == {}
        assert get(engine, job_id) == rescued

    def test_rescues_in_batches(self, engine: Engine) -> None:
        add_client(engine, "dead", "5 minutes")
        ids = [running_job(engine, ["dead"]) for _ in range(5)]
        assert rescuer(engine, batch_size=2).run_once() == 5
        assert states(engine, *ids) == [S.RETRYABLE] * 5

    def test_removes_long_dead_heartbeat_rows_once_their_jobs_are_rescued(
        self, engine: Engine
    ) -> None:
        add_client(engine, "ancient", "1 day")
        add_client(engine, "dead", "2 minutes")  # stale, but not yet 10 TTLs
        add_client(engine, "alive", "0 seconds")
        job_id = running_job(engine, ["ancient"])

        assert rescuer(engine, heartbeat_ttl=30.0).run_once() == 1

        assert states(engine, job_id) == [S.RETRYABLE]
        with engine.connect() as conn:
            left = conn.execute(text("SELECT id FROM sa_river_client ORDER BY id")).scalars()
            assert list(left) == ["alive", "dead"]

    def test_follower_changes_nothing(self, engine: Engine) -> None:
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"], started_ago="2 hours")
        assert rescuer(engine, is_leader=follower, stuck_after=60.0).run_once() == 0
        assert states(engine, job_id) == [S.RUNNING]
        assert count(engine, "sa_river_client") == 1

    def test_jobs_of_an_earlier_process_of_a_reused_id_are_rescued_at_once(
        self, engine: Engine
    ) -> None:
        """A worker killed and started again under the same id (a fixed --id, a supervised
        child) heartbeats the same row: only its own attempts are vouched for."""
        add_client(engine, "s", "0 seconds", started_ago="10 seconds")
        predecessors = running_job(engine, ["s"], started_ago="1 minute")
        own = running_job(engine, ["s"], started_ago="5 seconds")
        before = get(engine, own)

        assert rescuer(engine).run_once() == 1

        row = get(engine, predecessors)
        assert row.state is S.RETRYABLE
        assert [e.error for e in row.errors] == [RESCUED_WORKER_LOST]
        assert get(engine, own) == before

    def test_holds_back_one_ttl_after_its_term_starts(self, engine: Engine) -> None:
        """After an outage or a leader change every heartbeat looks stale: runners get a TTL
        to be heard from before their silence counts."""
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"])
        service = rescuer(engine, heartbeat_ttl=1.0, initial_hold_back=None)

        assert service.holding_back
        assert service.run_once() == 0
        assert states(engine, job_id) == [S.RUNNING]
        wait_until(lambda: not service.holding_back, "end of the hold-back", timeout=3.0)
        assert service.run_once() == 1
        assert states(engine, job_id) == [S.RETRYABLE]

    def test_holds_back_one_ttl_after_a_failed_round(self, engine: Engine, db_url: URL) -> None:
        """A failed statement means the database (or the leader's link to it) was down, so
        the runners' heartbeats may have failed too."""
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"])
        unreachable = create_engine(db_url.set(port=1))
        try:
            service = rescuer(unreachable, heartbeat_ttl=1.0)
            with pytest.raises(sa_exc.OperationalError):
                service.run_once()
        finally:
            unreachable.dispose()
        service.engine = engine  # the database is back

        assert service.holding_back
        assert service.run_once() == 0
        assert states(engine, job_id) == [S.RUNNING]
        wait_until(lambda: not service.holding_back, "end of the hold-back", timeout=3.0)
        assert service.run_once() == 1
        assert states(engine, job_id) == [S.RETRYABLE]

    def test_holds_back_one_ttl_after_this_process_lost_the_database(self, engine: Engine) -> None:
        """The leader's own heartbeat failing means the runners' probably did too, even when
        no rescue round ran during the outage."""
        add_client(engine, "dead", "5 minutes")
        job_id = running_job(engine, ["dead"])
        trouble_at = time.monotonic()
        service = rescuer(engine, heartbeat_ttl=1.0, last_database_trouble=lambda: trouble_at)

        assert service.run_once() == 0
        assert states(engine, job_id) == [S.RUNNING]
        wait_until(lambda: not service.holding_back, "end of the hold-back", timeout=3.0)
        assert service.run_once() == 1


# --- cleaner -------------------------------------------------------------------------------


def cleaner(engine: Engine, **kwargs: Any) -> JobCleaner:
    kwargs.setdefault("interval", 30.0)
    kwargs.setdefault("is_leader", leader)
    kwargs.setdefault("completed_retention", 24 * 3600.0)
    kwargs.setdefault("cancelled_retention", 24 * 3600.0)
    kwargs.setdefault("discarded_retention", 7 * 24 * 3600.0)
    return JobCleaner(engine, **kwargs)


def finalized_job(engine: Engine, state: str, ago: str) -> int:
    job_id = insert(engine)
    set_job(
        engine,
        job_id,
        "state = CAST(:st AS river_job_state), finalized_at = now() - CAST(:ago AS interval)",
        st=state,
        ago=ago,
    )
    return job_id


def exists(engine: Engine, job_id: int) -> bool:
    return count(engine, "river_job", f"id = {int(job_id)}") == 1


class TestCleaner:
    def test_deletes_finalised_jobs_past_their_retention(self, engine: Engine) -> None:
        old = [
            finalized_job(engine, "completed", "25 hours"),
            finalized_job(engine, "cancelled", "25 hours"),
            finalized_job(engine, "discarded", "8 days"),
        ]
        kept = [
            finalized_job(engine, "completed", "23 hours"),
            finalized_job(engine, "cancelled", "1 minute"),
            finalized_job(engine, "discarded", "6 days"),
            insert(engine),
            insert(engine, scheduled_at=datetime.now(UTC) + timedelta(days=30)),
        ]
        service = cleaner(engine)

        assert service.run_once() == 3

        assert [exists(engine, i) for i in old] == [False] * 3
        assert [exists(engine, i) for i in kept] == [True] * 5
        assert service.deleted == {S.COMPLETED: 1, S.CANCELLED: 1, S.DISCARDED: 1}
        assert service.run_once() == 0

    def test_zero_retention_keeps_that_state(self, engine: Engine) -> None:
        completed = finalized_job(engine, "completed", "400 days")
        cancelled = finalized_job(engine, "cancelled", "400 days")
        discarded = finalized_job(engine, "discarded", "400 days")

        assert cleaner(engine, completed_retention=0, discarded_retention=0).run_once() == 1

        assert [exists(engine, i) for i in (completed, cancelled, discarded)] == [
            True,
            False,
            True,
        ]

    def test_deletes_in_batches_checking_leadership_before_each(self, engine: Engine) -> None:
        ids = [finalized_job(engine, "completed", "2 days") for _ in range(10)]
        assert cleaner(engine, batch_size=3).run_once() == 10  # 3 + 3 + 3 + 1
        assert not any(exists(engine, i) for i in ids)

        ids = [finalized_job(engine, "completed", "2 days") for _ in range(10)]
        answers = iter([True, False])  # leadership lost after the first batch

        def losing() -> bool:
            return next(answers, False)

        assert cleaner(engine, batch_size=3, is_leader=losing).run_once() == 3
        assert sum(exists(engine, i) for i in ids) == 7

    def test_follower_changes_nothing(self, engine: Engine) -> None:
        job_id = finalized_job(engine, "completed", "2 days")
        assert cleaner(engine, is_leader=follower).run_once() == 0
        assert exists(engine, job_id)

    def test_delete_uses_the_state_and_finalized_at_index(self, engine: Engine) -> None:
        """With many retained rows the delete is an index scan, not a table scan."""
        sql(
            engine,
            """
            INSERT INTO river_job (kind, args, state, finalized_at, attempt, attempted_at)
            SELECT 'bulk', '{}',
                   CAST(CASE n % 4 WHEN 0 THEN 'completed' WHEN 1 THEN 'cancelled'
                                   WHEN 2 THEN 'discarded' ELSE 'available' END
                        AS river_job_state),
                   CASE WHEN n % 4 = 3 THEN NULL
                        ELSE now() - make_interval(mins => n % 600) END,
                   1, now()
            FROM generate_series(1, 40000) AS n
            """,
        )
        # A few hundred completed jobs are old enough; 30,000 finalised rows are not.
        sql(
            engine,
            "UPDATE river_job SET finalized_at = now() - interval '3 days' "
            "WHERE state = 'completed' AND id % 100 = 0",
        )
        sql(engine, "ANALYZE river_job")
        old = count(engine, "river_job", "finalized_at < now() - interval '1 day'")
        assert 300 < old < 500

        captured: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
            if statement.lstrip().upper().startswith("DELETE FROM RIVER_JOB"):
                captured.append((statement, params))

        event.listen(engine, "before_cursor_execute", capture)
        try:
            with engine.begin() as conn:
                deleted = job_delete_finalized(
                    conn, state=S.COMPLETED, older_than_seconds=24 * 3600, limit=10_000
                )
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        assert deleted == old
        assert len(captured) == 1

        statement, params = captured[0]
        with engine.connect() as conn:
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params))
        assert "river_job_state_and_finalized_at_index" in plan, plan
        assert "Seq Scan" not in plan, plan


# --- queue cleaner -------------------------------------------------------------------------


def add_queue(engine: Engine, name: str, idle: str) -> None:
    sql(
        engine,
        "INSERT INTO river_queue (name, updated_at) VALUES (:n, now() - CAST(:idle AS interval))",
        n=name,
        idle=idle,
    )


def queue_names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT name FROM river_queue ORDER BY name")).scalars())


class TestQueueCleaner:
    def test_removes_idle_queues_and_keeps_fresh_ones(self, engine: Engine) -> None:
        for name in ("idle1", "idle2", "idle3"):
            add_queue(engine, name, "25 hours")
        add_queue(engine, "fresh", "1 minute")
        add_queue(engine, "recent", "23 hours")
        service = QueueCleaner(
            engine, interval=60.0, is_leader=leader, retention=24 * 3600.0, batch_size=2
        )

        assert service.run_once() == 3

        assert queue_names(engine) == ["fresh", "recent"]

    def test_zero_retention_and_follower_keep_everything(self, engine: Engine) -> None:
        add_queue(engine, "idle", "400 days")
        keep_all = QueueCleaner(engine, interval=60.0, is_leader=leader, retention=0)
        follows = QueueCleaner(engine, interval=60.0, is_leader=follower, retention=3600.0)
        assert keep_all.run_once() == 0
        assert follows.run_once() == 0
        assert queue_names(engine) == ["idle"]
