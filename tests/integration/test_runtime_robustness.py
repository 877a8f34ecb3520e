"""The worker runtime survives bad rows and bad outcomes, against real PostgreSQL.

Two failures that used to strand jobs in ``running`` until the worker stopped and a rescue
took them back:

- the completer's batched UPDATE failing for one row (here: a retry delay so large that
  ``scheduled_at`` overflows) lost the outcomes of the whole batch;
- a fetched row that did not decode (an ``errors`` entry written in another shape by a foreign
  client) killed the producer: the rest of its fetch stayed running and the queue was no
  longer fetched.

Now the batch is written again row by row, an outcome that cannot be recorded ends its attempt
with a fallback error, an undecodable row ends its attempt with an error saying so, and neither
loop can die of an unexpected exception. Every wait is bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from _worker_helpers import insert_job, running_worker, wait_for_state, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from sa_river import InsertOpts, Job, JobRow, JobState, Workers
from sa_river.queries.job_outcome import AttemptOutcome
from sa_river.retry import FALLBACK_RETRY_SECONDS
from sa_river.worker.completer import BatchCompleter
from sa_river.worker.producer import Producer

S = JobState

ABSURD_DELAY = timedelta.max
"""now() + this is past PostgreSQL's last timestamp: the UPDATE fails with a DataError."""

BOUND = 5.0
"""How long a job may take to leave ``running`` here; a healthy run needs a fraction of it."""


def raw_job(engine: Engine, job_id: int) -> dict[str, Any]:
    """The row's columns as the database holds them, without decoding into a JobRow (which
    the undecodable rows of these tests would fail)."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT state::text AS state, attempt, max_attempts, finalized_at, "
                "scheduled_at - now() AS scheduled_in, "
                "coalesce(array_length(errors, 1), 0) AS n_errors, "
                "errors[array_length(errors, 1)] AS last_error "
                "FROM river_job WHERE id = :id"
            ),
            {"id": job_id},
        ).one()
    return dict(row._mapping)


def wait_raw_state(engine: Engine, job_id: int, *states: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def reached() -> dict[str, Any] | None:
        row = raw_job(engine, job_id)
        seen[:] = [row]
        return row if row["state"] in states else None

    return wait_until(
        reached,
        BOUND,
        message=lambda: f"job {job_id} to reach {states}; it is {seen[0] if seen else '?'}",
    )


def set_running(engine: Engine, job_id: int, attempt: int = 1) -> None:
    """Put a job in ``running`` at ``attempt``, as a fetch would have."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE river_job SET state = 'running', attempt = :a WHERE id = :id"),
            {"a": attempt, "id": job_id},
        )


@pytest.fixture
def completer(engine: Engine) -> Iterator[BatchCompleter]:
    c = BatchCompleter(engine, flush_interval=0.05, batch_size=100)
    c.start()
    yield c
    assert c.stop(10), "the completer did not stop"


# --- (a) the completer -------------------------------------------------------------------------


ERROR = '{"at":"2024-01-01T00:00:00Z","attempt":1,"error":"ValueError: boom","trace":""}'


def retryable(job_id: int, *, delay_seconds: float) -> AttemptOutcome:
    """Attempt 1 of ``job_id`` failed with :data:`ERROR`; it retries after ``delay_seconds``."""
    return AttemptOutcome.retryable(
        job_id, 1, error=ERROR, delay_seconds=delay_seconds, available=False
    )


