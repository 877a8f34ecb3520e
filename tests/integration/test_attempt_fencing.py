"""An outcome belongs to one attempt: a late writer never overwrites a later attempt.

Worker A loses its connection, its job is rescued and fetched by worker B
(attempt 2); when A comes back, its outcome for attempt 1 must change nothing.
"""

from __future__ import annotations

import pytest
from _worker_helpers import running_worker, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

import sa_river
from sa_river.config import WorkerConfig
from sa_river.errors import ConfigError
from sa_river.queries.job_admin import job_get
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.types import JobState


def running_at_attempt(engine: Engine, attempt: int) -> int:
    job_id = sa_river.insert(engine, ("k", {})).job.id
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE river_job SET state = 'running', attempt = :a WHERE id = :id"),
            {"a": attempt, "id": job_id},
        )
    return job_id


def state_and_attempt(engine: Engine, job_id: int) -> tuple[JobState, int]:
    with engine.connect() as conn:
        job = job_get(conn, job_id)
    assert job is not None
    return job.state, job.attempt


ERROR = '{"at":"2024-01-01T00:00:00Z","attempt":1,"error":"late","trace":""}'

EVERY_KIND_OF_OUTCOME = {
    "completed": lambda job_id, attempt: AttemptOutcome.completed(job_id, attempt),
    "retryable": lambda job_id, attempt: AttemptOutcome.retryable(
        job_id, attempt, error=ERROR, delay_seconds=1.0, available=False
    ),
    "discarded": lambda job_id, attempt: AttemptOutcome.discarded(job_id, attempt, error=ERROR),
    "cancelled": lambda job_id, attempt: AttemptOutcome.cancelled(job_id, attempt, error=ERROR),
    "snoozed": lambda job_id, attempt: AttemptOutcome.snoozed(
        job_id, attempt, delay_seconds=60.0, available=False
    ),
    "released": lambda job_id, attempt: AttemptOutcome.released(job_id, attempt),
    "failed": lambda job_id, attempt: AttemptOutcome.failed(
        job_id, attempt, error=ERROR, retry_in_seconds=60.0
    ),
}


@pytest.mark.parametrize("kind", sorted(EVERY_KIND_OF_OUTCOME))
def test_an_outcome_for_an_earlier_attempt_changes_nothing(engine: Engine, kind: str) -> None:
    """Every way an attempt ends (the completer's outcomes, shutdown's release, the fallback
    error) is fenced: attempt 1's late outcome leaves attempt 2 running, attempt 2's applies."""
    make = EVERY_KIND_OF_OUTCOME[kind]
    job_id = running_at_attempt(engine, 2)
    with engine.begin() as conn:
        changed = job_set_state_if_running_many(conn, [make(job_id, 1)])
    assert changed == {}
    assert state_and_attempt(engine, job_id) == (JobState.RUNNING, 2)
    with engine.begin() as conn:
        changed = job_set_state_if_running_many(conn, [make(job_id, 2)])
    assert changed == {job_id: make(job_id, 2).state}
    assert state_and_attempt(engine, job_id)[0] is make(job_id, 2).state


def test_complete_in_from_an_earlier_attempt_changes_nothing(engine: Engine) -> None:
    """An abandoned attempt's handler calling complete_in must not complete the attempt a
    rescue started since."""
    job_id = running_at_attempt(engine, 1)
    with engine.connect() as conn:
        first_attempt = job_get(conn, job_id)
    assert first_attempt is not None
    with engine.begin() as conn:  # rescued and fetched again: attempt 2 runs elsewhere
        conn.execute(text("UPDATE river_job SET attempt = 2 WHERE id = :id"), {"id": job_id})

    with Session(engine) as session, session.begin():
        assert sa_river.complete_in(session, first_attempt) is False
    assert state_and_attempt(engine, job_id) == (JobState.RUNNING, 2)

    with engine.connect() as conn:
        second_attempt = job_get(conn, job_id)
    assert second_attempt is not None
    with Session(engine) as session, session.begin():
        assert sa_river.complete_in(session, second_attempt) is True
    assert state_and_attempt(engine, job_id) == (JobState.COMPLETED, 2)


def test_complete_in_needs_the_job_not_its_id(engine: Engine) -> None:
    job_id = running_at_attempt(engine, 1)
    with (
        Session(engine) as session,
        session.begin(),
        pytest.raises(TypeError, match="complete_in takes the handler's Job"),
    ):
        sa_river.complete_in(session, job_id)  # type: ignore[arg-type]
    assert state_and_attempt(engine, job_id) == (JobState.RUNNING, 1)


def test_release_at_shutdown_gives_the_attempt_back_uncounted(engine: Engine) -> None:
    job_id = running_at_attempt(engine, 2)
    with engine.begin() as conn:
        job_set_state_if_running_many(conn, [AttemptOutcome.released(job_id, 2)])
    assert state_and_attempt(engine, job_id) == (JobState.AVAILABLE, 1)


def test_an_error_message_with_a_nul_character_is_recorded_and_the_queue_goes_on(
    engine: Engine, db_url: URL
) -> None:
    workers = sa_river.Workers()

    @workers.handler("nul")
    def nul(job: sa_river.Job[dict[str, object]]) -> None:
        raise ValueError("bad byte \x00 here")

    workers.add("ok", lambda job: None)
    bad = sa_river.insert(engine, ("nul", {}), sa_river.InsertOpts(max_attempts=1)).job.id
    with running_worker(db_url, workers, {"default": 1}):
        wait_until(
            lambda: state_and_attempt(engine, bad)[0] is JobState.DISCARDED,
            message="the failing job to be discarded",
        )
        good = sa_river.insert(engine, ("ok", {})).job.id
        wait_until(
            lambda: state_and_attempt(engine, good)[0] is JobState.COMPLETED,
            message="the next job to complete on the same (single) slot",
        )
    job = sa_river.get_job(engine, bad)
    assert job is not None
    assert "bad byte \\0 here" in job.errors[-1].error


def test_a_heartbeat_slower_than_the_rescue_ttl_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        WorkerConfig(heartbeat_interval=60, rescue_heartbeat_ttl=30)
    assert info.value.field == "rescue_heartbeat_ttl"
