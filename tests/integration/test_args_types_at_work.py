"""Job args of the wrong type against real PostgreSQL: refused at insert with nothing written,
and, when they reach the table another way (the ``enqueue`` command, a ``(kind, dict)`` insert,
another language's client), failing the attempt with an error naming the field instead of
reaching the handler.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from _worker_helpers import insert_job, running_worker, wait_for_state
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

import sa_river
from sa_river import InsertOpts, InvalidJobError, Job, JobArgs, JobState, Workers, cli

S = JobState


class SendWelcome(JobArgs, kind="typed_send_welcome"):
    user_id: int
    locale: str = "en"


def count_jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM river_job")).scalar_one())


def a_minute(attempt: int) -> timedelta:
    return timedelta(minutes=1)


def refusing_workers(ran: list[int]) -> Workers:
    workers = Workers()

    @workers.handler(SendWelcome)
    def send_welcome(job: Job[SendWelcome]) -> None:
        ran.append(job.args.user_id)

    return workers


# --- insert ------------------------------------------------------------------------------------


def test_a_batch_holding_one_bad_value_writes_nothing(engine: Engine) -> None:
    good = [SendWelcome(user_id=n) for n in range(5)]
    with pytest.raises(InvalidJobError) as info:
        sa_river.insert_many(engine, [*good, SendWelcome(user_id="6"), *good])  # type: ignore[arg-type]
    assert str(info.value) == "items[5].args.user_id: expected int, got str '6'"
    with pytest.raises(InvalidJobError, match=r"^items\[1\]\.args\.locale: expected str"):
        sa_river.insert_many_fast(engine, [good[0], SendWelcome(user_id=1, locale=None)])  # type: ignore[arg-type]
    assert count_jobs(engine) == 0


def test_a_refused_job_leaves_the_callers_transaction_usable(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        sa_river.insert(session, SendWelcome(user_id=1))
        with pytest.raises(InvalidJobError, match=r"^args\.user_id: "):
            sa_river.insert(session, SendWelcome(user_id=None))  # type: ignore[arg-type]
        sa_river.insert(session, SendWelcome(user_id=2))
    assert count_jobs(engine) == 2


# --- decode in the worker ----------------------------------------------------------------------


def test_stored_args_of_the_wrong_type_discard_the_job_naming_the_field(
    db_url: URL, engine: Engine
) -> None:
    ran: list[int] = []
    bad = insert_job(engine, SendWelcome.kind, {"user_id": "x"}, InsertOpts(max_attempts=1))
    good = insert_job(engine, SendWelcome.kind, {"user_id": 7})
    with running_worker(db_url, refusing_workers(ran)):
        row = wait_for_state(engine, bad, S.DISCARDED)
        wait_for_state(engine, good, S.COMPLETED)
    assert ran == [7], "the handler never saw the bad args"
    assert row.attempt == 1
    assert [e.attempt for e in row.errors] == [1]
    assert "args.user_id: expected int, got str 'x'" in row.errors[0].error


def test_stored_args_of_the_wrong_type_are_retried_like_any_failure(
    db_url: URL, engine: Engine
) -> None:
    # Retryable: a deploy that fixes the class (or the producer) lets the next attempt run.
    ran: list[int] = []
    job_id = insert_job(engine, SendWelcome.kind, {"user_id": None, "locale": "fr"})
    with running_worker(db_url, refusing_workers(ran), retry_policy=a_minute):
        row = wait_for_state(engine, job_id, S.RETRYABLE)
    assert ran == []
    assert row.attempt == 1
    assert "args.user_id: expected int, got None" in row.errors[0].error


def test_a_job_enqueued_from_the_command_line_with_a_wrong_type_fails_its_attempt(
    db_url: URL, engine: Engine
) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "enqueue",
        "--database-url",
        db_url.render_as_string(hide_password=False),
        "--kind",
        SendWelcome.kind,
        "--args",
        '{"user_id": "x"}',
        "--max-attempts",
        "1",
    ]
    assert cli.main(argv, stdout=out, stderr=err) == cli.EXIT_OK, err.getvalue()
    job_id = int(out.getvalue().split()[1])
    ran: list[int] = []
    with running_worker(db_url, refusing_workers(ran)):
        row = wait_for_state(engine, job_id, S.DISCARDED)
    assert ran == []
    assert "args.user_id: expected int, got str 'x'" in row.errors[0].error
