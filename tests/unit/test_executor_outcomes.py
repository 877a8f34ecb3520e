"""What each attempt's result turns into (``outcome_for``), and the executor handing exactly
one outcome per attempt to its reporter: pure Python, no database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from sa_river import Job, JobCancel, JobSnooze, JobState, UnknownJobKindError, Workers
from sa_river.errors import InvalidJobError
from sa_river.queries.job_outcome import AttemptOutcome, OutcomeKind
from sa_river.types import JobRow
from sa_river.worker.executor import Executor, JobTimeoutError, outcome_for

S = JobState
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def row(job_id: int = 1, *, kind: str = "k", attempt: int = 1, max_attempts: int = 25) -> JobRow:
    return JobRow(
        id=job_id,
        state=S.RUNNING,
        attempt=attempt,
        max_attempts=max_attempts,
        attempted_at=NOW,
        created_at=NOW,
        finalized_at=None,
        scheduled_at=NOW,
        priority=1,
        args={},
        attempted_by=["w"],
        errors=[],
        kind=kind,
        metadata={},
        queue="default",
        tags=[],
    )


def seconds(n: float) -> Any:
    return lambda attempt: timedelta(seconds=n)


def outcome(
    exc: BaseException | None,
    r: JobRow | None = None,
    *,
    retry: float = 10.0,
    scheduler_interval: float = 5.0,
) -> AttemptOutcome:
    return outcome_for(
        r or row(),
        exc,
        retry_policy=seconds(retry),
        scheduler_interval=scheduler_interval,
    )


def raised(exc: Exception) -> Exception:
    """``exc`` with a traceback, as a handler would have raised it."""
    try:
        raise exc
    except Exception as caught:
        return caught


def error_of(params: AttemptOutcome) -> dict[str, Any]:
    assert params.error is not None
    decoded = json.loads(params.error)
    assert isinstance(decoded, dict)
    return decoded


# --- outcome_for -------------------------------------------------------------------------------


class TestOutcomeFor:
    def test_success_completes(self) -> None:
        assert outcome(None) == AttemptOutcome.completed(1, 1)

    def test_error_within_the_scheduler_interval_is_available_again(self) -> None:
        params = outcome(raised(ValueError("bad")), retry=2.0)
        assert params.state is S.AVAILABLE
        assert params.delay_seconds == 2.0
        assert params.kind is OutcomeKind.RETRYABLE

    def test_error_beyond_the_scheduler_interval_is_retryable(self) -> None:
        params = outcome(raised(ValueError("bad")), retry=60.0)
        assert params.state is S.RETRYABLE
        assert params.delay_seconds == 60.0

    def test_error_json_is_rivers_attempt_error(self) -> None:
        before = datetime.now(timezone.utc)
        error = error_of(outcome(raised(ValueError("bad value")), row(attempt=3)))
        assert set(error) == {"at", "attempt", "error", "trace"}
        assert error["attempt"] == 3
        assert error["error"] == "ValueError: bad value"
        assert "Traceback (most recent call last)" in error["trace"]
        assert "raise exc" in error["trace"]
        at = datetime.fromisoformat(error["at"])
        assert at.tzinfo is not None
        assert before - timedelta(seconds=1) <= at <= datetime.now(timezone.utc)

    def test_last_attempt_is_discarded(self) -> None:
        params = outcome(raised(RuntimeError("x")), row(attempt=3, max_attempts=3))
        assert params.state is S.DISCARDED
        assert params.delay_seconds is None
        assert error_of(params)["attempt"] == 3

    def test_beyond_max_attempts_is_discarded(self) -> None:
        # A job whose max_attempts was lowered after it ran.
        assert outcome(raised(RuntimeError("x")), row(attempt=5, max_attempts=2)).state is (
            S.DISCARDED
        )

    def test_job_cancel_cancels_even_with_attempts_left(self) -> None:
        params = outcome(raised(JobCancel("not wanted")), row(attempt=1, max_attempts=25))
        assert params.state is S.CANCELLED
        assert params.delay_seconds is None
        assert "not wanted" in error_of(params)["error"]

    def test_job_cancel_on_the_last_attempt_is_still_cancelled(self) -> None:
        params = outcome(raised(JobCancel()), row(attempt=1, max_attempts=1))
        assert params.state is S.CANCELLED

    def test_short_snooze_is_available_and_uncounted(self) -> None:
        params = outcome(JobSnooze(timedelta(seconds=3)))
        assert params == AttemptOutcome.snoozed(1, 1, delay_seconds=3.0, available=True)
        assert params.state is S.AVAILABLE

    def test_long_snooze_is_scheduled(self) -> None:
        params = outcome(JobSnooze(600))
        assert params.state is S.SCHEDULED
        assert params.delay_seconds == 600.0
        assert params.kind is OutcomeKind.SNOOZED
        assert params.error is None

    def test_snooze_on_the_last_attempt_is_not_discarded(self) -> None:
        params = outcome(JobSnooze(1), row(attempt=1, max_attempts=1))
        assert params.state is S.AVAILABLE
        assert params.kind is OutcomeKind.SNOOZED

    def test_negative_snooze_is_rejected(self) -> None:
        with pytest.raises(InvalidJobError) as info:
            JobSnooze(-1)
        assert info.value.field == "delay"

    def test_unknown_kind_message_without_trace(self) -> None:
        params = outcome(UnknownJobKindError("mystery"))
        error = error_of(params)
        assert error["error"] == "no handler registered for kind 'mystery'"
        assert error["trace"] == ""
        assert params.state is S.RETRYABLE

    def test_timeout_message(self) -> None:
        error = error_of(outcome(JobTimeoutError("job timed out after 1.5s")))
        assert error["error"] == "job timed out after 1.5s"
        assert error["trace"] == ""

    def test_long_traces_are_truncated_to_their_end(self) -> None:
        error = error_of(outcome(raised(RuntimeError("x" * 20_000 + " at the bottom"))))
        assert len(error["trace"]) <= 8000 + len("...\n")
        assert error["trace"].startswith("...\n")
        assert error["trace"].rstrip().endswith("at the bottom")

    def test_the_kinds_policy_gets_the_failed_attempt(self) -> None:
        asked: list[int] = []

        def policy(attempt: int) -> timedelta:
            asked.append(attempt)
            return timedelta(seconds=attempt * 10)

        params = outcome_for(
            row(attempt=4), raised(ValueError()), retry_policy=policy, scheduler_interval=5
        )
        assert asked == [4]
        assert params.delay_seconds == 40.0


# --- the executor: exactly one outcome per attempt ---------------------------------------------


class Collector:
    def __init__(self) -> None:
        self.outcomes: list[AttemptOutcome] = []
        self.done = 0
        self._cond = threading.Condition()

    def report(self, params: AttemptOutcome) -> None:
        with self._cond:
            self.outcomes.append(params)
            self._cond.notify_all()

    def on_done(self) -> None:
        with self._cond:
            self.done += 1
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 10.0) -> list[AttemptOutcome]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.done < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"only {self.done} of {n} attempts finished")
                self._cond.wait(remaining)
            return list(self.outcomes)


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def make_executor(collector: Collector) -> Iterator[Any]:
    made: list[Executor] = []

    def make(workers: Workers, timeout: float | None = 10.0, threads: int = 4) -> Executor:
        executor = Executor(
            workers,
            collector.report,
            threads=threads,
            default_timeout=None if timeout is None else timedelta(seconds=timeout),
            retry_policy=seconds(60),
            scheduler_interval=5.0,
        )
        executor.start()
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.release_all()
        executor.shutdown()


class TestExecutor:
    def test_sync_and_async_success_and_failure(
        self, make_executor: Any, collector: Collector
    ) -> None:
        workers = Workers()

        @workers.handler("ok_sync")
        def ok_sync(job: Job[dict[str, Any]]) -> None:
            pass

        @workers.handler("bad_sync")
        def bad_sync(job: Job[dict[str, Any]]) -> None:
            raise KeyError("k")

        @workers.handler("ok_async")
        async def ok_async(job: Job[dict[str, Any]]) -> None:
            await asyncio.sleep(0)

        @workers.handler("bad_async")
        async def bad_async(job: Job[dict[str, Any]]) -> None:
            raise ValueError("v")

        executor = make_executor(workers)
        for job_id, kind in enumerate(["ok_sync", "bad_sync", "ok_async", "bad_async"], 1):
            executor.execute_many([row(job_id, kind=kind)], collector.on_done)
        states = {o.job_id: o.state for o in collector.wait(4)}
        assert states == {1: S.COMPLETED, 2: S.RETRYABLE, 3: S.COMPLETED, 4: S.RETRYABLE}
        assert executor.wait_idle(1)

    def test_unknown_kind_is_settled_without_running_anything(
        self, make_executor: Any, collector: Collector
    ) -> None:
        executor = make_executor(Workers())
        executor.execute_many([row(7, kind="ghost")], collector.on_done)
        [params] = collector.wait(1)
        assert params.state is S.RETRYABLE
        assert "no handler registered for kind 'ghost'" in error_of(params)["error"]

    def test_base_exceptions_become_errors(self, make_executor: Any, collector: Collector) -> None:
        workers = Workers()

        @workers.handler("exits")
        def exits(job: Job[dict[str, Any]]) -> None:
            raise SystemExit(3)

        executor = make_executor(workers)
        executor.execute_many([row(1, kind="exits")], collector.on_done)
        [params] = collector.wait(1)
        assert params.state is S.RETRYABLE
        assert "SystemExit" in error_of(params)["error"]

    def test_sync_timeout_reports_once_and_ignores_the_late_result(
        self, make_executor: Any, collector: Collector
    ) -> None:
        release = threading.Event()
        returned = threading.Event()
        workers = Workers()

        @workers.handler("hangs", timeout=timedelta(seconds=0.2))
        def hangs(job: Job[dict[str, Any]]) -> None:
            release.wait(10)
            returned.set()

        @workers.handler("quick")
        def quick(job: Job[dict[str, Any]]) -> None:
            pass

        executor = make_executor(workers, threads=1)
        try:
            executor.execute_many([row(1, kind="hangs")], collector.on_done)
            [timed_out] = collector.wait(1)
            assert "timed out after 0.2s" in error_of(timed_out)["error"]
            # The only thread is stuck, yet a new job runs on its replacement.
            executor.execute_many([row(2, kind="quick")], collector.on_done)
            outcomes = collector.wait(2)
            assert outcomes[1] == AttemptOutcome.completed(2, 1)
        finally:
            release.set()
        assert returned.wait(5)
        time.sleep(0.1)
        assert len(collector.outcomes) == 2
        assert collector.done == 2

    def test_async_timeout_cancels_the_coroutine(
        self, make_executor: Any, collector: Collector
    ) -> None:
        cancelled = threading.Event()
        workers = Workers()

        @workers.handler("sleeps", timeout=timedelta(seconds=0.1))
        async def sleeps(job: Job[dict[str, Any]]) -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        executor = make_executor(workers)
        executor.execute_many([row(1, kind="sleeps")], collector.on_done)
        [params] = collector.wait(1)
        assert cancelled.is_set()
        assert error_of(params)["error"] == "job timed out after 0.1s"

    def test_cancel_of_a_running_async_job(self, make_executor: Any, collector: Collector) -> None:
        started = threading.Event()
        workers = Workers()

        @workers.handler("waits")
        async def waits(job: Job[dict[str, Any]]) -> None:
            started.set()
            await asyncio.sleep(10)

        executor = make_executor(workers)
        executor.execute_many([row(1, kind="waits")], collector.on_done)
        assert started.wait(5)
        assert executor.cancel(1) is True
        [params] = collector.wait(1)
        assert params.state is S.CANCELLED
        assert executor.cancel(1) is False  # no longer running

    def test_release_all_reports_nothing_and_returns_released_outcomes(
        self, make_executor: Any, collector: Collector
    ) -> None:
        started = threading.Barrier(3)
        release = threading.Event()
        workers = Workers()

        @workers.handler("blocks")
        def blocks(job: Job[dict[str, Any]]) -> None:
            started.wait(5)
            release.wait(10)

        @workers.handler("awaits")
        async def awaits(job: Job[dict[str, Any]]) -> None:
            await asyncio.to_thread(started.wait, 5)
            await asyncio.sleep(10)

        executor = make_executor(workers, timeout=None)
        try:
            executor.execute_many([row(1, kind="blocks")], collector.on_done)
            executor.execute_many([row(2, kind="awaits")], collector.on_done)
            started.wait(5)
            assert sorted(executor.running_ids()) == [1, 2]
            assert not executor.wait_idle(0.05)
            released = sorted(executor.release_all(), key=lambda o: o.job_id)
            assert released == [AttemptOutcome.released(1, 1), AttemptOutcome.released(2, 1)]
            assert executor.wait_idle(0)
        finally:
            release.set()
        time.sleep(0.2)
        assert collector.outcomes == []


def test_an_async_handlers_own_timeout_error_is_not_a_job_timeout(
    make_executor: Any, collector: Collector
) -> None:
    """On Python 3.11+ ``asyncio.TimeoutError`` is the builtin ``TimeoutError``: a handler's own
    (say, from an HTTP client) must be recorded as itself, not as the job's timeout."""
    workers = Workers()

    @workers.handler("upstream_slow", timeout=timedelta(seconds=30))
    async def upstream_slow(job: Job[dict[str, Any]]) -> None:
        raise TimeoutError("upstream took too long")

    executor = make_executor(workers)
    executor.execute_many([row(1, kind="upstream_slow")], collector.on_done)
    [params] = collector.wait(1)
    error = error_of(params)
    assert error["error"] == "TimeoutError: upstream took too long"
    assert "Traceback" in error["trace"]


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_an_async_handler_raising_cancelled_error_itself_frees_its_slot(
    make_executor: Any, collector: Collector, timeout: float | None
) -> None:
    """Nobody cancelled it, so it is an error like any other, reported once; before, nothing
    was reported and the slot stayed taken until shutdown."""
    workers = Workers()

    @workers.handler("self_cancelling")
    async def self_cancelling(job: Job[dict[str, Any]]) -> None:
        raise asyncio.CancelledError()

    executor = make_executor(workers, timeout=timeout)
    executor.execute_many([row(1, kind="self_cancelling")], collector.on_done)
    [params] = collector.wait(1)
    assert params.state is S.RETRYABLE
    assert "cancelled" in error_of(params)["error"]
    assert executor.wait_idle(1)


