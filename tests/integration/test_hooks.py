"""Hooks around insert and work (``sa_river.hooks``), against real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

import sa_river
from sa_river import (
    Hook,
    InsertingJob,
    InsertOpts,
    InsertResult,
    Job,
    JobCancel,
    JobSnooze,
    JobState,
    Workers,
    WorkOutcome,
    hooks_installed,
)
from tests.integration._worker_helpers import running_worker, wait_for_state, wait_until

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class Recorder(Hook):
    """Records every call, with the thread it came from."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.before_work_thread: dict[int, int] = {}
        self.after_work_thread: dict[int, int] = {}
        self.outcomes: dict[int, WorkOutcome] = {}

    def before_insert(self, jobs: Sequence[InsertingJob]) -> None:
        self.calls.append(("before_insert", [j.kind for j in jobs]))
        for job in jobs:
            job.metadata["traced_by"] = "recorder"

    def after_insert(
        self,
        jobs: Sequence[InsertingJob],
        results: Sequence[InsertResult],
        error: BaseException | None,
    ) -> None:
        self.calls.append(("after_insert", ([r.job.id for r in results], error)))

    def before_work(self, job: Job[Any]) -> None:
        with self.lock:
            self.before_work_thread[job.id] = threading.get_ident()
        request_id.set(job.metadata.get("request_id"))

    def after_work(self, job: Job[Any], outcome: WorkOutcome) -> None:
        with self.lock:
            self.after_work_thread[job.id] = threading.get_ident()
            self.outcomes[job.id] = outcome


