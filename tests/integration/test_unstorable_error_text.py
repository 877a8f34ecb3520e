"""An attempt's error is stored whatever text it holds, against real PostgreSQL.

A handler error naming a file whose bytes are not UTF-8 (``os.fsdecode(b"caf\\xe9.txt")`` is
``'caf\\udce9.txt'``) holds a lone surrogate, which jsonb rejects. Such an attempt used to stay
``running`` until a rescue: its outcome failed to write, and the completer's fallback error
quoted the same text and failed too. Now every text that goes into ``errors`` is escaped
(``caf\\udce9.txt`` with a literal backslash) and the attempt ends like any failed one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from _worker_helpers import count_states, insert_job, running_worker, wait_for_state
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from sa_river import InsertOpts, Job, JobState, Workers
from sa_river.queries.job_fetch import UndecodableJob
from sa_river.queries.job_outcome import AttemptOutcome
from sa_river.worker.completer import BatchCompleter
from sa_river.worker.producer import Producer

S = JobState
BOUND = 5.0

UNDECODABLE_NAME = os.fsdecode(b"caf\xe9.txt")
"""``'caf\\udce9.txt'``: a Latin-1 file name decoded the way Python decodes file names."""

ESCAPED_NAME = "caf\\udce9.txt"
"""What is stored instead: the surrogate spelled out, so the error still says which file."""


def an_hour(attempt: int) -> timedelta:
    return timedelta(hours=1)


def raw_state(engine: Engine, job_id: int) -> tuple[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT state::text, errors FROM river_job WHERE id = :id"), {"id": job_id}
        ).one()
    return row[0], list(row[1] or [])


def set_running(engine: Engine, job_id: int, attempt: int = 1) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE river_job SET state = 'running', attempt = :a WHERE id = :id"),
            {"a": attempt, "id": job_id},
        )


class TestAHandlerErrorHoldingALoneSurrogate:
    def test_ends_the_attempt_with_the_error_stored_escaped(
        self, db_url: URL, engine: Engine
    ) -> None:
        workers = Workers()

        @workers.handler("open_sync", retry=an_hour)
        def open_sync(job: Job[dict[str, Any]]) -> None:
            raise RuntimeError(f"cannot open {UNDECODABLE_NAME}")

        @workers.handler("open_async", retry=an_hour)
        async def open_async(job: Job[dict[str, Any]]) -> None:
            raise RuntimeError(f"cannot open {UNDECODABLE_NAME}")

        retried = insert_job(engine, "open_sync")
        retried_async = insert_job(engine, "open_async")
        discarded = insert_job(engine, "open_sync", opts=InsertOpts(max_attempts=1))
        with running_worker(db_url, workers, {"default": 5}, maintenance=False):
            rows = [
                wait_for_state(engine, retried, S.RETRYABLE, timeout=BOUND),
                wait_for_state(engine, retried_async, S.RETRYABLE, timeout=BOUND),
                wait_for_state(engine, discarded, S.DISCARDED, timeout=BOUND),
            ]
        for row in rows:
            assert row.attempt == 1
            assert len(row.errors) == 1
            assert row.errors[0].error == f"RuntimeError: cannot open {ESCAPED_NAME}"
            assert ESCAPED_NAME in row.errors[0].trace
        assert "running" not in count_states(engine)


@pytest.fixture
def completer(engine: Engine) -> Iterator[BatchCompleter]:
    c = BatchCompleter(engine, flush_interval=0.05, batch_size=100)
    c.start()
    yield c
    assert c.stop(10), "the completer did not stop"


class TestTheCompletersFallback:
    @pytest.mark.parametrize(
        "error",
        [
            # json.dumps's escape of the surrogate, which jsonb rejects...
            json.dumps({"at": "2024-01-01T00:00:00Z", "attempt": 1, "error": UNDECODABLE_NAME}),
            # ... and the surrogate itself, which the driver cannot even encode.
            '{"at":"2024-01-01T00:00:00Z","attempt":1,"error":"' + UNDECODABLE_NAME + '"}',
        ],
        ids=["json-escaped", "raw"],
    )
    def test_quotes_an_unstorable_original_error_escaped_instead_of_failing_too(
        self, engine: Engine, completer: BatchCompleter, error: str
    ) -> None:
        """An outcome built without sa_river's escaping (a bug, or an older sa_river) cannot be
        written; the fallback that replaces it quotes its error and must not fail on it."""
        job_id = insert_job(engine, "k")
        set_running(engine, job_id)
        completer.add(
            AttemptOutcome.retryable(job_id, 1, error=error, delay_seconds=30.0, available=False)
        )
        assert completer.wait_flushed(BOUND), "the outcome was not written in time"
        state, errors = raw_state(engine, job_id)
        assert state == "retryable"
        assert len(errors) == 1
        message = errors[0]["error"]
        assert "sa_river could not record this attempt's outcome" in message
        assert f"the attempt's own error was: {ESCAPED_NAME}" in message

    def test_a_batch_with_an_unstorable_error_still_records_its_other_outcomes(
        self, engine: Engine, completer: BatchCompleter
    ) -> None:
        bad = insert_job(engine, "k")
        good = insert_job(engine, "k")
        set_running(engine, bad)
        set_running(engine, good)
        unstorable = json.dumps({"at": "2024-01-01T00:00:00Z", "attempt": 1, "error": "\udce9"})
        completer.add(
            AttemptOutcome.retryable(bad, 1, error=unstorable, delay_seconds=30.0, available=False)
        )
        completer.add(AttemptOutcome.completed(good, 1))
        assert completer.wait_flushed(BOUND)
        assert raw_state(engine, good)[0] == "completed"
        assert raw_state(engine, bad)[0] == "retryable"


class TestAnUndecodableRowsError:
    def test_is_stored_escaped_when_it_holds_a_lone_surrogate(self, engine: Engine) -> None:
        """PostgreSQL hands out valid UTF-8 only, so a decoding error quoting a lone surrogate
        is not expected; the error the producer records is made storable all the same."""
        job_id = insert_job(engine, "k")
        set_running(engine, job_id)
        producer = Producer(
            engine,
            queue="default",
            limit=1,
            client_id="unstorable-text-test",
            execute=lambda rows, on_done: None,
            poll_interval=0.1,
            cooldown=0.05,
        )
        producer._undecodable.append(
            UndecodableJob(
                id=job_id, attempt=1, kind="k", error=ValueError(f"bad row {UNDECODABLE_NAME}")
            )
        )
        try:
            producer._fail_undecodable()
        finally:
            producer._held.drop(invalidate=False)
        state, errors = raw_state(engine, job_id)
        assert state == "retryable"
        assert f"ValueError: bad row {ESCAPED_NAME}" in errors[-1]["error"]
