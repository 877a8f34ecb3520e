"""Handlers that live inside the application, against real PostgreSQL and real runners: a
handler's Session committed with its job, recorded output and ``wait_for``, a lifespan whose
value reaches every job, middleware, an error handler that decides the outcome, and a registry
that carries the runner's whole configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _worker_helpers import job, running_worker, wait_for_state, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

import sa_river
from sa_river import (
    ConfigError,
    Hook,
    InvalidJobError,
    Job,
    JobCancel,
    JobDiscard,
    JobRetry,
    JobSnooze,
    JobState,
    JobWaitTimeout,
    LifespanError,
    Middleware,
    PeriodicJob,
    Worker,
    Workers,
)
from sa_river.hooks import installed_hooks
from sa_river.urls import libpq_dsn

S = JobState


def no_delay(attempt: int) -> timedelta:
    return timedelta(0)


def a_minute(attempt: int) -> timedelta:
    return timedelta(minutes=1)


@pytest.fixture
def payments(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE payments (job_id bigint, amount int)"))
    return engine


def _payments(engine: Engine) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT job_id, amount FROM payments"))]


def _insert(engine: Engine, kind: str, args: dict[str, Any] | None = None, **opts: Any) -> int:
    with engine.begin() as conn:
        return sa_river.insert(conn, (kind, args or {}), sa_river.InsertOpts(**opts)).job.id


# -- a Session in the handler -----------------------------------------------------------------


def test_a_handlers_session_commits_its_writes_with_the_jobs_completion(
    db_url: URL, payments: Engine
) -> None:
    workers = Workers()

    @workers.handler("charge")
    def charge(job: Job[dict[str, Any]], session: Session) -> dict[str, int]:
        session.execute(
            text("INSERT INTO payments VALUES (:id, :amount)"),
            {"id": job.id, "amount": job.args["amount"]},
        )
        # The job is not completed yet: the session's own transaction completes it.
        state = session.execute(
            text("SELECT state FROM river_job WHERE id = :id"), {"id": job.id}
        ).scalar()
        assert state == "running"
        return {"charged": job.args["amount"]}

    job_id = _insert(payments, "charge", {"amount": 7})
    with running_worker(db_url, workers):
        row = sa_river.wait_for(payments, job_id, timeout=20)
    assert row.state is S.COMPLETED
    assert row.metadata["output"] == {"charged": 7}
    assert _payments(payments) == [(job_id, 7)]


def test_a_handler_that_raises_rolls_its_session_back_and_is_retried(
    db_url: URL, payments: Engine
) -> None:
    workers = Workers()
    attempts: list[int] = []

    @workers.handler("charge", retry=no_delay)
    def charge(job: Job[dict[str, Any]], session: Session) -> None:
        attempts.append(job.attempt)
        session.execute(text("INSERT INTO payments VALUES (:id, 1)"), {"id": job.id})
        if job.attempt == 1:
            raise RuntimeError("card declined")

    job_id = _insert(payments, "charge")
    with running_worker(db_url, workers):
        row = sa_river.wait_for(payments, job_id, timeout=20)
    assert attempts == [1, 2]
    assert row.state is S.COMPLETED
    assert "card declined" in row.errors[0].error
    assert _payments(payments) == [(job_id, 1)]  # the first attempt's write is gone


def test_a_snooze_or_cancel_rolls_the_session_back_too(db_url: URL, payments: Engine) -> None:
    workers = Workers()

    @workers.handler("snoozer")
    def snoozer(job: Job[dict[str, Any]], session: Session) -> None:
        session.execute(text("INSERT INTO payments VALUES (:id, 2)"), {"id": job.id})
        raise JobSnooze(timedelta(hours=1))

    @workers.handler("canceller")
    def canceller(job: Job[dict[str, Any]], session: Session) -> None:
        session.execute(text("INSERT INTO payments VALUES (:id, 3)"), {"id": job.id})
        raise JobCancel("not wanted")

    snoozed = _insert(payments, "snoozer")
    cancelled = _insert(payments, "canceller")
    with running_worker(db_url, workers):
        wait_for_state(payments, snoozed, S.SCHEDULED)
        assert sa_river.wait_for(payments, cancelled, timeout=20).state is S.CANCELLED
    assert _payments(payments) == []


def test_a_handler_session_whose_attempt_was_taken_away_is_rolled_back(
    db_url: URL, payments: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    workers = Workers()
    started, release = threading.Event(), threading.Event()

    @workers.handler("slow_charge")
    def slow_charge(job: Job[dict[str, Any]], session: Session) -> None:
        session.execute(text("INSERT INTO payments VALUES (:id, 5)"), {"id": job.id})
        started.set()
        assert release.wait(20)

    job_id = _insert(payments, "slow_charge")
    with caplog.at_level(logging.WARNING, "sa_river"), running_worker(db_url, workers):
        assert started.wait(20)
        # As the rescuer would: the attempt is given up and the job made retryable.
        with payments.begin() as conn:
            conn.execute(
                text(
                    "UPDATE river_job SET state = 'retryable', "
                    "scheduled_at = now() + interval '1 hour' WHERE id = :id"
                ),
                {"id": job_id},
            )
        release.set()
        wait_until(lambda: any(r.__dict__.get("event") == "job_fenced" for r in caplog.records))
    assert job(payments, job_id).state is S.RETRYABLE
    assert _payments(payments) == []


def test_an_async_handler_gets_an_async_session_committed_with_its_job(
    db_url: URL, payments: Engine
) -> None:
    workers = Workers()

    @workers.handler("charge_async")
    async def charge(job: Job[dict[str, Any]], session: AsyncSession) -> int:
        await session.execute(text("INSERT INTO payments VALUES (:id, 9)"), {"id": job.id})
        return 9

    job_id = _insert(payments, "charge_async")
    with running_worker(db_url, workers):
        row = sa_river.wait_for(payments, job_id, timeout=20)
    assert row.state is S.COMPLETED
    assert row.metadata["output"] == 9
    assert _payments(payments) == [(job_id, 9)]


def test_the_apps_session_factory_makes_the_handlers_session(db_url: URL, payments: Engine) -> None:
    made: list[Session] = []

    class AppSession(Session):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            made.append(self)

    workers = Workers(session_factory=sessionmaker(payments, class_=AppSession))

    @workers.handler("charge")
    def charge(job: Job[dict[str, Any]], session: Session) -> None:
        assert isinstance(session, AppSession)
        session.execute(text("INSERT INTO payments VALUES (:id, 4)"), {"id": job.id})

    job_id = _insert(payments, "charge")
    with running_worker(db_url, workers):
        assert sa_river.wait_for(payments, job_id, timeout=20).state is S.COMPLETED
    assert len(made) == 1
    assert _payments(payments) == [(job_id, 4)]


def test_a_handler_asking_for_what_cannot_be_given_fails_at_registration() -> None:
    workers = Workers()

    def three(job: Job[Any], session: Session, extra: int) -> None: ...

    def unannotated(job, session):  # type: ignore[no-untyped-def]
        ...

    async def async_with_sync_session(job: Job[Any], session: Session) -> None: ...

    def sync_with_async_session(job: Job[Any], session: AsyncSession) -> None: ...

    def keyword_only(job: Job[Any], *, client: object) -> None: ...

    for fn, says in [
        (three, "asks for (job, session, extra)"),
        (unannotated, "'session' must be annotated Session"),
        (async_with_sync_session, "must be an AsyncSession, not a Session"),
        (sync_with_async_session, "must be a Session, not an AsyncSession"),
        (keyword_only, "asks for (job, client)"),
    ]:
        with pytest.raises(InvalidJobError, match="handler") as raised:
            workers.add(fn.__name__, fn)
        assert says in str(raised.value)
    assert workers.kinds() == []


# -- recorded output and waiting ----------------------------------------------------------------


def test_recorded_output_is_stored_where_river_keeps_it_and_wait_for_returns_it(
    db_url: URL, engine: Engine
) -> None:
    workers = Workers()

    @workers.handler("report")
    def report(job: Job[dict[str, Any]]) -> None:
        job.record_output({"pages": 12, "title": "Novembre — 2026"})

    @workers.handler("returns")
    def returns(job: Job[dict[str, Any]]) -> list[int]:
        job.record_output("replaced by the return value")
        return [1, 2, 3]

    @workers.handler("nothing")
    def nothing(job: Job[dict[str, Any]]) -> None:
        return None

    ids = [_insert(engine, kind) for kind in ("report", "returns", "nothing")]
    with running_worker(db_url, workers):
        rows = [sa_river.wait_for(engine, job_id, timeout=20) for job_id in ids]
    assert rows[0].metadata["output"] == {"pages": 12, "title": "Novembre — 2026"}
    assert rows[1].metadata["output"] == [1, 2, 3]
    assert "output" not in rows[2].metadata
    with engine.connect() as conn:  # River's UI reads it with the same path
        stored = conn.execute(
            text("SELECT metadata->'output'->>'pages' FROM river_job WHERE id = :id"),
            {"id": ids[0]},
        ).scalar()
    assert stored == "12"


def test_an_output_that_is_not_json_fails_the_attempt_with_an_error_naming_output(
    db_url: URL, engine: Engine
) -> None:
    workers = Workers()
    raised: list[BaseException] = []

    @workers.handler("bad_return", retry=a_minute)
    def bad_return(job: Job[dict[str, Any]]) -> object:
        return object()

    @workers.handler("bad_record", retry=a_minute)
    def bad_record(job: Job[dict[str, Any]]) -> None:
        try:
            job.record_output({"when": object()})
        except InvalidJobError as exc:
            raised.append(exc)
            raise

    returned = _insert(engine, "bad_return")
    recorded = _insert(engine, "bad_record")
    with running_worker(db_url, workers):
        for job_id in (returned, recorded):
            row = wait_for_state(engine, job_id, S.RETRYABLE)
            assert "output" in row.errors[0].error
            assert "JSON" in row.errors[0].error
            assert "output" not in row.metadata
    assert len(raised) == 1
    assert str(raised[0]).startswith("output.when")


def test_wait_for_times_out_with_the_jobs_state_and_refuses_a_missing_job(
    engine: Engine,
) -> None:
    job_id = _insert(engine, "nobody_works_this")
    with pytest.raises(JobWaitTimeout, match=f"job {job_id} .* within 0.3s .*available"):
        sa_river.wait_for(engine, job_id, timeout=0.3, poll_interval=0.1)
    with pytest.raises(LookupError, match="no job 987654"):
        sa_river.wait_for(engine, 987654, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        sa_river.wait_for(engine, job_id, timeout=0)
    # The borrowed connection went back to the pool listening to nothing.
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_listening_channels()")).scalar() == 0


def test_wait_for_through_a_session_returns_the_output_of_a_job_finished_later(
    db_url: URL, engine: Engine
) -> None:
    workers = Workers()
    go = threading.Event()

    @workers.handler("gated")
    def gated(job: Job[dict[str, Any]]) -> str:
        assert go.wait(20)
        return "done"

    job_id = _insert(engine, "gated")
    with running_worker(db_url, workers, completer_flush_interval=0.01):
        threading.Timer(0.5, go.set).start()
        with Session(engine) as session:  # a Session lends its engine
            row = sa_river.wait_for(session, job_id, timeout=20, poll_interval=60)
    assert row.metadata["output"] == "done"


def test_wait_for_async_returns_the_finalised_job(db_url: URL, engine: Engine) -> None:
    workers = Workers()

    @workers.handler("doubler")
    async def doubler(job: Job[dict[str, Any]]) -> int:
        return int(job.args["n"]) * 2

    job_id = _insert(engine, "doubler", {"n": 21})
    async_engine = create_async_engine(db_url)

    async def wait() -> sa_river.JobRow:
        try:
            async with AsyncSession(async_engine) as session:
                return await sa_river.wait_for_async(session, job_id, timeout=20, poll_interval=60)
        finally:
            await async_engine.dispose()

    with running_worker(db_url, workers):
        row = asyncio.run(wait())
    assert row.metadata["output"] == 42


# -- lifespan -----------------------------------------------------------------------------------


def test_a_lifespans_value_reaches_every_job_and_it_ends_when_the_worker_stops(
    db_url: URL, engine: Engine
) -> None:
    events: list[str] = []

    @contextlib.contextmanager
    def lifespan() -> Iterator[dict[str, str]]:
        events.append("enter")
        yield {"greeting": "hello"}
        events.append("exit")

    workers = Workers(lifespan=lifespan)

    @workers.handler("greet")
    def greet(job: Job[dict[str, Any]]) -> str:
        return str(job.context["greeting"])

    job_id = _insert(engine, "greet")
    with running_worker(db_url, workers):
        assert events == ["enter"]
        assert sa_river.wait_for(engine, job_id, timeout=20).metadata["output"] == "hello"
    assert events == ["enter", "exit"]


def test_an_async_lifespan_runs_on_the_loop_async_handlers_run_on(
    db_url: URL, engine: Engine
) -> None:
    loops: dict[str, asyncio.AbstractEventLoop] = {}

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[asyncio.Queue[int]]:
        loops["lifespan"] = asyncio.get_running_loop()
        yield asyncio.Queue()  # bound to this loop: usable only from the handlers' loop
        loops["exit"] = asyncio.get_running_loop()

    workers = Workers(lifespan=lifespan)

    @workers.handler("enqueue_local")
    async def enqueue_local(job: Job[dict[str, Any]]) -> int:
        loops["handler"] = asyncio.get_running_loop()
        await job.context.put(1)
        return int(job.context.qsize())

    job_id = _insert(engine, "enqueue_local")
    with running_worker(db_url, workers):
        assert sa_river.wait_for(engine, job_id, timeout=20).metadata["output"] == 1
    assert loops["lifespan"] is loops["handler"] is loops["exit"]


def test_a_lifespan_that_raises_stops_the_worker_from_starting(db_url: URL) -> None:
    @contextlib.contextmanager
    def lifespan() -> Iterator[None]:
        raise OSError("cache server unreachable")
        yield

    worker = Worker(db_url, Workers(lifespan=lifespan))
    with pytest.raises(LifespanError, match=r"lifespan .* OSError: cache server unreachable"):
        worker.start()

    def not_a_context_manager() -> int:
        return 1

    worker = Worker(db_url, Workers(lifespan=not_a_context_manager))
    with pytest.raises(LifespanError, match="not a context manager"):
        worker.start()


# -- middleware -----------------------------------------------------------------------------


def test_middleware_wraps_handlers_registry_first_then_the_kinds_own(
    db_url: URL, engine: Engine
) -> None:
    calls: list[str] = []

    def outer(job: Job[Any], call_next: Callable[[], Any]) -> Any:
        calls.append(f"outer>{job.kind}")
        result = call_next()
        calls.append(f"outer<{result}")
        return result

    async def outer_async(job: Job[Any], call_next: Callable[[], Any]) -> Any:
        calls.append(f"outer_async>{job.kind}")
        return await call_next()

    class Both(Middleware):
        def work(self, job: Job[Any], call_next: Callable[[], Any]) -> Any:
            calls.append("both")
            return call_next()

        async def work_async(self, job: Job[Any], call_next: Callable[[], Any]) -> Any:
            calls.append("both_async")
            return await call_next()

    def own(job: Job[Any], call_next: Callable[[], Any]) -> Any:
        calls.append("own")
        return call_next()

    workers = Workers(middleware=[outer, outer_async])
    workers.add_middleware(Both())

    @workers.handler("sync_kind", middleware=[own])
    def sync_kind(job: Job[dict[str, Any]]) -> str:
        calls.append("handler")
        return "r"

    job_id = _insert(engine, "sync_kind")
    with running_worker(db_url, workers):
        sa_river.wait_for(engine, job_id, timeout=20)
    assert calls == ["outer>sync_kind", "both", "own", "handler", "outer<r"]

    calls.clear()

    @workers.handler("async_kind")
    async def async_kind(job: Job[dict[str, Any]]) -> None:
        calls.append("handler")

    job_id = _insert(engine, "async_kind")
    with running_worker(db_url, workers):
        sa_river.wait_for(engine, job_id, timeout=20)
    assert calls == ["outer_async>async_kind", "both_async", "handler"]


def test_a_middleware_decides_the_outcome_by_what_it_raises(db_url: URL, engine: Engine) -> None:
    def veto(job: Job[Any], call_next: Callable[[], Any]) -> Any:
        if job.args.get("blocked"):
            raise JobCancel("blocked by policy")
        return call_next()

    workers = Workers(middleware=[veto])
    ran: list[int] = []

    @workers.handler("guarded")
    def guarded(job: Job[dict[str, Any]]) -> None:
        ran.append(job.id)

    blocked = _insert(engine, "guarded", {"blocked": True})
    allowed = _insert(engine, "guarded", {"blocked": False})
    with running_worker(db_url, workers):
        assert sa_river.wait_for(engine, blocked, timeout=20).state is S.CANCELLED
        assert sa_river.wait_for(engine, allowed, timeout=20).state is S.COMPLETED
    assert ran == [allowed]
    assert "blocked by policy" in job(engine, blocked).errors[0].error


def test_middleware_of_the_wrong_type_is_refused_naming_it() -> None:
    with pytest.raises(InvalidJobError, match=r"middleware\[1\]: .* got int"):
        Workers(middleware=[lambda job, call_next: call_next(), 3])  # type: ignore[list-item]


# -- error handler --------------------------------------------------------------------------


def test_the_error_handler_decides_the_outcome_and_the_error_is_still_recorded(
    db_url: URL, engine: Engine
) -> None:
    seen: list[tuple[str, str]] = []

    def on_error(job: Job[Any], error: BaseException) -> BaseException | None:
        seen.append((job.kind, type(error).__name__))
        decision: dict[str, BaseException | None] = {
            "to_cancel": JobCancel("bad request"),
            "to_discard": JobDiscard("never works"),
            "to_retry": JobRetry(0),
            "to_snooze": JobSnooze(timedelta(hours=1)),
            "usual": None,
        }
        return decision[job.kind]

    workers = Workers(error_handler=on_error)
    for kind in ("to_cancel", "to_discard", "to_retry", "to_snooze", "usual"):
        # A sync handler decided per kind: one function serves all five.
        def fail(job: Job[dict[str, Any]]) -> None:
            if job.kind == "to_retry" and job.attempt > 1:
                return
            raise ValueError(f"{job.kind} failed")

        workers.add(kind, fail, retry=a_minute)
    kinds = ("to_cancel", "to_discard", "to_retry", "to_snooze", "usual")
    ids = {kind: _insert(engine, kind) for kind in kinds}
    with running_worker(db_url, workers):
        assert sa_river.wait_for(engine, ids["to_cancel"], timeout=20).state is S.CANCELLED
        assert sa_river.wait_for(engine, ids["to_discard"], timeout=20).state is S.DISCARDED
        retried = sa_river.wait_for(engine, ids["to_retry"], timeout=20)
        snoozed = wait_for_state(engine, ids["to_snooze"], S.SCHEDULED)
        usual = wait_for_state(engine, ids["usual"], S.RETRYABLE)
    assert retried.state is S.COMPLETED
    assert retried.attempt == 2  # retried at once, not in a minute
    assert snoozed.attempt == 0
    assert snoozed.metadata["snoozes"] == 1
    assert usual.attempt == 1
    for kind, job_id in ids.items():
        row = job(engine, job_id)
        assert f"ValueError: {kind} failed" in row.errors[0].error, kind
    assert ("to_cancel", "ValueError") in seen


def test_a_failing_error_handler_is_logged_and_the_usual_rules_apply(
    db_url: URL, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(job: Job[Any], error: BaseException) -> None:
        raise KeyError("oops")

    def kind_own(job: Job[Any], error: BaseException) -> BaseException:
        return JobDiscard("the kind's own")

    workers = Workers(error_handler=broken)

    @workers.handler("a", retry=a_minute)
    def a(job: Job[dict[str, Any]]) -> None:
        raise RuntimeError("a failed")

    @workers.handler("b", retry=a_minute, on_error=kind_own)
    def b(job: Job[dict[str, Any]]) -> None:
        raise RuntimeError("b failed")

    first, second = _insert(engine, "a"), _insert(engine, "b")
    with caplog.at_level(logging.ERROR, "sa_river"), running_worker(db_url, workers):
        wait_for_state(engine, first, S.RETRYABLE)
        wait_for_state(engine, second, S.DISCARDED)
    failed = [r for r in caplog.records if r.__dict__.get("event") == "error_handler_failed"]
    assert failed
    assert "the error handler raised" in failed[0].getMessage()


# -- the registry carries the runner's configuration --------------------------------------------


def test_a_registry_carries_periodic_jobs_retry_policy_and_hooks(
    db_url: URL, engine: Engine
) -> None:
    attempts: list[int] = []
    seen_by_hook: list[str] = []

    class Seen(Hook):
        def after_work(self, job: Job[Any], outcome: sa_river.WorkOutcome) -> None:
            seen_by_hook.append(outcome.result)

    hook = Seen()
    workers = Workers(
        periodic_jobs=[PeriodicJob(timedelta(hours=1), lambda: ("tick", {}), run_on_start=True)],
        retry_policy=no_delay,
        hooks=[hook],
    )

    @workers.handler("tick")
    def tick(job: Job[dict[str, Any]]) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("first tick fails")

    with running_worker(db_url, workers, elect_interval=0.2):
        assert hook in installed_hooks()
        wait_until(lambda: attempts == [1, 2], message="the periodic job, retried at once")
        wait_until(lambda: seen_by_hook == ["retried", "completed"])
    assert hook not in installed_hooks()


def test_periodic_jobs_or_a_retry_policy_given_twice_is_a_config_error(db_url: URL) -> None:
    periodic = [PeriodicJob(timedelta(hours=1), lambda: ("tick", {}))]
    with pytest.raises(ConfigError, match="periodic_jobs: given to both"):
        Worker(db_url, Workers(periodic_jobs=periodic), periodic_jobs=periodic)
    with pytest.raises(ConfigError, match="retry_policy: given to both"):
        Worker(db_url, Workers(retry_policy=no_delay), retry_policy=a_minute)


# -- the worker command runs the registry's whole configuration -------------------------------

_HERE = Path(__file__).parent


def _worker_command(url: URL, app: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sa_river",
        "worker",
        "--app",
        app,
        "--database-url",
        url.render_as_string(hide_password=False),
    ]


def test_the_worker_command_runs_a_registrys_periodic_jobs_lifespan_and_sessions(
    db_url: URL, engine: Engine, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE ticks (job_id bigint)"))
    log = tmp_path / "worker.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            _worker_command(db_url, "_registry_app:workers"),
            env={**os.environ, "PYTHONPATH": str(_HERE)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:

            def ticked() -> list[Any]:
                with engine.connect() as conn:
                    return list(conn.execute(text("SELECT job_id FROM ticks")).scalars())

            (job_id,) = wait_until(
                ticked, 60, interval=0.2, message=lambda: f"the periodic job; {log.read_text()}"
            )
            row = sa_river.wait_for(engine, job_id, timeout=20)
            assert row.kind == "registry_tick"
            assert row.state is S.COMPLETED
            assert row.metadata["output"] == {"from": "the lifespan"}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, log.read_text()


def test_the_worker_command_exits_1_naming_a_lifespan_that_fails(db_url: URL) -> None:
    done = subprocess.run(
        _worker_command(db_url, "_registry_app:failing"),
        env={**os.environ, "PYTHONPATH": str(_HERE)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "error: the lifespan broken_lifespan failed as the worker started" in last
    assert "ConnectionError: the cache at cache:6379 refused the connection" in last


# -- sa_river.testing calls handlers as a worker does -----------------------------------------


def test_drain_runs_middleware_sessions_output_and_the_error_handler(payments: Engine) -> None:
    from sa_river.testing import drain

    wrapped: list[str] = []

    def mark(job: Job[Any], call_next: Callable[[], Any]) -> Any:
        wrapped.append(job.kind)
        return call_next()

    workers = Workers(middleware=[mark], error_handler=lambda job, error: JobDiscard("given up"))

    @workers.handler("charge")
    def charge(job: Job[dict[str, Any]], session: Session) -> int:
        session.execute(text("INSERT INTO payments VALUES (:id, 8)"), {"id": job.id})
        return 8

    @workers.handler("broken")
    def broken(job: Job[dict[str, Any]]) -> None:
        raise RuntimeError("no")

    with Session(payments) as session, session.begin():
        charged = sa_river.insert(session, ("charge", {})).job.id
        failed = sa_river.insert(session, ("broken", {})).job.id
        result = drain(session, workers)
        assert result.counts == {S.COMPLETED: 1, S.DISCARDED: 1}
        rows = {r.id: r for r in sa_river.list_jobs(session, kinds=["charge", "broken"])}
        assert rows[charged].metadata["output"] == 8
        assert rows[failed].state is S.DISCARDED
        assert session.execute(text("SELECT count(*) FROM payments")).scalar() == 1
    assert wrapped == ["charge", "broken"]


def _finalized_notifications(db_url: URL) -> psycopg.Connection[Any]:
    conn = psycopg.connect(libpq_dsn(db_url), autocommit=True)
    conn.execute('LISTEN "public.sa_river_job_finalized"')
    return conn


def _heard_ids(conn: psycopg.Connection[Any], timeout: float = 20) -> list[int]:
    for note in conn.notifies(timeout=timeout, stop_after=1):
        return list(json.loads(note.payload)["ids"])
    return []


def test_finalising_a_job_notifies_its_id_for_waiters(db_url: URL, engine: Engine) -> None:
    workers = Workers()

    @workers.handler("quick")
    def quick(job: Job[dict[str, Any]]) -> None:
        return None

    listener = _finalized_notifications(db_url)
    try:
        cancelled = _insert(engine, "never_worked")
        sa_river.cancel_job(engine, cancelled)  # cancelled before it ran: finalised at once
        assert _heard_ids(listener) == [cancelled]
        worked = _insert(engine, "quick")
        with running_worker(db_url, workers):
            assert _heard_ids(listener) == [worked]
    finally:
        listener.close()
