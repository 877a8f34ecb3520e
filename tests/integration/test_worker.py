"""The worker runtime against real PostgreSQL: fetch, execute, complete, retry, time out,
snooze, cancel, shut down, wake on NOTIFY, and run on a pool of its own.

Each test gets a fresh migrated database (``db_url``/``engine``) and a worker started through
``running_worker``, which always stops it. Handlers talk to the test through thread-safe
events and lists; every wait is bounded (``wait_until``), so a hang fails instead of blocking.
Retry policies are overridden per kind with small delays to keep the suite fast.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from _worker_helpers import (
    count_states,
    db_now,
    insert_job,
    job,
    running_worker,
    stop_bounded,
    wait_for_state,
    wait_until,
)
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

import sa_river
from sa_river import (
    ConfigError,
    InsertOpts,
    Job,
    JobArgs,
    JobCancel,
    JobRow,
    JobSnooze,
    JobState,
    Worker,
    Workers,
)
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.worker.completer import BatchCompleter

S = JobState


class Greet(JobArgs, kind="greet"):
    name: str


def no_retry_delay(attempt: int) -> timedelta:
    return timedelta(0)


def one_second(attempt: int) -> timedelta:
    return timedelta(seconds=1)


def a_minute(attempt: int) -> timedelta:
    return timedelta(minutes=1)


def assert_nothing_running(engine: Engine) -> None:
    assert count_states(engine).get("running", 0) == 0, count_states(engine)


# --- completing jobs ---------------------------------------------------------------------------


class TestHandlers:
    def test_sync_handler_completes_a_job(self, db_url: URL, engine: Engine) -> None:
        seen: list[tuple[int, int, str, str]] = []
        workers = Workers()

        @workers.handler(Greet)
        def greet(job: Job[Greet]) -> None:
            seen.append((job.id, job.attempt, job.args.name, threading.current_thread().name))

        job_id = sa_river.insert(engine, Greet(name="ada")).job.id
        with running_worker(db_url, workers) as worker:
            row = wait_for_state(engine, job_id, S.COMPLETED)
        assert row.finalized_at is not None
        assert row.attempt == 1
        assert row.attempted_at is not None
        assert worker.client_id in row.attempted_by
        assert row.errors == []
        assert len(seen) == 1
        assert seen[0][:3] == (job_id, 1, "ada")
        assert seen[0][3].startswith("sa_river.executor")

    def test_async_handler_completes_a_job(self, db_url: URL, engine: Engine) -> None:
        seen: list[tuple[int, int, str]] = []
        workers = Workers()

        @workers.handler(Greet)
        async def greet(job: Job[Greet]) -> None:
            await asyncio.sleep(0.01)
            seen.append((job.id, job.attempt, job.args.name))

        job_id = sa_river.insert(engine, Greet(name="grace")).job.id
        with running_worker(db_url, workers) as worker:
            row = wait_for_state(engine, job_id, S.COMPLETED)
        assert row.finalized_at is not None
        assert row.attempt == 1
        assert row.attempted_by == [worker.client_id]
        assert seen == [(job_id, 1, "grace")]

    def test_sync_and_async_handlers_run_side_by_side(self, db_url: URL, engine: Engine) -> None:
        """Async jobs run concurrently on the loop while sync jobs hold threads."""
        workers = Workers()

        @workers.handler("sleepy_async")
        async def sleepy_async(job: Job[dict[str, Any]]) -> None:
            await asyncio.sleep(0.4)

        @workers.handler("sleepy_sync")
        def sleepy_sync(job: Job[dict[str, Any]]) -> None:
            time.sleep(0.4)

        sa_river.insert_many(engine, [("sleepy_async", {})] * 8 + [("sleepy_sync", {})] * 4)
        started = time.monotonic()
        with running_worker(db_url, workers, {"default": 12}):
            wait_until(lambda: count_states(engine) == {"completed": 12}, message="12 completed")
            elapsed = time.monotonic() - started
        # Run one after another they would take 12 * 0.4 = 4.8 s.
        assert elapsed < 3.0, elapsed


# --- failures, retries, discards ---------------------------------------------------------------


class TestFailures:
    def test_error_is_recorded_and_retried_after_the_kinds_backoff(
        self, db_url: URL, engine: Engine
    ) -> None:
        attempts: list[int] = []
        workers = Workers()

        @workers.handler("flaky", retry=one_second)
        def flaky(job: Job[dict[str, Any]]) -> None:
            attempts.append(job.attempt)
            if job.attempt == 1:
                raise ValueError("boom on the first try")

        job_id = insert_job(engine, "flaky")
        with running_worker(db_url, workers):
            # A retry due within scheduler_interval (5 s) goes straight back to available,
            # with its scheduled_at in the future.
            def failed_once() -> JobRow | None:
                row = job(engine, job_id)
                return row if row.errors and row.state is not S.RUNNING else None

            row = wait_until(failed_once, message="the first attempt's error")
            now = db_now(engine)
            assert row.state is S.AVAILABLE
            assert row.attempt == 1
            assert row.finalized_at is None
            assert len(row.errors) == 1
            error = row.errors[0]
            assert error.attempt == 1
            assert error.error == "ValueError: boom on the first try"
            assert "Traceback" in error.trace
            assert "boom on the first try" in error.trace
            assert abs((error.at - now).total_seconds()) < 5
            delay = (row.scheduled_at - now).total_seconds()
            assert 0 < delay <= 1.0, delay
            retried = wait_for_state(engine, job_id, S.COMPLETED)
        assert attempts == [1, 2]
        assert retried.attempt == 2
        assert len(retried.errors) == 1
        assert len(retried.attempted_by) == 2
        # It did not run before its scheduled time.
        assert retried.attempted_at is not None
        assert retried.attempted_at >= row.scheduled_at

    def test_default_policy_long_backoff_is_retryable(self, db_url: URL, engine: Engine) -> None:
        """River's default backoff: attempt^4 seconds ±10%; 81 s for the third attempt is
        beyond the scheduler interval, so the job waits as ``retryable``."""
        workers = Workers()

        @workers.handler("always_fails")
        def always_fails(job: Job[dict[str, Any]]) -> None:
            raise RuntimeError("nope")

        job_id = insert_job(engine, "always_fails")
        with engine.begin() as conn:  # two earlier attempts: the next one is the third
            conn.execute(text("UPDATE river_job SET attempt = 2 WHERE id = :id"), {"id": job_id})
        with running_worker(db_url, workers):
            row = wait_for_state(engine, job_id, S.RETRYABLE)
            now = db_now(engine)
        assert row.attempt == 3
        assert row.finalized_at is None
        assert [e.attempt for e in row.errors] == [3]
        assert row.errors[0].error == "RuntimeError: nope"
        delay = (row.scheduled_at - now).total_seconds()
        assert 81 * 0.9 - 5 <= delay <= 81 * 1.1, delay

    def test_retries_reach_discarded_at_max_attempts(self, db_url: URL, engine: Engine) -> None:
        calls: list[int] = []
        workers = Workers()

        @workers.handler("doomed", retry=no_retry_delay)
        def doomed(job: Job[dict[str, Any]]) -> None:
            calls.append(job.attempt)
            raise RuntimeError(f"failure {job.attempt}")

        job_id = insert_job(engine, "doomed", opts=InsertOpts(max_attempts=3))
        with running_worker(db_url, workers) as worker:
            row = wait_for_state(engine, job_id, S.DISCARDED)
            time.sleep(0.3)  # a discarded job is never fetched again
        assert calls == [1, 2, 3]
        assert row.attempt == 3
        assert row.finalized_at is not None
        assert [e.attempt for e in row.errors] == [1, 2, 3]
        assert [e.error for e in row.errors] == [f"RuntimeError: failure {n}" for n in (1, 2, 3)]
        assert row.attempted_by == [worker.client_id] * 3
        assert job(engine, job_id).state is S.DISCARDED

    def test_unknown_kind_fails_and_follows_the_retry_rules(
        self, db_url: URL, engine: Engine
    ) -> None:
        workers = Workers()

        @workers.handler("known")
        def known(job: Job[dict[str, Any]]) -> None:
            pass

        unknown_id = insert_job(engine, "nobody_handles_me", opts=InsertOpts(max_attempts=2))
        known_id = insert_job(engine, "known")
        with running_worker(db_url, workers, retry_policy=no_retry_delay):
            row = wait_for_state(engine, unknown_id, S.DISCARDED)
            wait_for_state(engine, known_id, S.COMPLETED)
        assert row.attempt == 2
        assert [e.attempt for e in row.errors] == [1, 2]
        for error in row.errors:
            assert "no handler registered for kind" in error.error
            assert "nobody_handles_me" in error.error

    def test_unknown_kind_is_retryable_with_a_long_backoff(
        self, db_url: URL, engine: Engine
    ) -> None:
        workers = Workers()
        job_id = insert_job(engine, "unregistered")
        with running_worker(db_url, workers, retry_policy=a_minute):
            row = wait_for_state(engine, job_id, S.RETRYABLE)
        assert row.attempt == 1
        assert row.errors[0].error == "no handler registered for kind 'unregistered'"

    def test_args_that_do_not_decode_fail_the_attempt(self, db_url: URL, engine: Engine) -> None:
        workers = Workers()

        @workers.handler(Greet)
        def greet(job: Job[Greet]) -> None:  # pragma: no cover - never reached
            raise AssertionError("must not run")

        job_id = insert_job(engine, "greet", {"nom": "missing name"}, InsertOpts(max_attempts=1))
        with running_worker(db_url, workers):
            row = wait_for_state(engine, job_id, S.DISCARDED)
        assert "Greet" in row.errors[0].error


# --- cancel and snooze from the handler --------------------------------------------------------


class TestCancelAndSnooze:
    def test_job_cancel_cancels_for_good(self, db_url: URL, engine: Engine) -> None:
        workers = Workers()

        @workers.handler("cancel_me")
        def cancel_me(job: Job[dict[str, Any]]) -> None:
            raise JobCancel("the order was withdrawn")

        job_id = insert_job(engine, "cancel_me")
        with running_worker(db_url, workers):
            row = wait_for_state(engine, job_id, S.CANCELLED)
        assert row.finalized_at is not None
        assert row.attempt == 1
        assert len(row.errors) == 1
        assert "the order was withdrawn" in row.errors[0].error

    def test_async_job_cancel(self, db_url: URL, engine: Engine) -> None:
        workers = Workers()

        @workers.handler("cancel_me_async")
        async def cancel_me(job: Job[dict[str, Any]]) -> None:
            raise JobCancel("no longer needed")

        job_id = insert_job(engine, "cancel_me_async")
        with running_worker(db_url, workers):
            row = wait_for_state(engine, job_id, S.CANCELLED)
        assert row.finalized_at is not None

    def test_short_snooze_runs_again_without_counting_the_attempt(
        self, db_url: URL, engine: Engine
    ) -> None:
        runs: list[tuple[int, dict[str, Any]]] = []
        workers = Workers()

        @workers.handler("snoozer")
        def snoozer(job: Job[dict[str, Any]]) -> None:
            runs.append((job.attempt, dict(job.metadata)))
            if len(runs) == 1:
                raise JobSnooze(timedelta(milliseconds=300))

        job_id = insert_job(engine, "snoozer")
        with running_worker(db_url, workers):
            row = wait_for_state(engine, job_id, S.COMPLETED)
        assert [attempt for attempt, _ in runs] == [1, 1]
        assert "snoozes" not in runs[0][1]
        assert runs[1][1]["snoozes"] == 1
        assert row.attempt == 1
        assert row.errors == []
        assert row.metadata["snoozes"] == 1
        assert len(row.attempted_by) == 2

    def test_long_snooze_is_scheduled(self, db_url: URL, engine: Engine) -> None:
        workers = Workers()

        @workers.handler("long_snoozer")
        async def long_snoozer(job: Job[dict[str, Any]]) -> None:
            raise JobSnooze(60)

        job_id = insert_job(engine, "long_snoozer")
        with running_worker(db_url, workers):
            row = wait_for_state(engine, job_id, S.SCHEDULED)
            now = db_now(engine)
        assert row.attempt == 0
        assert row.errors == []
        assert row.finalized_at is None
        assert row.metadata == {"snoozes": 1}
        assert 55 <= (row.scheduled_at - now).total_seconds() <= 60


# --- timeouts ----------------------------------------------------------------------------------


class TestTimeouts:
    def test_async_handler_past_its_timeout_is_cancelled(self, db_url: URL, engine: Engine) -> None:
        cancelled = threading.Event()
        workers = Workers()

        @workers.handler("slow_async", timeout=timedelta(seconds=0.3))
        async def slow_async(job: Job[dict[str, Any]]) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        job_id = insert_job(engine, "slow_async", opts=InsertOpts(max_attempts=1))
        started = time.monotonic()
        with running_worker(db_url, workers):
            row = wait_for_state(engine, job_id, S.DISCARDED, timeout=10)
        assert time.monotonic() - started < 5
        assert cancelled.is_set()
        assert row.errors[0].error == "job timed out after 0.3s"

    def test_default_timeout_applies_and_none_disables_it(
        self, db_url: URL, engine: Engine
    ) -> None:
        workers = Workers()

        @workers.handler("uses_default")
        async def uses_default(job: Job[dict[str, Any]]) -> None:
            await asyncio.sleep(30)

        @workers.handler("no_timeout", timeout=None)
        async def no_timeout(job: Job[dict[str, Any]]) -> None:
            await asyncio.sleep(0.6)

        defaulted = insert_job(engine, "uses_default", opts=InsertOpts(max_attempts=1))
        unlimited = insert_job(engine, "no_timeout")
        with running_worker(db_url, workers, job_timeout=timedelta(seconds=0.2)):
            row = wait_for_state(engine, defaulted, S.DISCARDED, timeout=10)
            assert row.errors[0].error == "job timed out after 0.2s"
            wait_for_state(engine, unlimited, S.COMPLETED, timeout=10)

    def test_sync_handler_past_its_timeout_is_abandoned_and_its_slot_freed(
        self, db_url: URL, engine: Engine
    ) -> None:
        release = threading.Event()
        finished_late = threading.Event()
        workers = Workers()

        @workers.handler("stuck", timeout=timedelta(seconds=0.3))
        def stuck(job: Job[dict[str, Any]]) -> None:
            release.wait(30)
            finished_late.set()

        @workers.handler("after_stuck")
        def after_stuck(job: Job[dict[str, Any]]) -> None:
            pass

        stuck_id = insert_job(engine, "stuck", opts=InsertOpts(max_attempts=1))
        next_id = insert_job(engine, "after_stuck")
        try:
            with running_worker(db_url, workers, {"default": 1}):
                row = wait_for_state(engine, stuck_id, S.DISCARDED, timeout=10)
                assert row.errors[0].error == "job timed out after 0.3s"
                # The only slot is free again although the stuck thread still runs.
                wait_for_state(engine, next_id, S.COMPLETED, timeout=10)
                assert not release.is_set()
                # The abandoned handler returning later changes nothing.
                release.set()
                assert finished_late.wait(5)
                time.sleep(0.3)
                assert job(engine, stuck_id).state is S.DISCARDED
        finally:
            release.set()


# --- cancel_job on running jobs ----------------------------------------------------------------


class TestCancelRunning:
    def test_cancel_job_cancels_a_running_async_job_via_notify(
        self, db_url: URL, engine: Engine
    ) -> None:
        started = threading.Event()
        cancelled = threading.Event()
        workers = Workers()

        @workers.handler("long_async")
        async def long_async(job: Job[dict[str, Any]]) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        job_id = insert_job(engine, "long_async")
        with running_worker(db_url, workers, fetch_poll_interval=10):
            assert started.wait(10)
            before = sa_river.cancel_job(engine, job_id)
            assert before is not None
            assert before.state is S.RUNNING  # cancellation is cooperative
            assert "cancel_attempted_at" in before.metadata
            began = time.monotonic()
            row = wait_for_state(engine, job_id, S.CANCELLED, timeout=10)
            assert time.monotonic() - began < 3
        assert cancelled.is_set()
        assert row.finalized_at is not None

    def test_cancel_job_asks_a_running_sync_job_to_stop(self, db_url: URL, engine: Engine) -> None:
        started = threading.Event()
        workers = Workers()

        @workers.handler("long_sync")
        def long_sync(job: Job[dict[str, Any]]) -> None:
            started.set()
            if job.cancel_requested.wait(10):
                raise JobCancel("saw the request")

        job_id = insert_job(engine, "long_sync")
        with running_worker(db_url, workers):
            assert started.wait(10)
            sa_river.cancel_job(engine, job_id)
            row = wait_for_state(engine, job_id, S.CANCELLED, timeout=10)
        assert "saw the request" in row.errors[0].error

    def test_a_failure_after_cancel_was_requested_cancels(
        self, db_url: URL, engine: Engine
    ) -> None:
        """A running job whose cancellation was requested is not retried when it fails, even
        when its worker missed the notification (poll-only)."""
        started = threading.Event()
        go_on = threading.Event()
        workers = Workers()

        @workers.handler("fails_later", retry=no_retry_delay)
        def fails_later(job: Job[dict[str, Any]]) -> None:
            started.set()
            go_on.wait(10)
            raise RuntimeError("failed anyway")

        job_id = insert_job(engine, "fails_later")
        try:
            with running_worker(db_url, workers, poll_only=True):
                assert started.wait(10)
                sa_river.cancel_job(engine, job_id)
                go_on.set()
                row = wait_for_state(engine, job_id, S.CANCELLED, S.AVAILABLE, timeout=10)
        finally:
            go_on.set()
        assert row.state is S.CANCELLED
        assert row.finalized_at is not None


# --- complete_in: the handler's own transaction ------------------------------------------------


@pytest.fixture
def effects(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE handler_effects (job_id bigint PRIMARY KEY)"))
    return engine


def effect_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT job_id FROM handler_effects")).scalars())


class TestCompleteIn:
    @staticmethod
    def _workers(app_engine: Engine, observed: dict[str, Any]) -> Workers:
        workers = Workers()

        @workers.handler("charge", retry=a_minute)
        def charge(job: Job[dict[str, Any]]) -> None:
            with Session(app_engine) as session, session.begin():
                session.execute(
                    text("INSERT INTO handler_effects (job_id) VALUES (:id)"), {"id": job.id}
                )
                observed["completed_in"] = sa_river.complete_in(session, job)
                # Not visible outside the transaction until it commits.
                observed["seen_outside"] = sa_river.get_job(app_engine, job.id)
                if job.args.get("fail"):
                    raise RuntimeError("failed after complete_in")

        return workers

    def test_commit_completes_the_job_with_the_handlers_writes(
        self, db_url: URL, effects: Engine
    ) -> None:
        observed: dict[str, Any] = {}
        job_id = insert_job(effects, "charge")
        with running_worker(db_url, self._workers(effects, observed)):
            row = wait_for_state(effects, job_id, S.COMPLETED)
            time.sleep(0.3)  # the completer's own "completed" finds the row no longer running
        assert observed["completed_in"] is True
        assert observed["seen_outside"].state is S.RUNNING
        assert effect_ids(effects) == [job_id]
        final = job(effects, job_id)
        assert final.state is S.COMPLETED
        assert final.finalized_at == row.finalized_at
        assert final.errors == []

    def test_rollback_leaves_neither_the_writes_nor_the_completion(
        self, db_url: URL, effects: Engine
    ) -> None:
        observed: dict[str, Any] = {}
        job_id = insert_job(effects, "charge", {"fail": True})
        with running_worker(db_url, self._workers(effects, observed)):
            row = wait_for_state(effects, job_id, S.RETRYABLE)
        assert observed["completed_in"] is True
        assert effect_ids(effects) == []
        assert row.finalized_at is None
        assert row.errors[0].error == "RuntimeError: failed after complete_in"

    def test_complete_in_on_a_job_that_is_not_running_is_false(self, engine: Engine) -> None:
        job_id = insert_job(engine, "idle")
        with Session(engine) as session, session.begin():
            assert sa_river.complete_in(session, job(engine, job_id)) is False
        assert job(engine, job_id).state is S.AVAILABLE


# --- the completer: outcomes only on rows still running -------------------------------------------


class TestCompleter:
    def _running_job(self, engine: Engine, kind: str = "x") -> int:
        job_id = insert_job(engine, kind)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() "
                    "WHERE id = :id"
                ),
                {"id": job_id},
            )
        return job_id

    def test_set_state_only_touches_running_rows(self, engine: Engine) -> None:
        done = self._running_job(engine)
        running = self._running_job(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE river_job SET state = 'completed', finalized_at = now() WHERE id = :id"
                ),
                {"id": done},
            )
        before = job(engine, done)
        error = '{"at": "2024-01-01T00:00:00+00:00", "attempt": 1, "error": "late", "trace": ""}'
        with engine.begin() as conn:
            changed = job_set_state_if_running_many(
                conn,
                [
                    AttemptOutcome.discarded(done, 1, error=error),
                    AttemptOutcome.discarded(running, 1, error=error),
                ],
            )
        assert changed == {running: S.DISCARDED}
        assert job(engine, done) == before
        discarded = job(engine, running)
        assert discarded.finalized_at is not None
        assert [e.error for e in discarded.errors] == ["late"]

    def test_batch_completer_skips_rows_no_longer_running(self, engine: Engine) -> None:
        rescued = self._running_job(engine)
        mine = [self._running_job(engine) for _ in range(250)]
        with engine.begin() as conn:  # someone else decided about this one meanwhile
            conn.execute(
                text("UPDATE river_job SET state = 'available', attempt = 0 WHERE id = :id"),
                {"id": rescued},
            )
        completer = BatchCompleter(engine, flush_interval=0.05, batch_size=100)
        completer.start()
        try:
            completer.add(AttemptOutcome.completed(rescued, 1))
            for job_id in mine:
                completer.add(AttemptOutcome.completed(job_id, 1))
            assert completer.wait_flushed(10)
        finally:
            assert completer.stop(10)
        assert completer.completed_count == 251
        assert count_states(engine) == {"completed": 250, "available": 1}
        assert job(engine, rescued).finalized_at is None


# --- shutdown ----------------------------------------------------------------------------------


class TestShutdown:
    def test_a_stop_during_start_waits_for_it_and_stops_everything(self, db_url: URL) -> None:
        """A SIGTERM arriving while the worker starts (its stopper thread racing the start)
        must neither fail nor leave a service running."""
        for _ in range(5):
            worker = Worker(db_url, Workers(), {"default": 1}, fetch_poll_interval=0.2)
            starting = threading.Thread(target=worker.start)
            starting.start()
            took = stop_bounded(worker)
            starting.join(10)
            assert not starting.is_alive()
            assert took < 10
            assert worker.stopped.is_set()
            services = [worker._completer, worker._heartbeat, *worker._producers.values()]
            if worker._elector is not None:
                services.append(worker._elector)
            assert all(s.stopped.is_set() or not s.started.is_set() for s in services)

    def test_stop_lets_a_running_sync_job_finish(self, db_url: URL, engine: Engine) -> None:
        started = threading.Event()
        workers = Workers()

        @workers.handler("half_second")
        def half_second(job: Job[dict[str, Any]]) -> None:
            started.set()
            time.sleep(0.5)

        job_id = insert_job(engine, "half_second")
        others = [insert_job(engine, "half_second", opts=InsertOpts(queue="other"))]
        worker = Worker(db_url, workers, {"default": 1}, fetch_poll_interval=0.2)
        worker.start()
        try:
            assert started.wait(10)
        finally:
            took = stop_bounded(worker)
        assert took < 5
        row = job(engine, job_id)
        assert row.state is S.COMPLETED
        assert row.attempt == 1
        assert_nothing_running(engine)
        assert job(engine, others[0]).state is S.AVAILABLE  # not a queue of this worker
        assert worker.stopped.is_set()

    def test_stop_returns_unfinished_jobs_to_available(self, db_url: URL, engine: Engine) -> None:
        started = threading.Event()
        cancelled = threading.Event()
        workers = Workers()

        @workers.handler("very_long")
        async def very_long(job: Job[dict[str, Any]]) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        job_id = insert_job(engine, "very_long")
        worker = Worker(db_url, workers, shutdown_timeout=0.3, fetch_poll_interval=0.2)
        worker.start()
        try:
            assert started.wait(10)
            assert job(engine, job_id).state is S.RUNNING
        finally:
            took = stop_bounded(worker)
        assert took < 5
        row = job(engine, job_id)
        assert row.state is S.AVAILABLE
        assert row.attempt == 0
        assert row.errors == []
        assert row.finalized_at is None
        assert_nothing_running(engine)
        assert cancelled.wait(2), "the async handler was not cancelled"

    def test_stop_hard_releases_at_once(self, db_url: URL, engine: Engine) -> None:
        started = threading.Event()
        release = threading.Event()
        workers = Workers()

        @workers.handler("stubborn")
        def stubborn(job: Job[dict[str, Any]]) -> None:
            started.set()
            release.wait(30)

        job_id = insert_job(engine, "stubborn")
        worker = Worker(db_url, workers, shutdown_timeout=30, fetch_poll_interval=0.2)
        worker.start()
        try:
            assert started.wait(10)
            began = time.monotonic()
            worker.stop_hard()
            assert time.monotonic() - began < 5
            row = job(engine, job_id)
            assert row.state is S.AVAILABLE
            assert row.attempt == 0
        finally:
            release.set()
            stop_bounded(worker)

    def test_stop_is_idempotent_and_safe_before_start(self, db_url: URL) -> None:
        never_started = Worker(db_url, Workers())
        never_started.stop()
        assert never_started.stopped.is_set()
        worker = Worker(db_url, Workers(), fetch_poll_interval=0.2)
        worker.start()
        stop_bounded(worker)
        stop_bounded(worker)


# --- waking up: NOTIFY and polling -------------------------------------------------------------


class TestWakeUp:
    def test_notify_wakes_an_idle_worker_long_before_the_poll(
        self, db_url: URL, engine: Engine
    ) -> None:
        workers = Workers()

        @workers.handler("ping")
        def ping(job: Job[dict[str, Any]]) -> None:
            pass

        with running_worker(db_url, workers, fetch_poll_interval=10) as worker:
            assert worker._notifier is not None
            time.sleep(0.5)  # the start-up fetch is done; the next poll is ~10 s away
            began = time.monotonic()
            job_id = insert_job(engine, "ping")
            row = wait_for_state(engine, job_id, S.COMPLETED, timeout=10)
            took = time.monotonic() - began
        assert took < 2, took
        assert row.attempted_at is not None
        assert (row.attempted_at - row.created_at).total_seconds() < 2

    def test_poll_only_mode_works_jobs_without_listening(self, db_url: URL, engine: Engine) -> None:
        workers = Workers()

        @workers.handler("ping")
        def ping(job: Job[dict[str, Any]]) -> None:
            pass

        with running_worker(db_url, workers, poll_only=True, fetch_poll_interval=0.2) as worker:
            assert worker._notifier is None
            assert worker.wait_listening(0)
            time.sleep(0.3)
            ids = [insert_job(engine, "ping") for _ in range(3)]
            for job_id in ids:
                wait_for_state(engine, job_id, S.COMPLETED, timeout=10)

    def test_a_backlog_larger_than_the_limit_is_drained(self, db_url: URL, engine: Engine) -> None:
        workers = Workers()
        concurrent: list[int] = [0, 0]
        lock = threading.Lock()

        @workers.handler("tiny")
        def tiny(job: Job[dict[str, Any]]) -> None:
            with lock:
                concurrent[0] += 1
                concurrent[1] = max(concurrent[1], concurrent[0])
            time.sleep(0.002)
            with lock:
                concurrent[0] -= 1

        sa_river.insert_many_fast(engine, [("tiny", {})] * 300)
        with running_worker(db_url, workers, {"default": 3}, fetch_poll_interval=5):
            wait_until(lambda: count_states(engine) == {"completed": 300}, message="300 done")
        assert concurrent[1] <= 3

    def test_the_listener_reconnects_after_losing_its_connection(
        self, db_url: URL, engine: Engine
    ) -> None:
        workers = Workers()

        @workers.handler("ping")
        def ping(job: Job[dict[str, Any]]) -> None:
            pass

        listeners = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
        with running_worker(db_url, workers, fetch_poll_interval=10) as worker:
            [old_pid] = wait_until(
                lambda: _scalars(engine, listeners), 10, message="the LISTEN backend"
            )
            with engine.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})
            wait_until(
                lambda: (pids := _scalars(engine, listeners)) and old_pid not in pids,
                10,
                message="a new LISTEN backend",
            )
            assert worker.wait_listening(5)
            time.sleep(0.3)  # the catch-up fetch after reconnecting is done
            began = time.monotonic()
            job_id = insert_job(engine, "ping")
            wait_for_state(engine, job_id, S.COMPLETED, timeout=10)
            assert time.monotonic() - began < 2

    def test_work_goes_on_after_every_backend_is_terminated(
        self, db_url: URL, engine: Engine
    ) -> None:
        workers = Workers()

        @workers.handler("ping")
        def ping(job: Job[dict[str, Any]]) -> None:
            pass

        with running_worker(db_url, workers) as worker:
            first = insert_job(engine, "ping")
            wait_for_state(engine, first, S.COMPLETED)
            with engine.begin() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert killed >= 1
            engine.dispose()  # the test's own pooled connections may have been among them
            ids = [insert_job(engine, "ping") for _ in range(5)]
            for job_id in ids:
                wait_for_state(engine, job_id, S.COMPLETED, timeout=20)
            assert worker.wait_listening(10)

    def test_jobs_are_fetched_by_priority_then_time_then_id(
        self, db_url: URL, engine: Engine
    ) -> None:
        order: list[str] = []
        workers = Workers()

        @workers.handler("ordered")
        def ordered(job: Job[dict[str, Any]]) -> None:
            order.append(job.args["name"])

        for name, priority in [("p4", 4), ("p1-a", 1), ("p2", 2), ("p1-b", 1), ("p3", 3)]:
            insert_job(engine, "ordered", {"name": name}, InsertOpts(priority=priority))
        with running_worker(db_url, workers, {"default": 1}):
            wait_until(lambda: len(order) == 5, message="5 jobs run")
        assert order == ["p1-a", "p1-b", "p2", "p3", "p4"]


def test_heartbeat_keeps_the_worked_queues_fresh(db_url: URL, engine: Engine) -> None:
    def updated_at() -> dict[str, Any]:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT name, updated_at FROM river_queue")).all())

    with running_worker(db_url, Workers(), {"default": 1, "mail": 1}, heartbeat_interval=0.2):
        first = wait_until(updated_at, 10, message="river_queue rows")
        assert set(first) == {"default", "mail"}
        wait_until(
            lambda: all(t > first[name] for name, t in updated_at().items()),
            10,
            message="a second heartbeat",
        )


def _scalars(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).scalars())


# --- the worker's own pool ------------------------------------------------------------------------


def test_worker_works_while_the_applications_pool_is_exhausted(db_url: URL, engine: Engine) -> None:
    app_engine = create_engine(db_url, pool_size=2, max_overflow=0, pool_timeout=0.5)
    held = [app_engine.connect() for _ in range(2)]
    try:
        for conn in held:
            conn.begin()
            conn.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeoutError):
            app_engine.connect()

        workers = Workers()

        @workers.handler("while_exhausted")
        def while_exhausted(job: Job[dict[str, Any]]) -> None:
            pass

        ids = [insert_job(engine, "while_exhausted") for _ in range(5)]
        with running_worker(app_engine, workers) as worker:
            assert worker.engine is not app_engine
            for job_id in ids:
                wait_for_state(engine, job_id, S.COMPLETED, timeout=15)
            assert app_engine.pool.checkedout() == 2  # type: ignore[attr-defined]
    finally:
        for conn in held:
            conn.close()
        app_engine.dispose()


# --- configuration errors ----------------------------------------------------------------------


class TestConfigErrors:
    @pytest.mark.parametrize(
        "url",
        [
            "not a url",
            "",
            "postgresql+psycopg://user@host:notaport/db",
            "sqlite:///jobs.db",
            "mysql+pymysql://user@host/db",
        ],
    )
    def test_bad_database_url_names_database_url(self, url: str) -> None:
        with pytest.raises(ConfigError) as info:
            Worker(url, Workers())
        assert info.value.field == "database_url"
        assert "database_url" in str(info.value)

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql+psycopg://user:s3cret@host:notaport/db",
            "postgresql+psycopg://user:s3cr@t@host:notaport/db",
        ],
    )
    def test_bad_database_url_error_hides_the_password(self, url: str) -> None:
        with pytest.raises(ConfigError) as info:
            Worker(url, Workers())
        assert "s3cr" not in str(info.value)
        assert "user:***@" in str(info.value)

    def test_a_non_url_names_database_url(self) -> None:
        with pytest.raises(ConfigError) as info:
            Worker(42, Workers())  # type: ignore[arg-type]
        assert info.value.field == "database_url"

    def test_postgres_scheme_is_postgresql(self) -> None:
        worker = Worker("postgres://user@localhost/app", Workers())
        assert worker.url.drivername == "postgresql+psycopg"
        worker.stop()

    @pytest.mark.parametrize(
        "queues",
        [
            {},
            {"default": 0},
            {"default": -1},
            {"default": "10"},
            {"default": True},
            {"": 1},
            {"x" * 128: 1},
            {1: 1},
            ["default"],
            "default",
        ],
    )
    def test_bad_queues_name_queues(self, db_url: URL, queues: Any) -> None:
        with pytest.raises(ConfigError) as info:
            Worker(db_url, Workers(), queues)
        assert info.value.field == "queues"

    @pytest.mark.parametrize(
        ("setting", "value"),
        [
            ("fetch_poll_interval", 0),
            ("fetch_poll_interval", -1),
            ("shutdown_timeout", -1),
            ("job_timeout", timedelta(0)),
            ("client_id", ""),
        ],
    )
    def test_bad_settings_name_themselves(self, db_url: URL, setting: str, value: Any) -> None:
        with pytest.raises(ConfigError) as info:
            Worker(db_url, Workers(), **{setting: value})
        assert info.value.field == setting


class TestSchemaCheck:
    def test_start_on_a_database_without_the_tables_says_to_migrate(
        self, empty_db_url: str
    ) -> None:
        worker = Worker(empty_db_url, Workers())
        with pytest.raises(sa_river.SchemaNotReadyError, match="migrate up") as raised:
            worker.start()
        assert "river_job" in str(raised.value)
        assert not worker._started
        worker.stop()  # safe: nothing was started