class TestCompleterRecordsTheRestOfABatch:
    def test_one_unrecordable_outcome_does_not_lose_its_batch(
        self, engine: Engine, completer: BatchCompleter
    ) -> None:
        ok_retry = insert_job(engine, "k")
        absurd = insert_job(engine, "k")
        absurd_last = insert_job(engine, "k", opts=InsertOpts(max_attempts=1))
        done = insert_job(engine, "k")
        for job_id in (ok_retry, absurd, absurd_last, done):
            set_running(engine, job_id)
        absurd_seconds = ABSURD_DELAY.total_seconds()
        # Queued before the completer's flush deadline: one batch, one failing UPDATE.
        for outcome in (
            retryable(ok_retry, delay_seconds=30.0),
            retryable(absurd, delay_seconds=absurd_seconds),
            retryable(absurd_last, delay_seconds=absurd_seconds),
        ):
            completer.add(outcome)
        completer.add(AttemptOutcome.completed(done, 1))
        assert completer.wait_flushed(BOUND), "the batch was not written in time"

        assert raw_job(engine, done)["state"] == "completed"
        recorded = raw_job(engine, ok_retry)
        assert recorded["state"] == "retryable"
        assert recorded["last_error"]["error"] == "ValueError: boom"
        assert timedelta(seconds=20) < recorded["scheduled_in"] <= timedelta(seconds=30)

        # The offending outcome ends its attempt with sa_river's fallback error instead.
        fallback = raw_job(engine, absurd)
        assert fallback["state"] == "retryable"
        assert fallback["n_errors"] == 1
        message = fallback["last_error"]["error"]
        assert "sa_river could not record this attempt's outcome" in message
        assert "out of range" in message
        assert "ValueError: boom" in message  # the handler's own error is kept
        assert fallback["last_error"]["attempt"] == 1
        assert (
            timedelta(seconds=FALLBACK_RETRY_SECONDS - 10)
            < fallback["scheduled_in"]
            <= timedelta(seconds=FALLBACK_RETRY_SECONDS)
        )
        # ... and, at its last attempt, is discarded like any failed last attempt.
        last = raw_job(engine, absurd_last)
        assert last["state"] == "discarded"
        assert last["finalized_at"] is not None

    def test_the_fallback_is_fenced_by_attempt(
        self, engine: Engine, completer: BatchCompleter
    ) -> None:
        """A late, unrecordable outcome of attempt 1 leaves attempt 2 alone."""
        job_id = insert_job(engine, "k")
        set_running(engine, job_id, attempt=2)
        completer.add(retryable(job_id, delay_seconds=ABSURD_DELAY.total_seconds()))
        assert completer.wait_flushed(BOUND)
        row = raw_job(engine, job_id)
        assert (row["state"], row["attempt"], row["n_errors"]) == ("running", 2, 0)

    def test_a_malformed_outcome_does_not_stop_the_completer(
        self, engine: Engine, completer: BatchCompleter
    ) -> None:
        """An outcome that is no outcome at all (a bug upstream) raises a plain Python error
        while the statement's parameters are built; the loop used to die of it."""
        first = insert_job(engine, "k")
        later = insert_job(engine, "k")
        set_running(engine, first)
        set_running(engine, later)
        completer.add((first,))  # type: ignore[arg-type]
        completer.add(AttemptOutcome.completed(first, 1))  # same batch
        assert completer.wait_flushed(BOUND), "the completer stopped writing"
        assert raw_job(engine, first)["state"] == "completed"
        completer.add(AttemptOutcome.completed(later, 1))
        assert completer.wait_flushed(BOUND), "the completer stopped writing"
        assert raw_job(engine, later)["state"] == "completed"
        assert not completer.stopped.is_set()

    def test_the_writing_loop_outlives_an_unexpected_error(self, engine: Engine) -> None:
        class BrokenOnce(BatchCompleter):
            broken = True

            def _write(self, batch: list[Any]) -> None:
                if self.broken:
                    self.broken = False
                    raise RuntimeError("a bug in the completer")
                super()._write(batch)

        lost = insert_job(engine, "k")
        later = insert_job(engine, "k")
        set_running(engine, lost)
        set_running(engine, later)
        completer = BrokenOnce(engine, flush_interval=0.05, batch_size=100)
        completer.start()
        try:
            completer.add(AttemptOutcome.completed(lost, 1))
            # The failed batch still counts as handled: nothing waits on it for ever.
            assert completer.wait_flushed(BOUND)
            completer.add(AttemptOutcome.completed(later, 1))
            assert completer.wait_flushed(BOUND), "the completer stopped writing"
            assert raw_job(engine, later)["state"] == "completed"
            assert not completer.stopped.is_set()
        finally:
            assert completer.stop(10)

    def test_a_worker_records_a_batch_holding_an_absurd_retry_delay(
        self, db_url: URL, engine: Engine
    ) -> None:
        workers = Workers()
        # Every attempt ends at once after all have started, so the outcomes share a batch.
        started = threading.Barrier(6, timeout=BOUND)

        def absurd_retry(attempt: int) -> timedelta:
            return ABSURD_DELAY

        def an_hour(attempt: int) -> timedelta:
            return timedelta(hours=1)

        @workers.handler("absurd", retry=absurd_retry)
        def absurd(job: Job[dict[str, Any]]) -> None:
            started.wait()
            raise ValueError("absurd fails")

        @workers.handler("flaky", retry=an_hour)
        def flaky(job: Job[dict[str, Any]]) -> None:
            started.wait()
            raise ValueError("flaky fails")

        @workers.handler("ok")
        def ok(job: Job[dict[str, Any]]) -> None:
            started.wait()

        bad = insert_job(engine, "absurd")
        flakies = [insert_job(engine, "flaky") for _ in range(3)]
        oks = [insert_job(engine, "ok") for _ in range(2)]
        with running_worker(
            db_url,
            workers,
            {"default": 10},
            maintenance=False,
            completer_flush_interval=0.3,
        ):
            for job_id in oks:
                wait_for_state(engine, job_id, S.COMPLETED, timeout=BOUND)
            for job_id in flakies:
                row = wait_for_state(engine, job_id, S.RETRYABLE, timeout=BOUND)
                assert row.errors[-1].error == "ValueError: flaky fails"
            row = wait_for_state(engine, bad, S.RETRYABLE, S.AVAILABLE, timeout=BOUND)
        assert row.attempt == 1
        assert "could not record this attempt's outcome" in row.errors[-1].error
        assert "ValueError: absurd fails" in row.errors[-1].error