class TestInsertHooks:
    def test_hooks_see_the_jobs_edit_metadata_and_get_the_results(self, engine: Engine) -> None:
        recorder = Recorder()
        with hooks_installed(recorder), Session(engine) as session, session.begin():
            result = sa_river.insert(
                session, ("email", {"to": "a"}), InsertOpts(metadata={"request_id": "r1"})
            )
            many = sa_river.insert_many(session, [("email", {"to": "b"}), ("sms", {})])
        assert recorder.calls == [
            ("before_insert", ["email"]),
            ("after_insert", ([result.job.id], None)),
            ("before_insert", ["email", "sms"]),
            ("after_insert", ([r.job.id for r in many], None)),
        ]
        # What the hook added to the metadata is stored beside the caller's own keys.
        assert result.job.metadata == {"request_id": "r1", "traced_by": "recorder"}
        stored = sa_river.get_job(engine, many[1].job.id)
        assert stored is not None
        assert stored.metadata == {"traced_by": "recorder"}

    def test_copy_path_stores_the_hooks_metadata(self, engine: Engine) -> None:
        recorder = Recorder()
        with hooks_installed(recorder):
            assert sa_river.insert_many_fast(engine, [("bulk", {"n": n}) for n in range(3)]) == 3
        assert recorder.calls == [
            ("before_insert", ["bulk", "bulk", "bulk"]),
            ("after_insert", ([], None)),
        ]
        with engine.connect() as conn:
            metadata = conn.execute(text("SELECT metadata FROM river_job")).scalars().all()
        assert metadata == [{"traced_by": "recorder"}] * 3

    def test_async_insert_runs_the_hooks(self, db_url: str) -> None:
        recorder = Recorder()

        async def main() -> InsertResult:
            async_engine = create_async_engine(db_url)
            try:
                async with async_engine.begin() as conn:
                    return await sa_river.insert_async(conn, ("email", {}))
            finally:
                await async_engine.dispose()

        with hooks_installed(recorder):
            result = asyncio.run(main())
        assert result.job.metadata == {"traced_by": "recorder"}
        assert recorder.calls == [
            ("before_insert", ["email"]),
            ("after_insert", ([result.job.id], None)),
        ]

    def test_a_before_insert_hook_that_raises_rejects_the_insert(self, engine: Engine) -> None:
        class Reject(Hook):
            def before_insert(self, jobs: Sequence[InsertingJob]) -> None:
                raise PermissionError("kind not allowed here")

        with hooks_installed(Reject()), pytest.raises(PermissionError, match="not allowed"):
            sa_river.insert(engine, ("email", {}))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM river_job")).scalar_one() == 0

    def test_metadata_a_hook_makes_unserialisable_is_never_inserted(self, engine: Engine) -> None:
        class Bad(Hook):
            def before_insert(self, jobs: Sequence[InsertingJob]) -> None:
                jobs[0].metadata["span"] = object()

        with hooks_installed(Bad()), pytest.raises(sa_river.UnserializableArgsError):
            sa_river.insert(engine, ("email", {}))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM river_job")).scalar_one() == 0

    def test_after_insert_hears_of_a_failed_insert(self, empty_db_url: str) -> None:
        recorder = Recorder()
        bare = create_engine(empty_db_url)
        try:
            with hooks_installed(recorder), pytest.raises(ProgrammingError):
                sa_river.insert(bare, ("email", {}))
        finally:
            bare.dispose()
        [before, (name, (ids, error))] = recorder.calls
        assert before == ("before_insert", ["email"])
        assert name == "after_insert"
        assert ids == []
        assert isinstance(error, ProgrammingError)

    def test_a_wrong_target_is_reported_alike_by_every_copy_path(self, engine: Engine) -> None:
        recorder = Recorder()
        jobs: list[tuple[str, dict[str, Any]]] = [("bulk", {})]

        async def copy_on_a_sync_engine() -> int:
            return await sa_river.insert_many_fast_async(engine, jobs)  # type: ignore[arg-type]

        async def copy_on_an_async_engine() -> int:
            async_engine = create_async_engine(engine.url)
            try:
                return sa_river.insert_many_fast(async_engine, jobs)  # type: ignore[arg-type]
            finally:
                await async_engine.dispose()

        for attempt in (copy_on_a_sync_engine, copy_on_an_async_engine):
            recorder.calls.clear()
            with hooks_installed(recorder), pytest.raises(TypeError, match="target must be"):
                asyncio.run(attempt())
            [before, (name, (ids, error))] = recorder.calls
            assert before == ("before_insert", ["bulk"]), attempt.__name__
            assert (name, ids) == ("after_insert", [])
            assert isinstance(error, TypeError)

    def test_no_hook_runs_once_removed(self, engine: Engine) -> None:
        recorder = Recorder()
        with hooks_installed(recorder):
            pass
        sa_river.insert(engine, ("email", {}))
        assert recorder.calls == []
        assert sa_river.hooks.installed_hooks() == ()


