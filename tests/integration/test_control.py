"""Job and queue control against real PostgreSQL: get_job, list_jobs, cancel_job, retry_job,
pause_queue and resume_queue, with and without a running worker.

Control functions run in the caller's transaction (Session, Connection) or their own (Engine).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from _worker_helpers import count_states, insert_job, job, running_worker, wait_for_state
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

import sa_river
from sa_river import InsertOpts, InvalidJobError, Job, JobState, Workers

S = JobState


def set_state(engine: Engine, job_id: int, state: str, **extra: Any) -> None:
    finalized = "now()" if state in ("cancelled", "completed", "discarded") else "NULL"
    sets = ", ".join(f"{name} = :{name}" for name in extra)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"UPDATE river_job SET state = :state, finalized_at = {finalized}"
                + (f", {sets}" if sets else "")
                + " WHERE id = :id"
            ),
            {"id": job_id, "state": state, **extra},
        )


def queue_row(engine: Engine, name: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT name, paused_at, updated_at FROM river_queue WHERE name = :n"),
            {"n": name},
        ).first()


# --- get_job / list_jobs -----------------------------------------------------------------------


class TestGetAndList:
    def test_get_job(self, engine: Engine) -> None:
        job_id = insert_job(engine, "thing", {"n": 1}, InsertOpts(queue="q1", tags=["tag1"]))
        row = sa_river.get_job(engine, job_id)
        assert row is not None
        assert (row.id, row.kind, row.args, row.queue, row.tags) == (
            job_id,
            "thing",
            {"n": 1},
            "q1",
            ["tag1"],
        )
        assert row.state is S.AVAILABLE
        assert sa_river.get_job(engine, job_id + 1000) is None

    def test_get_job_sees_the_callers_transaction(self, engine: Engine) -> None:
        with Session(engine) as session, session.begin():
            job_id = sa_river.insert(session, ("uncommitted", {})).job.id
            row = sa_river.get_job(session, job_id)
            assert row is not None
            assert row.kind == "uncommitted"
            assert sa_river.get_job(engine, job_id) is None  # not yet committed
            session.rollback()

    @pytest.fixture
    def mixed(self, engine: Engine) -> dict[str, list[int]]:
        """30 jobs: kinds a/b, queues q1/q2, a few moved to other states."""
        ids: dict[str, list[int]] = {"a": [], "b": [], "q1": [], "q2": []}
        for n in range(30):
            kind = "a" if n % 2 == 0 else "b"
            queue = "q1" if n % 3 == 0 else "q2"
            job_id = insert_job(engine, kind, {"n": n}, InsertOpts(queue=queue))
            ids[kind].append(job_id)
            ids[queue].append(job_id)
        ids["completed"] = ids["a"][:4]
        ids["discarded"] = ids["b"][:3]
        for job_id in ids["completed"]:
            set_state(engine, job_id, "completed")
        for job_id in ids["discarded"]:
            set_state(engine, job_id, "discarded")
        ids["all"] = sorted(ids["a"] + ids["b"])
        return ids

    def test_filters(self, engine: Engine, mixed: dict[str, list[int]]) -> None:
        def ids(**filters: Any) -> list[int]:
            return [r.id for r in sa_river.list_jobs(engine, **filters)]

        assert ids() == mixed["all"]
        assert ids(kinds=["a"]) == mixed["a"]
        assert ids(queues=["q1"]) == sorted(mixed["q1"])
        assert ids(queues=["q1", "q2"]) == mixed["all"]
        assert ids(states=["completed"]) == mixed["completed"]
        assert ids(states=[S.DISCARDED, "completed"]) == sorted(
            mixed["completed"] + mixed["discarded"]
        )
        assert ids(states=["available"], kinds=["b"], queues=["q1"]) == [
            i for i in mixed["b"] if i in mixed["q1"] and i not in mixed["discarded"]
        ]
        assert ids(kinds=["nope"]) == []
        with pytest.raises(ValueError, match="bogus"):
            sa_river.list_jobs(engine, states=["bogus"])

    def test_keyset_pagination(self, engine: Engine, mixed: dict[str, list[int]]) -> None:
        pages: list[list[int]] = []
        after: int | None = None
        while True:
            page = sa_river.list_jobs(engine, states=["available"], limit=7, after_id=after)
            if not page:
                break
            assert len(page) <= 7
            pages.append([r.id for r in page])
            after = page[-1].id
        seen = [i for page in pages for i in page]
        expected = [
            i for i in mixed["all"] if i not in mixed["completed"] and i not in mixed["discarded"]
        ]
        assert seen == expected
        assert [len(p) for p in pages] == [7, 7, 7, 2]
        # A new job shows up on the next page without disturbing the ones already read.
        late = insert_job(engine, "a")
        assert [r.id for r in sa_river.list_jobs(engine, after_id=after)] == [late]


# --- cancel_job --------------------------------------------------------------------------------


class TestCancel:
    @pytest.mark.parametrize("state", ["available", "scheduled", "retryable", "pending"])
    def test_a_job_that_is_not_running_is_cancelled_at_once(
        self, engine: Engine, state: str
    ) -> None:
        job_id = insert_job(engine, "to_cancel")
        set_state(engine, job_id, state)
        row = sa_river.cancel_job(engine, job_id)
        assert row is not None
        assert row.state is S.CANCELLED
        assert row.finalized_at is not None
        assert "cancel_attempted_at" in row.metadata
        assert job(engine, job_id) == row

    @pytest.mark.parametrize("state", ["completed", "discarded", "cancelled"])
    def test_a_finalised_job_is_left_as_it_is(self, engine: Engine, state: str) -> None:
        job_id = insert_job(engine, "finished")
        set_state(engine, job_id, state)
        before = job(engine, job_id)
        row = sa_river.cancel_job(engine, job_id)
        assert row == before
        assert job(engine, job_id) == before

    def test_a_missing_job_is_none(self, engine: Engine) -> None:
        assert sa_river.cancel_job(engine, 123456) is None

    def test_cancel_in_a_rolled_back_transaction_does_nothing(self, engine: Engine) -> None:
        job_id = insert_job(engine, "kept")
        with Session(engine) as session, session.begin():
            row = sa_river.cancel_job(session, job_id)
            assert row is not None
            assert row.state is S.CANCELLED
            session.rollback()
        assert job(engine, job_id).state is S.AVAILABLE

    def test_a_cancelled_available_job_is_never_worked(self, db_url: URL, engine: Engine) -> None:
        ran: list[int] = []
        workers = Workers()

        @workers.handler("never")
        def never(job: Job[dict[str, Any]]) -> None:
            ran.append(job.id)

        @workers.handler("marker")
        def marker(job: Job[dict[str, Any]]) -> None:
            pass

        cancelled = insert_job(engine, "never")
        sa_river.cancel_job(engine, cancelled)
        marker_id = insert_job(engine, "marker")
        with running_worker(db_url, workers):
            wait_for_state(engine, marker_id, S.COMPLETED)
        assert ran == []
        assert job(engine, cancelled).state is S.CANCELLED


# --- retry_job ---------------------------------------------------------------------------------


class TestRetry:
    def test_a_discarded_job_becomes_available_and_runs(self, db_url: URL, engine: Engine) -> None:
        attempts: list[int] = []
        workers = Workers()

        @workers.handler("second_time_lucky")
        def second_time_lucky(job: Job[dict[str, Any]]) -> None:
            attempts.append(job.attempt)
            if len(attempts) == 1:
                raise RuntimeError("first time unlucky")

        job_id = insert_job(engine, "second_time_lucky", opts=InsertOpts(max_attempts=1))
        with running_worker(db_url, workers):
            discarded = wait_for_state(engine, job_id, S.DISCARDED)
            assert discarded.attempt == 1
            retried = sa_river.retry_job(engine, job_id)
            assert retried is not None
            assert retried.state is S.AVAILABLE
            assert retried.finalized_at is None
            assert retried.max_attempts > retried.attempt  # one more attempt is allowed
            row = wait_for_state(engine, job_id, S.COMPLETED)
        assert attempts == [1, 2]
        assert row.attempt == 2
        assert [e.error for e in row.errors] == ["RuntimeError: first time unlucky"]

    @pytest.mark.parametrize("state", ["cancelled", "retryable", "scheduled"])
    def test_other_states_become_available_now(self, engine: Engine, state: str) -> None:
        job_id = insert_job(engine, "again")
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        set_state(engine, job_id, state, scheduled_at=later)
        row = sa_river.retry_job(engine, job_id)
        assert row is not None
        assert row.state is S.AVAILABLE
        assert row.finalized_at is None
        assert row.scheduled_at < later - timedelta(minutes=59)

    def test_a_running_job_is_left_alone(self, engine: Engine) -> None:
        job_id = insert_job(engine, "busy")
        set_state(engine, job_id, "running", attempt=1)
        before = job(engine, job_id)
        assert sa_river.retry_job(engine, job_id) == before
        assert job(engine, job_id) == before

    def test_a_missing_job_is_none(self, engine: Engine) -> None:
        assert sa_river.retry_job(engine, 987654) is None


# --- pause_queue / resume_queue ----------------------------------------------------------------


class TestPauseResume:
    def test_paused_queue_is_not_fetched_until_resumed(self, db_url: URL, engine: Engine) -> None:
        workers = Workers()

        @workers.handler("pausable")
        def pausable(job: Job[dict[str, Any]]) -> None:
            pass

        # A long poll interval: only NOTIFY (insert, resume) can make the worker fetch soon.
        with running_worker(db_url, workers, {"default": 5, "other": 5}, fetch_poll_interval=10):
            sa_river.pause_queue(engine, "default")
            paused = [insert_job(engine, "pausable") for _ in range(3)]
            other = insert_job(engine, "pausable", opts=InsertOpts(queue="other"))
            wait_for_state(engine, other, S.COMPLETED, timeout=10)  # other queues go on
            deadline = time.monotonic() + 1.6
            while time.monotonic() < deadline:
                assert {job(engine, i).state for i in paused} == {S.AVAILABLE}
                time.sleep(0.1)
            assert queue_row(engine, "default").paused_at is not None

            sa_river.resume_queue(engine, "default")
            began = time.monotonic()
            for job_id in paused:
                wait_for_state(engine, job_id, S.COMPLETED, timeout=10)
            assert time.monotonic() - began < 2
        assert queue_row(engine, "default").paused_at is None

    def test_pause_is_noticed_by_a_polling_worker(self, db_url: URL, engine: Engine) -> None:
        workers = Workers()

        @workers.handler("pausable")
        def pausable(job: Job[dict[str, Any]]) -> None:
            pass

        with running_worker(db_url, workers, poll_only=True, fetch_poll_interval=0.2):
            sa_river.pause_queue(engine, "default")
            time.sleep(0.3)
            job_id = insert_job(engine, "pausable")
            time.sleep(1.0)
            assert job(engine, job_id).state is S.AVAILABLE
            sa_river.resume_queue(engine, "default")
            wait_for_state(engine, job_id, S.COMPLETED, timeout=5)

    def test_pause_creates_the_queue_row_and_keeps_the_first_paused_at(
        self, engine: Engine
    ) -> None:
        assert queue_row(engine, "brand_new") is None
        sa_river.pause_queue(engine, "brand_new")
        first = queue_row(engine, "brand_new").paused_at
        assert first is not None
        sa_river.pause_queue(engine, "brand_new")
        assert queue_row(engine, "brand_new").paused_at == first
        sa_river.resume_queue(engine, "brand_new")
        assert queue_row(engine, "brand_new").paused_at is None
        sa_river.resume_queue(engine, "never_seen")  # nothing to resume: no error, no row
        assert queue_row(engine, "never_seen") is None

    def test_pause_in_a_rolled_back_transaction_does_nothing(self, engine: Engine) -> None:
        with Session(engine) as session, session.begin():
            sa_river.pause_queue(session, "default")
            session.rollback()
        assert queue_row(engine, "default") is None

    @pytest.mark.parametrize("name", ["", "x" * 128, 5])
    def test_bad_queue_names_are_rejected(self, engine: Engine, name: Any) -> None:
        with pytest.raises(InvalidJobError) as info:
            sa_river.pause_queue(engine, name)
        assert info.value.field == "queue"
        with pytest.raises(InvalidJobError):
            sa_river.resume_queue(engine, name)
        assert count_states(engine) == {}


class TestAsyncTwins:
    """Each control function's ``_async`` twin runs the same statement on an async target."""

    def test_every_twin_on_an_async_engine_and_session(self, db_url: URL, engine: Engine) -> None:
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

        from sa_river.queries.job_fetch import job_get_available

        first = insert_job(engine, "twin", {"n": 1})
        second = insert_job(engine, "twin", {"n": 2})

        async def body() -> dict[str, Any]:
            aengine = create_async_engine(db_url.set(drivername="postgresql+psycopg"))
            try:
                seen: dict[str, Any] = {}
                got = await sa_river.get_job_async(aengine, first)
                seen["get"] = got.args if got else None
                listed = await sa_river.list_jobs_async(aengine, kinds=["twin"], after_id=first)
                seen["list"] = [j.id for j in listed]
                cancelled = await sa_river.cancel_job_async(aengine, first)
                seen["cancel"] = cancelled.state if cancelled else None
                retried = await sa_river.retry_job_async(aengine, first)
                seen["retry"] = retried.state if retried else None
                async with AsyncSession(aengine) as session:
                    await sa_river.pause_queue_async(session, "default")
                    await session.rollback()  # the session's transaction: nothing paused
                await sa_river.pause_queue_async(aengine, "twins")
                await sa_river.resume_queue_async(aengine, "twins")
                with engine.begin() as conn:  # a worker starts the second job's attempt
                    (running,) = job_get_available(
                        conn, queue="default", limit=1, client_id="twin-test"
                    )
                async with AsyncSession(aengine) as session, session.begin():
                    seen["complete"] = await sa_river.complete_in_async(session, running)
                seen["again"] = await sa_river.complete_in_async(aengine, running)
                return seen
            finally:
                await aengine.dispose()

        seen = asyncio.run(asyncio.wait_for(body(), timeout=30))
        assert seen == {
            "get": {"n": 1},
            "list": [second],
            "cancel": JobState.CANCELLED,
            "retry": JobState.AVAILABLE,
            "complete": True,
            "again": False,  # that attempt is no longer running
        }
        assert queue_row(engine, "default") is None
        paused = queue_row(engine, "twins")
        assert paused is not None
        assert paused.paused_at is None
        done = sa_river.get_job(engine, second)
        assert done is not None
        assert done.state is JobState.COMPLETED

    def test_a_sync_target_on_an_async_twin_is_a_type_error(self, engine: Engine) -> None:
        with pytest.raises(TypeError, match="AsyncSession"):
            asyncio.run(sa_river.get_job_async(engine, 1))  # type: ignore[arg-type]