# --- (b) the producer --------------------------------------------------------------------------


def corrupt_errors(engine: Engine, job_id: int, entry: str) -> None:
    """Give a job an ``errors`` entry in a shape sa_river's decoder rejects, as a foreign
    client might write it."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE river_job SET errors = ARRAY[CAST(:entry AS jsonb)] WHERE id = :id"),
            {"entry": entry, "id": job_id},
        )


class TestProducerSurvivesUndecodableRows:
    def test_an_undecodable_row_neither_strands_its_fetch_nor_stops_the_queue(
        self, db_url: URL, engine: Engine
    ) -> None:
        ran: list[int] = []
        workers = Workers()

        @workers.handler("ok")
        def ok(job: Job[dict[str, Any]]) -> None:
            ran.append(job.id)

        first = [insert_job(engine, "ok") for _ in range(3)]
        # An object without "at" (KeyError) and a bare string (TypeError).
        retried = insert_job(engine, "ok")
        corrupt_errors(engine, retried, '{"message": "from another client"}')
        discarded = insert_job(engine, "ok", opts=InsertOpts(max_attempts=1))
        corrupt_errors(engine, discarded, '"just a string"')
        more = [insert_job(engine, "ok") for _ in range(2)]

        with running_worker(db_url, workers, {"default": 10}, maintenance=False) as worker:
            for job_id in first + more:
                wait_for_state(engine, job_id, S.COMPLETED, timeout=BOUND)
            bad = wait_raw_state(engine, retried, "retryable")
            last = wait_raw_state(engine, discarded, "discarded")
            # The queue is still fetched: a job inserted now runs.
            after = insert_job(engine, "ok")
            wait_for_state(engine, after, S.COMPLETED, timeout=BOUND)
            assert worker._producers["default"].stopped.is_set() is False
        assert sorted(ran) == sorted([*first, *more, after])

        assert bad["attempt"] == 1
        assert bad["n_errors"] == 2  # the foreign entry is kept, sa_river's appended
        assert "sa_river could not decode this job's row: KeyError" in bad["last_error"]["error"]
        assert bad["last_error"]["attempt"] == 1
        assert bad["last_error"]["trace"]
        assert (
            timedelta(seconds=FALLBACK_RETRY_SECONDS - 10)
            < bad["scheduled_in"]
            <= timedelta(seconds=FALLBACK_RETRY_SECONDS)
        )
        assert last["finalized_at"] is not None
        assert "could not decode this job's row: TypeError" in last["last_error"]["error"]

    def test_the_producer_loop_outlives_an_unexpected_error(self, engine: Engine) -> None:
        """Whatever goes wrong after a fetch, the producer goes on fetching."""
        received: list[int] = []
        got = threading.Event()
        calls = 0

        def execute(rows: list[JobRow], on_done: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug while starting jobs")
            received.extend(r.id for r in rows)
            for _ in rows:
                on_done()
            got.set()

        producer = Producer(
            engine,
            queue="default",
            limit=5,
            client_id="robustness-test",
            execute=execute,
            poll_interval=0.1,
            cooldown=0.05,
        )
        first = insert_job(engine, "ok")
        producer.start()
        try:
            wait_until(lambda: calls >= 1, BOUND, message="the first fetch")
            second = insert_job(engine, "ok")
            producer.notify_insert()
            assert got.wait(BOUND), "the producer stopped fetching after an unexpected error"
            assert received == [second]
            assert not producer.stopped.is_set()
        finally:
            assert producer.stop(10)
        # The first fetch's job was handed to the broken callback: it is not fetched twice.
        assert raw_job(engine, first)["state"] == "running"