class InTransaction(Hook):
    """Records each insert event in order; in the transaction, also what its connection sees."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, Any]] = []

    def before_insert(self, jobs: Sequence[InsertingJob]) -> None:
        self.calls.append(("before_insert", [j.kind for j in jobs]))

    def after_insert_in_transaction(
        self, conn: Connection, jobs: Sequence[InsertingJob], results: Sequence[InsertResult]
    ) -> None:
        assert isinstance(conn, Connection)
        assert conn.in_transaction()
        visible = conn.execute(text("SELECT count(*) FROM river_job")).scalar_one()
        self.calls.append(("in_transaction", ([r.job.id for r in results], visible)))
        if self.fail:
            raise RuntimeError("refused in the transaction")

    def after_insert(
        self,
        jobs: Sequence[InsertingJob],
        results: Sequence[InsertResult],
        error: BaseException | None,
    ) -> None:
        self.calls.append(("after_insert", ([r.job.id for r in results], error)))


def expected_calls(one: InsertResult, many: list[InsertResult]) -> list[tuple[str, Any]]:
    """What :class:`InTransaction` records for an insert, an insert_many of two and a COPY of
    three, each in a transaction of its own (every count includes the earlier commits)."""
    ids = [r.job.id for r in many]
    return [
        ("before_insert", ["email"]),
        ("in_transaction", ([one.job.id], 1)),
        ("after_insert", ([one.job.id], None)),
        ("before_insert", ["email", "sms"]),
        ("in_transaction", (ids, 3)),
        ("after_insert", (ids, None)),
        ("before_insert", ["bulk"] * 3),
        ("in_transaction", ([], 6)),  # COPY returns no rows
        ("after_insert", ([], None)),
    ]


class TestAfterInsertInTransaction:
    def test_every_sync_insert_path_calls_it_on_the_inserting_connection(
        self, engine: Engine
    ) -> None:
        hook = InTransaction()
        with hooks_installed(hook):
            one = sa_river.insert(engine, ("email", {}))
            many = sa_river.insert_many(engine, [("email", {}), ("sms", {})])
            assert sa_river.insert_many_fast(engine, [("bulk", {})] * 3) == 3
        assert hook.calls == expected_calls(one, many)

    def test_every_async_insert_path_calls_it_on_the_sync_view(self, db_url: str) -> None:
        hook = InTransaction()

        async def main() -> tuple[InsertResult, list[InsertResult]]:
            async_engine = create_async_engine(db_url)
            try:
                one = await sa_river.insert_async(async_engine, ("email", {}))
                many = await sa_river.insert_many_async(async_engine, [("email", {}), ("sms", {})])
                fast: list[tuple[str, dict[str, Any]]] = [("bulk", {})] * 3
                assert await sa_river.insert_many_fast_async(async_engine, fast) == 3
                return one, many
            finally:
                await async_engine.dispose()

        with hooks_installed(hook):
            one, many = asyncio.run(main())
        assert hook.calls == expected_calls(one, many)

    def test_raising_in_it_fails_the_insert_and_nothing_is_committed(self, engine: Engine) -> None:
        hook = InTransaction(fail=True)
        with hooks_installed(hook):
            with pytest.raises(RuntimeError, match="refused"):
                sa_river.insert(engine, ("email", {}))
            with pytest.raises(RuntimeError, match="refused"):
                sa_river.insert_many_fast(engine, [("bulk", {})] * 2)
        assert len(hook.calls) == 6
        for calls, written in ((hook.calls[:3], 1), (hook.calls[3:], 2)):
            [_, (in_transaction, (_, visible)), (after, (ids, error))] = calls
            assert (in_transaction, visible) == ("in_transaction", written)  # then rolled back
            assert (after, ids) == ("after_insert", [])
            assert isinstance(error, RuntimeError)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM river_job")).scalar_one() == 0


class TestWorkHooks:
    def test_every_outcome_reaches_after_work_on_the_handlers_own_thread(
        self, db_url: str, engine: Engine
    ) -> None:
        workers = Workers()
        seen_request_ids: dict[int, str | None] = {}
        handler_threads: dict[int, int] = {}

        def remember(job: Job[Any]) -> None:
            seen_request_ids[job.id] = request_id.get()
            handler_threads[job.id] = threading.get_ident()

        @workers.handler("ok")
        def ok(job: Job[dict[str, Any]]) -> None:
            remember(job)

        @workers.handler("ok_async")
        async def ok_async(job: Job[dict[str, Any]]) -> None:
            remember(job)

        @workers.handler("fails")
        def fails(job: Job[dict[str, Any]]) -> None:
            raise ValueError("boom")

        @workers.handler("snoozes")
        def snoozes(job: Job[dict[str, Any]]) -> None:
            if job.attempt == 1 and not job.row.errors and job.metadata.get("snoozed") is None:
                raise JobSnooze(timedelta(hours=1))

        @workers.handler("cancels")
        async def cancels(job: Job[dict[str, Any]]) -> None:
            raise JobCancel("not wanted")

        recorder = Recorder()
        with hooks_installed(recorder):
            ids = {
                "ok": sa_river.insert(
                    engine, ("ok", {}), InsertOpts(metadata={"request_id": "req-1"})
                ).job.id,
                "ok_async": sa_river.insert(
                    engine, ("ok_async", {}), InsertOpts(metadata={"request_id": "req-2"})
                ).job.id,
                "retried": sa_river.insert(engine, ("fails", {})).job.id,
                "discarded": sa_river.insert(
                    engine, ("fails", {}), InsertOpts(max_attempts=1)
                ).job.id,
                "snoozed": sa_river.insert(engine, ("snoozes", {})).job.id,
                "cancelled": sa_river.insert(engine, ("cancels", {})).job.id,
                "unknown": sa_river.insert(engine, ("ghost", {})).job.id,
            }
            with running_worker(db_url, workers):
                wait_until(
                    lambda: len(recorder.outcomes) >= len(ids),
                    message=lambda: f"after_work for every job; got {recorder.outcomes}",
                )
        results = {name: recorder.outcomes[job_id].result for name, job_id in ids.items()}
        assert results == {
            "ok": "completed",
            "ok_async": "completed",
            "retried": "retried",
            "discarded": "discarded",
            "snoozed": "snoozed",
            "cancelled": "cancelled",
            "unknown": "retried",
        }
        outcome = recorder.outcomes[ids["retried"]]
        assert isinstance(outcome.error, ValueError)
        assert outcome.state in (JobState.AVAILABLE, JobState.RETRYABLE)
        assert recorder.outcomes[ids["snoozed"]].state is JobState.SCHEDULED
        assert recorder.outcomes[ids["ok"]].error is None
        assert recorder.outcomes[ids["ok"]].duration >= 0
        # What before_work put in a context variable, the handler saw (sync and async).
        assert seen_request_ids == {ids["ok"]: "req-1", ids["ok_async"]: "req-2"}
        # The sync handler, before_work and after_work all ran on one thread.
        job_id = ids["ok"]
        assert recorder.before_work_thread[job_id] == handler_threads[job_id]
        assert recorder.after_work_thread[job_id] == handler_threads[job_id]
        # A job with no handler never ran, so it had no before_work.
        assert ids["unknown"] not in recorder.before_work_thread

    def test_a_failing_hook_is_logged_and_the_job_still_completes(
        self, db_url: str, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken(Hook):
            def before_work(self, job: Job[Any]) -> None:
                raise RuntimeError("tracer down")

            def after_work(self, job: Job[Any], outcome: WorkOutcome) -> None:
                raise RuntimeError("tracer still down")

        workers = Workers()
        ran = threading.Event()

        @workers.handler("ok")
        def ok(job: Job[dict[str, Any]]) -> None:
            ran.set()

        job_id = sa_river.insert(engine, ("ok", {})).job.id
        with (
            caplog.at_level(logging.ERROR, logger="sa_river.hooks"),
            hooks_installed(Broken()),
            running_worker(db_url, workers),
        ):
            wait_for_state(engine, job_id, JobState.COMPLETED)
        assert ran.is_set()
        failures = [r for r in caplog.records if getattr(r, "event", None) == "hook_failed"]
        assert {getattr(r, "method", None) for r in failures} == {"before_work", "after_work"}

    def test_a_timed_out_sync_job_reports_its_timeout(self, db_url: str, engine: Engine) -> None:
        workers = Workers()
        release = threading.Event()

        @workers.handler("hangs", timeout=timedelta(seconds=0.3))
        def hangs(job: Job[dict[str, Any]]) -> None:
            release.wait(10)

        recorder = Recorder()
        job_id = sa_river.insert(engine, ("hangs", {}), InsertOpts(max_attempts=1)).job.id
        try:
            with hooks_installed(recorder), running_worker(db_url, workers):
                wait_for_state(engine, job_id, JobState.DISCARDED)
                wait_until(lambda: job_id in recorder.outcomes, message="after_work")
        finally:
            release.set()
        outcome = recorder.outcomes[job_id]
        assert outcome.result == "discarded"
        assert "timed out" in str(outcome.error)
        # The handler's thread was abandoned: after_work came from the watchdog.
        assert recorder.after_work_thread[job_id] != recorder.before_work_thread[job_id]