class TestCancelRace:
    def test_a_cancel_right_after_the_fetch_cancels_an_async_job(
        self, make_executor: Any, collector: Collector
    ) -> None:
        """A cancel that lands between the attempt being registered and its task starting
        must still cancel it (it used to only set the flag, and the handler ran on)."""
        workers = Workers()

        @workers.handler("sleeps")
        async def sleeps(job: Job[dict[str, Any]]) -> None:
            await asyncio.sleep(30)

        executor = make_executor(workers)
        rounds = 100
        for job_id in range(1, rounds + 1):
            cancelled = threading.Event()

            def cancel_as_soon_as_registered(
                job_id: int = job_id, cancelled: threading.Event = cancelled
            ) -> None:
                deadline = time.monotonic() + 5
                while not executor.cancel(job_id) and time.monotonic() < deadline:
                    pass
                cancelled.set()

            canceller = threading.Thread(target=cancel_as_soon_as_registered)
            canceller.start()
            executor.execute_many([row(job_id, kind="sleeps")], collector.on_done)
            canceller.join(5)
            assert cancelled.is_set()
        outcomes = collector.wait(rounds, timeout=10)
        assert {o.state for o in outcomes} == {S.CANCELLED}


def test_a_handlers_database_error_is_logged_on_one_line_without_its_sql(
    make_executor: Any, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    """The job_failed line names the driver's error; the statement and parameters SQLAlchemy
    appends stay in the attempt's stored error, not in the log (an outage would otherwise
    print every handler's SQL)."""
    workers = Workers()

    @workers.handler("writes")
    def writes(job: Job[dict[str, Any]]) -> None:
        raise OperationalError(
            "INSERT INTO effects (job_id) VALUES (%(j)s)",
            {"j": job.id},
            Exception("terminating connection due to administrator command"),
        )

    executor = make_executor(workers)
    with caplog.at_level(logging.INFO, logger="sa_river.executor"):
        executor.execute_many([row(1, kind="writes")], collector.on_done)
        [outcome] = collector.wait(1)
    [line] = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "job_failed"]
    assert "terminating connection due to administrator command" in line
    assert "[SQL:" not in line
    assert "\n" not in line
    assert "INSERT INTO effects" in error_of(outcome)["error"]  # the stored error keeps it


def test_slow_sync_jobs_all_run_at_once_up_to_the_thread_count(
    make_executor: Any, collector: Collector
) -> None:
    """Threads are made as jobs need them: eight slow jobs on eight slots all run together
    (each waits for the other seven), and twelve never run more than eight at a time."""
    together = threading.Barrier(8)
    lock = threading.Lock()
    running = [0]
    most = [0]
    workers = Workers()

    @workers.handler("meets")
    def meets(job: Job[dict[str, Any]]) -> None:
        together.wait(5)

    @workers.handler("counts")
    def counts(job: Job[dict[str, Any]]) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1

    executor = make_executor(workers, threads=8)
    executor.execute_many([row(i, kind="meets") for i in range(1, 9)], collector.on_done)
    outcomes = collector.wait(8)
    assert {o.state for o in outcomes} == {S.COMPLETED}, "a job waited for a thread"

    executor.execute_many([row(i, kind="counts") for i in range(11, 23)], collector.on_done)
    collector.wait(20)
    assert most[0] == 8
