"""Transactional enqueue against real PostgreSQL: targets, batches, COPY, NOTIFY, unique jobs,
bad input.

No mocks: every test runs on a fresh migrated database (``db_url``/``engine`` fixtures).
Notifications are read on a separate psycopg connection; a "none arrived" check never relies on
sleeping: a marker job committed afterwards must be the first thing heard (PostgreSQL delivers
notifications in commit order).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import sa_river
from sa_river import (
    InsertManyParams,
    InsertOpts,
    InsertResult,
    InvalidJobError,
    JobArgs,
    JobState,
    UniqueOpts,
    UnserializableArgsError,
)
from sa_river.queries.job_insert import initial_state
from sa_river.testing import drain, require_inserted

UTC = timezone.utc
CHANNEL = "public.river_insert"
WAIT = 5.0  # seconds: the most any single wait in this file may take


class Email(JobArgs, kind="email"):
    to: str
    subject: str = "hi"


class UniqueReport(JobArgs, kind="unique_report", insert_opts=InsertOpts(unique=UniqueOpts())):
    report_id: int


class ByArgsReport(
    JobArgs,
    kind="by_args_report",
    insert_opts=InsertOpts(queue="reports", unique=UniqueOpts(by_args=True)),
):
    report_id: int


# --- helpers -----------------------------------------------------------------------------------


def _libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _async_url(url: URL) -> URL:
    return url.set(drivername="postgresql+psycopg")


def count_jobs(engine: Engine, where: str = "true", **params: Any) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text(f"SELECT count(*) FROM river_job WHERE {where}"), params).scalar_one()
        )


def job_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM river_job ORDER BY id")).scalars())


def future(seconds: float = 3600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """Collect every statement ``engine`` sends to the server while the block runs."""
    statements: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    # Connect once first, so the dialect's first-connect queries are not counted.
    with engine.connect():
        pass
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


class Listener:
    """A separate autocommit connection LISTENing on the insert channel."""

    def __init__(self, url: URL) -> None:
        self.conn = psycopg.connect(_libpq_dsn(url), autocommit=True)
        schema = self.conn.execute("SELECT current_schema()").fetchone()
        assert schema is not None
        self.channel = f"{schema[0]}.river_insert"
        assert self.channel == CHANNEL
        self.conn.execute(f'LISTEN "{self.channel}"')

    def close(self) -> None:
        self.conn.close()

    def until_marker(self, marker_queue: str) -> list[dict[str, Any]]:
        """Payloads heard before the marker queue's notification (which must arrive)."""
        heard: list[dict[str, Any]] = []
        for note in self.conn.notifies(timeout=WAIT):
            assert note.channel == self.channel
            payload = json.loads(note.payload)
            if payload == {"queue": marker_queue}:
                return heard
            heard.append(payload)
        raise AssertionError(f"marker {marker_queue!r} not heard within {WAIT}s; heard {heard}")


@pytest.fixture
def listener(db_url: URL) -> Iterator[Listener]:
    lst = Listener(db_url)
    yield lst
    lst.close()


def send_marker(engine: Engine, queue: str = "marker") -> None:
    sa_river.insert(engine, ("marker", {}), InsertOpts(queue=queue))


def run_async(db_url: URL, body: Callable[[AsyncEngine], Any]) -> Any:
    """Run ``await body(async_engine)`` on a fresh async engine, disposed afterwards."""

    async def main() -> Any:
        aengine = create_async_engine(_async_url(db_url))
        try:
            return await asyncio.wait_for(body(aengine), timeout=30)
        finally:
            await aengine.dispose()

    return asyncio.run(main())


def assert_new_job(
    result: InsertResult, *, kind: str, state: JobState = JobState.AVAILABLE
) -> None:
    assert isinstance(result, InsertResult)
    assert result.unique_skipped_as_duplicate is False
    assert result.job.kind == kind
    assert result.job.state == state
    assert result.job.id > 0


JUST_AFTER = timedelta(milliseconds=50)
"""How long after its transaction began a job is scheduled to judge the clock the state rule
reads: in the future by the transaction's ``now()``, already past by the client's clock."""

STATES_BY_QUEUE = "SELECT queue, state::text FROM river_job ORDER BY id"


def state_cases(began: datetime) -> list[tuple[str, InsertOpts, JobState]]:
    """Options covering every branch of the initial-state rule, with the state each must get
    in a transaction that began at ``began``."""
    later = began + timedelta(hours=1)
    return [
        ("no time", InsertOpts(), JobState.AVAILABLE),
        ("past", InsertOpts(scheduled_at=began - timedelta(minutes=5)), JobState.AVAILABLE),
        ("transaction start", InsertOpts(scheduled_at=began), JobState.AVAILABLE),
        ("just after", InsertOpts(scheduled_at=began + JUST_AFTER), JobState.SCHEDULED),
        ("later", InsertOpts(scheduled_at=later), JobState.SCHEDULED),
        ("pending", InsertOpts(pending=True), JobState.PENDING),
        ("pending past", InsertOpts(pending=True, scheduled_at=began), JobState.PENDING),
        ("pending later", InsertOpts(pending=True, scheduled_at=later), JobState.PENDING),
    ]


def wait_past_just_after(began: datetime) -> None:
    """Sleep until the client's clock is past ``began + JUST_AFTER``."""
    while datetime.now(UTC) <= began + 2 * JUST_AFTER:
        time.sleep(0.01)


def paths_opts(
    *paths: str, cases: list[tuple[str, InsertOpts, JobState]]
) -> list[tuple[str, list[InsertOpts]]]:
    """Each path with the cases' options, its jobs in a queue named after it."""
    return [(path, [replace(opts, queue=path) for _, opts, _ in cases]) for path in paths]


def assert_states_by_path(
    stored: Sequence[Any], paths: list[str], cases: list[tuple[str, InsertOpts, JobState]]
) -> None:
    expected = [(name, state.value) for name, _, state in cases]
    for path in paths:
        got = [state for queue, state in stored if queue == path]
        assert list(zip([name for name, _ in expected], got, strict=True)) == expected, path


# --- targets and transactions -------------------------------------------------------------------


class TestTargets:
    def test_session_commit_keeps_the_job(self, engine: Engine) -> None:
        with Session(engine) as session, session.begin():
            result = sa_river.insert(session, Email(to="a@example.com"), InsertOpts(queue="mail"))
            assert_new_job(result, kind="email")
            assert count_jobs(engine) == 0, "not visible to others before commit"
        assert job_ids(engine) == [result.job.id]
        job = result.job
        assert job.queue == "mail"
        assert job.args == {"to": "a@example.com", "subject": "hi"}
        assert (job.priority, job.max_attempts, job.attempt) == (1, 25, 0)
        assert job.tags == []
        assert job.metadata == {}
        assert job.errors == []
        assert job.attempted_by == []
        assert job.finalized_at is None
        assert job.unique_key is None
        assert job.unique_states is None
        assert job.scheduled_at.tzinfo is not None
        assert job.created_at.tzinfo is not None

    def test_session_rollback_leaves_no_job(self, engine: Engine) -> None:
        with Session(engine) as session, session.begin():
            sa_river.insert(session, Email(to="a@example.com"))
            sa_river.insert_many(session, [Email(to="b"), Email(to="c")])
            assert session.execute(text("SELECT count(*) FROM river_job")).scalar_one() == 3
            session.rollback()
        assert count_jobs(engine) == 0

    def test_session_rollback_by_exception(self, engine: Engine) -> None:
        class Boom(Exception):
            pass

        def application() -> None:
            with Session(engine) as session, session.begin():
                sa_river.insert(session, Email(to="a@example.com"))
                raise Boom

        with pytest.raises(Boom):
            application()
        assert count_jobs(engine) == 0

    def test_session_shares_the_transaction_with_application_writes(self, engine: Engine) -> None:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE app_user (id serial primary key, name text)"))
        for commit in (False, True):
            with Session(engine) as session:
                session.execute(text("INSERT INTO app_user (name) VALUES ('ann')"))
                sa_river.insert(session, Email(to="ann@example.com"))
                if commit:
                    session.commit()
                else:
                    session.rollback()
            with engine.connect() as conn:
                users = conn.execute(text("SELECT count(*) FROM app_user")).scalar_one()
            assert (users, count_jobs(engine)) == ((1, 1) if commit else (0, 0))

    def test_connection_joins_the_callers_transaction(self, engine: Engine) -> None:
        with engine.connect() as conn:
            trans = conn.begin()
            sa_river.insert(conn, Email(to="a"))
            trans.rollback()
            assert count_jobs(engine) == 0
            with conn.begin():
                result = sa_river.insert(conn, Email(to="b"))
        assert job_ids(engine) == [result.job.id]

    def test_engine_commits_its_own_transaction(self, engine: Engine) -> None:
        result = sa_river.insert(engine, ("plain_kind", {"n": 1}), InsertOpts(priority=4))
        assert_new_job(result, kind="plain_kind")
        assert result.job.args == {"n": 1}
        assert result.job.priority == 4
        assert job_ids(engine) == [result.job.id]
        results = sa_river.insert_many(engine, [("plain_kind", {"n": 2}), ("plain_kind", {"n": 3})])
        assert [r.job.args["n"] for r in results] == [2, 3]
        assert count_jobs(engine) == 3

    def test_connection_without_begin_rolls_back_the_insert(self, engine: Engine) -> None:
        """The insert runs in the transaction the connection's own rollback() ends, as a
        statement through Connection.execute would (commit-as-you-go)."""
        with engine.connect() as conn:
            sa_river.insert(conn, Email(to="gone"))
            assert conn.in_transaction()
            conn.rollback()
            sa_river.insert(conn, Email(to="kept"))
            conn.commit()
        assert count_jobs(engine) == 1
        assert count_jobs(engine, "args->>'to' = 'kept'") == 1

    def test_engine_insert_commits_alone_and_leaves_the_pool_transactional(
        self, engine: Engine
    ) -> None:
        """An insert on an engine is its own transaction; the connection it used goes back
        to the pool as it came (not in autocommit), so the next transaction still rolls back."""
        small = create_engine(engine.url, pool_size=1, max_overflow=0)
        try:
            result = sa_river.insert(small, Email(to="alone"))
            assert job_ids(engine) == [result.job.id]

            def delete_all_then_fail() -> None:
                with small.begin() as conn:
                    conn.execute(text("DELETE FROM river_job"))
                    raise RuntimeError("roll back")

            with pytest.raises(RuntimeError):
                delete_all_then_fail()
            assert job_ids(engine) == [result.job.id]
        finally:
            small.dispose()

    def test_engine_inserts_go_on_after_the_pool_reconnects(self, engine: Engine) -> None:
        """Inserts reuse a cursor per pooled connection: one whose connection the server cut
        off fails as a lost connection, and the next insert runs on the fresh one the pool
        opens, never on the dead cursor."""
        small = create_engine(engine.url, pool_size=1, max_overflow=0)
        try:
            sa_river.insert(small, Email(to="before"))
            with small.connect() as conn:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with engine.begin() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(sqlalchemy.exc.OperationalError) as lost:
                sa_river.insert(small, Email(to="lost"))
            assert lost.value.connection_invalidated
            sa_river.insert(small, Email(to="after"))
            sa_river.insert_many(small, [Email(to=f"many-{i}") for i in range(200)])
            sa_river.insert(small, Email(to="last"))
        finally:
            small.dispose()
        assert count_jobs(engine, "args->>'to' = 'lost'") == 0
        assert count_jobs(engine) == 203

    def test_a_database_error_is_sqlalchemys_and_the_session_recovers(self, engine: Engine) -> None:
        with Session(engine) as session:
            session.execute(text("SET TRANSACTION READ ONLY"))
            with pytest.raises(sqlalchemy.exc.InternalError, match="read-only transaction"):
                sa_river.insert(session, Email(to="a"))
            session.rollback()
            sa_river.insert(session, Email(to="b"))
            session.commit()
        assert count_jobs(engine) == 1

    def test_async_target_on_sync_insert_is_a_type_error(self, db_url: URL) -> None:
        async def body(aengine: AsyncEngine) -> None:
            with pytest.raises(TypeError, match="insert_async"):
                sa_river.insert(aengine, Email(to="a"))  # type: ignore[arg-type]

        run_async(db_url, body)

    def test_sync_target_on_async_insert_is_a_type_error(self, engine: Engine) -> None:
        with pytest.raises(TypeError, match="AsyncSession"):
            asyncio.run(sa_river.insert_async(engine, Email(to="a")))  # type: ignore[arg-type]


class TestAsyncTargets:
    def test_async_session_commit_and_rollback(self, db_url: URL, engine: Engine) -> None:
        async def body(aengine: AsyncEngine) -> tuple[int, int]:
            async with AsyncSession(aengine) as session, session.begin():
                await sa_river.insert_async(session, Email(to="gone"))
                await session.rollback()
            async with AsyncSession(aengine) as session, session.begin():
                kept = await sa_river.insert_async(session, Email(to="kept"))
                many = await sa_river.insert_many_async(session, [Email(to="m1"), Email(to="m2")])
            assert_new_job(kept, kind="email")
            assert [r.job.args["to"] for r in many] == ["m1", "m2"]
            return kept.job.id, many[0].job.id

        kept_id, first_many_id = run_async(db_url, body)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, args->>'to' FROM river_job ORDER BY id")).all()
        assert [r[1] for r in rows] == ["kept", "m1", "m2"]
        assert rows[0][0] == kept_id
        assert rows[1][0] == first_many_id

    def test_async_session_rollback_by_exception(self, db_url: URL, engine: Engine) -> None:
        async def application(aengine: AsyncEngine) -> None:
            async with AsyncSession(aengine) as session, session.begin():
                await sa_river.insert_async(session, Email(to="gone"))
                raise RuntimeError("app failed")

        async def body(aengine: AsyncEngine) -> None:
            with pytest.raises(RuntimeError, match="app failed"):
                await application(aengine)

        run_async(db_url, body)
        assert count_jobs(engine) == 0

    def test_async_connection_joins_the_callers_transaction(
        self, db_url: URL, engine: Engine
    ) -> None:
        async def body(aengine: AsyncEngine) -> None:
            async with aengine.connect() as conn:
                await sa_river.insert_async(conn, Email(to="gone"))
                await conn.rollback()
                await sa_river.insert_many_async(conn, [Email(to="k1"), Email(to="k2")])
                await conn.commit()

        run_async(db_url, body)
        assert count_jobs(engine) == 2
        assert count_jobs(engine, "args->>'to' = 'gone'") == 0

    def test_async_engine_commits_its_own_transaction(self, db_url: URL, engine: Engine) -> None:
        async def body(aengine: AsyncEngine) -> InsertResult:
            result = await sa_river.insert_async(aengine, Email(to="a"), InsertOpts(queue="q1"))
            await sa_river.insert_many_async(aengine, [Email(to="b")])
            return result

        result = run_async(db_url, body)
        assert_new_job(result, kind="email")
        assert result.job.queue == "q1"
        assert count_jobs(engine) == 2

    def test_async_insert_many_fast(self, db_url: URL, engine: Engine) -> None:
        async def body(aengine: AsyncEngine) -> tuple[int, int]:
            written = await sa_river.insert_many_fast_async(
                aengine, [Email(to=f"u{i}") for i in range(20)]
            )
            async with AsyncSession(aengine) as session, session.begin():
                await sa_river.insert_many_fast_async(session, [Email(to="gone")])
                await session.rollback()
            async with aengine.connect() as conn:
                in_conn = await sa_river.insert_many_fast_async(conn, [Email(to="c")])
                await conn.commit()
            return written, in_conn

        assert run_async(db_url, body) == (20, 1)
        assert count_jobs(engine) == 21
        assert count_jobs(engine, "args->>'to' = 'gone'") == 0


# --- batches -----------------------------------------------------------------------------------


class TestInsertMany:
    def test_rows_come_back_in_input_order(self, engine: Engine) -> None:
        items: list[Any] = []
        for i in range(30):
            if i % 3 == 0:
                items.append(Email(to=f"user{i}"))
            elif i % 3 == 1:
                items.append(("plain", {"i": i}))
            else:
                items.append(
                    InsertManyParams(
                        ("params", {"i": i}), InsertOpts(queue=f"q{i % 4}", priority=2)
                    )
                )
        with Session(engine) as session, session.begin():
            results = sa_river.insert_many(session, items)
        assert len(results) == 30
        for i, result in enumerate(results):
            assert result.unique_skipped_as_duplicate is False
            if i % 3 == 0:
                assert (result.job.kind, result.job.args["to"]) == ("email", f"user{i}")
            elif i % 3 == 1:
                assert (result.job.kind, result.job.args) == ("plain", {"i": i})
            else:
                assert (result.job.kind, result.job.args) == ("params", {"i": i})
                assert (result.job.queue, result.job.priority) == (f"q{i % 4}", 2)
        ids = [r.job.id for r in results]
        assert ids == sorted(ids), "ids are assigned in input order"
        assert job_ids(engine) == ids

    def test_one_round_trip_for_a_batch(self, engine: Engine) -> None:
        items = [Email(to=f"u{i}") for i in range(200)]
        with count_statements(engine) as statements, engine.connect() as conn, conn.begin():
            results = sa_river.insert_many(conn, items)
        assert len(statements) == 1, statements
        assert len(results) == 200
        assert count_jobs(engine) == 200

    def test_one_round_trip_through_a_session_with_unique_jobs(self, engine: Engine) -> None:
        items: list[Any] = [UniqueReport(report_id=i) for i in range(3)]
        items += [ByArgsReport(report_id=i % 5) for i in range(10)]
        items += [Email(to="x")]
        with count_statements(engine) as statements, Session(engine) as session:
            results = sa_river.insert_many(session, items)
            session.commit()
        assert len(statements) == 1, statements
        assert len(results) == 14
        assert count_jobs(engine) == 1 + 5 + 1

    def test_single_insert_is_one_statement_using_the_partial_unique_index(
        self, engine: Engine
    ) -> None:
        with count_statements(engine) as statements:
            sa_river.insert(engine, Email(to="a"), InsertOpts(unique=UniqueOpts(by_args=True)))
        assert len(statements) == 1, statements
        sql = " ".join(statements[0].split())
        assert (
            "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL"
            " AND river_job_state_in_bitmask(unique_states, state)"
        ) in sql

    def test_empty_batch_writes_nothing_and_sends_nothing(self, engine: Engine) -> None:
        with count_statements(engine) as statements:
            assert sa_river.insert_many(engine, []) == []
            assert sa_river.insert_many_fast(engine, []) == 0
        assert statements == []

    def test_states_available_scheduled_pending(self, engine: Engine) -> None:
        past = datetime.now(UTC) - timedelta(minutes=5)
        later = future()
        results = sa_river.insert_many(
            engine,
            [
                Email(to="now"),
                InsertManyParams(Email(to="past"), InsertOpts(scheduled_at=past)),
                InsertManyParams(Email(to="later"), InsertOpts(scheduled_at=later)),
                InsertManyParams(Email(to="pending"), InsertOpts(pending=True)),
                InsertManyParams(
                    Email(to="pending later"), InsertOpts(pending=True, scheduled_at=later)
                ),
            ],
        )
        states = [r.job.state for r in results]
        assert states == [
            JobState.AVAILABLE,
            JobState.AVAILABLE,
            JobState.SCHEDULED,
            JobState.PENDING,
            JobState.PENDING,
        ]
        assert results[1].job.scheduled_at == past
        assert results[2].job.scheduled_at == later
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT args->>'to', state::text FROM river_job ORDER BY id")
            ).all()
        assert [tuple(r) for r in stored] == [
            ("now", "available"),
            ("past", "available"),
            ("later", "scheduled"),
            ("pending", "pending"),
            ("pending later", "pending"),
        ]

    def test_single_insert_states(self, engine: Engine) -> None:
        assert sa_river.insert(engine, Email(to="a")).job.state == JobState.AVAILABLE
        scheduled = sa_river.insert(engine, Email(to="b"), InsertOpts(scheduled_at=future()))
        assert scheduled.job.state == JobState.SCHEDULED
        pending = sa_river.insert(engine, Email(to="c"), InsertOpts(pending=True))
        assert pending.job.state == JobState.PENDING

    def test_the_state_rule_in_python_decides_as_the_statements_do(self) -> None:
        now = datetime.now(UTC)
        for name, opts, expected in state_cases(now):
            assert initial_state(bool(opts.pending), opts.scheduled_at or now, now) is expected, (
                name
            )

    def test_every_sync_path_decides_the_initial_state_alike_by_the_databases_clock(
        self, engine: Engine
    ) -> None:
        with engine.connect() as conn, conn.begin():
            began = conn.execute(text("SELECT now()")).scalar_one()
            wait_past_just_after(began)
            cases = state_cases(began)
            for path, opts in paths_opts("insert", "insert_many", "insert_many_fast", cases=cases):
                if path == "insert":
                    for o in opts:
                        sa_river.insert(conn, Email(to=path), o)
                elif path == "insert_many":
                    sa_river.insert_many(conn, [InsertManyParams(Email(to=path), o) for o in opts])
                else:
                    items = [InsertManyParams(Email(to=path), o) for o in opts]
                    sa_river.insert_many_fast(conn, items)
            stored = conn.execute(text(STATES_BY_QUEUE)).all()
        assert_states_by_path(stored, ["insert", "insert_many", "insert_many_fast"], cases)

    def test_every_async_path_decides_the_initial_state_alike_by_the_databases_clock(
        self, db_url: URL
    ) -> None:
        paths = ["insert_async", "insert_many_async", "insert_many_fast_async"]

        async def body(aengine: AsyncEngine) -> tuple[list[Any], list[Any]]:
            async with aengine.connect() as conn, conn.begin():
                began = (await conn.execute(text("SELECT now()"))).scalar_one()
                wait_past_just_after(began)
                cases = state_cases(began)
                for path, opts in paths_opts(*paths, cases=cases):
                    items = [InsertManyParams(Email(to=path), o) for o in opts]
                    if path == "insert_async":
                        for o in opts:
                            await sa_river.insert_async(conn, Email(to=path), o)
                    elif path == "insert_many_async":
                        await sa_river.insert_many_async(conn, items)
                    else:
                        await sa_river.insert_many_fast_async(conn, items)
                return list((await conn.execute(text(STATES_BY_QUEUE))).all()), cases

        stored, cases = run_async(db_url, body)
        assert_states_by_path(stored, paths, cases)

    def test_options_are_stored(self, engine: Engine) -> None:
        opts = InsertOpts(
            queue="mail",
            priority=3,
            max_attempts=7,
            tags=["welcome", "a-b_c"],
            metadata={"trace": "<id>", "n": [1, 2]},
        )
        result = sa_river.insert(engine, Email(to="a"), opts)
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT queue, priority, max_attempts, tags, metadata FROM river_job")
            ).one()
        assert tuple(row) == ("mail", 3, 7, ["welcome", "a-b_c"], {"trace": "<id>", "n": [1, 2]})
        assert result.job.tags == ["welcome", "a-b_c"]
        assert result.job.metadata == {"trace": "<id>", "n": [1, 2]}

    def test_boundary_values_are_accepted_by_the_database(self, engine: Engine) -> None:
        long_name = "é" * 126 + "🚀"  # 127 characters, more bytes: both sides count characters
        result = sa_river.insert(
            engine,
            (long_name, {}),
            InsertOpts(queue=long_name, priority=4, max_attempts=32767, tags=["t" * 255]),
        )
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT char_length(kind), char_length(queue), max_attempts FROM river_job")
            ).one()
        assert tuple(row) == (127, 127, 32767)
        assert result.job.tags == ["t" * 255]

    def test_repeated_inserts_on_one_connection(self, engine: Engine) -> None:
        # Past psycopg's prepare threshold, with parameter types changing between calls.
        with engine.connect() as conn, conn.begin():
            for i in range(12):
                opts = InsertOpts(
                    unique=UniqueOpts(by_args=True) if i % 2 else None,
                    scheduled_at=future() if i % 3 == 0 else None,
                    tags=["abc"] if i % 4 == 0 else None,
                )
                sa_river.insert(conn, ("repeat", {"i": i % 6}), opts)
                sa_river.insert_many(conn, [("repeat_many", {"i": i}), ("repeat_many", {"i": -i})])
        # Odd i are unique by args on i % 6: i = 1, 3, 5, 7 (dup of 1), 9 (dup of 3), 11 (of 5).
        assert count_jobs(engine, "kind = 'repeat'") == 6 + 3
        assert count_jobs(engine, "kind = 'repeat_many'") == 24

    def test_class_defaults_and_call_options_merge_field_by_field(self, engine: Engine) -> None:
        class Mailer(
            JobArgs,
            kind="mailer",
            insert_opts=InsertOpts(queue="mail", priority=3, max_attempts=5, tags=["email"]),
        ):
            to: str

        defaults = sa_river.insert(engine, Mailer(to="a"))
        mixed = sa_river.insert(engine, Mailer(to="b"), InsertOpts(priority=1, tags=["urgent"]))
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, queue, priority, max_attempts, tags FROM river_job ORDER BY id")
            ).all()
        assert [tuple(r) for r in rows] == [
            (defaults.job.id, "mail", 3, 5, ["email"]),
            (mixed.job.id, "mail", 1, 5, ["urgent"]),
        ]

    def test_utf8_and_escaped_args_are_stored_faithfully(self, engine: Engine) -> None:
        args = {"text": "Zoë <b>&</b> \u2028 東京", "nested": {"list": [1, None, True]}}
        result = sa_river.insert(engine, ("utf8", args))
        assert result.job.args == args
        with engine.connect() as conn:
            assert conn.execute(text("SELECT args FROM river_job")).scalar_one() == args

    def test_escapes_and_offsets_survive_every_insert_path(self, engine: Engine) -> None:
        """Quotes, backslashes and non-ASCII text in the kind, args and metadata, and a
        schedule in another time zone, are stored as sent by the single insert, the batch
        insert (which sends the batch as one JSON document) and COPY."""
        ist = timezone(timedelta(hours=5, minutes=30))
        at = (datetime.now(timezone.utc) + timedelta(hours=1)).astimezone(ist)
        args = {"q": 'say "hi"', "path": "C:\\tmp\\x", "t": "Zoë \u2028 東京", "n": [1.5, None]}
        metadata = {"note": 'back\\slash "quoted"', "ünï": True}
        # A tag spelled null must stay a tag, not become a NULL element of the array.
        opts = InsertOpts(metadata=metadata, scheduled_at=at, tags=["abc", "null"])
        kind = 'odd "kind" \\ ü'
        one = sa_river.insert(engine, (kind, args), opts)
        many = sa_river.insert_many(
            engine,
            [InsertManyParams((kind, args), opts), InsertManyParams((kind, args), opts)],
        )
        copied = sa_river.insert_many_fast(engine, [InsertManyParams((kind, args), opts)])
        assert copied == 1
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT id, kind, args, metadata, scheduled_at, tags FROM river_job")
            ).all()
        assert len(stored) == 4
        for row in stored:
            assert (row.kind, row.args, row.metadata, row.tags) == (
                kind,
                args,
                metadata,
                [
                    "abc",
                    "null",
                ],
            )
            assert row.scheduled_at == at
        for result in (one, *many):
            assert result.job == sa_river.get_job(engine, result.job.id)
            assert result.job.state is JobState.SCHEDULED


class TestInsertManyFast:
    def test_copy_writes_every_row(self, engine: Engine) -> None:
        later = future()
        items: list[Any] = [Email(to=f"u{i}") for i in range(500)]
        items.append(InsertManyParams(Email(to="sched"), InsertOpts(scheduled_at=later)))
        items.append(
            InsertManyParams(
                Email(to="full"),
                InsertOpts(
                    queue="bulk",
                    priority=2,
                    max_attempts=3,
                    tags=["abc", "d-e"],
                    metadata={"m": "<&>"},
                    pending=True,
                ),
            )
        )
        with Session(engine) as session, session.begin():
            assert sa_river.insert_many_fast(session, items) == 502
        assert count_jobs(engine) == 502
        assert count_jobs(engine, "state = 'available' AND queue = 'default'") == 500
        with engine.connect() as conn:
            sched = conn.execute(
                text("SELECT state::text, scheduled_at FROM river_job WHERE args->>'to' = 'sched'")
            ).one()
            full = conn.execute(
                text(
                    "SELECT state::text, queue, priority, max_attempts, tags, metadata, kind, args"
                    " FROM river_job WHERE args->>'to' = 'full'"
                )
            ).one()
        assert tuple(sched) == ("scheduled", later)
        assert tuple(full) == (
            "pending",
            "bulk",
            2,
            3,
            ["abc", "d-e"],
            {"m": "<&>"},
            "email",
            {"to": "full", "subject": "hi"},
        )

    def test_copy_joins_the_callers_transaction(self, engine: Engine) -> None:
        with engine.connect() as conn:
            with conn.begin() as trans:
                assert sa_river.insert_many_fast(conn, [Email(to="a"), Email(to="b")]) == 2
                trans.rollback()
            assert count_jobs(engine) == 0
            with conn.begin():
                sa_river.insert_many_fast(conn, [Email(to="c")])
        assert count_jobs(engine) == 1

    def test_copy_rejects_unique_options_naming_the_item(self, engine: Engine) -> None:
        items: list[Any] = [Email(to="a"), Email(to="b"), Email(to="c"), UniqueReport(report_id=1)]
        with pytest.raises(InvalidJobError) as info:
            sa_river.insert_many_fast(engine, items)
        assert info.value.field == "items[3].unique"
        assert "insert_many" in str(info.value)
        items = [
            Email(to="a"),
            InsertManyParams(Email(to="b"), InsertOpts(unique=UniqueOpts(by_args=True))),
        ]
        with pytest.raises(InvalidJobError) as info:
            sa_river.insert_many_fast(engine, items)
        assert info.value.field == "items[1].unique"
        assert count_jobs(engine) == 0

    def test_copy_validates_like_insert_many(self, engine: Engine) -> None:
        items: list[Any] = [Email(to="a"), InsertManyParams(Email(to="b"), InsertOpts(priority=5))]
        with pytest.raises(InvalidJobError) as info:
            sa_river.insert_many_fast(engine, items)
        assert info.value.field == "items[1].priority"
        assert count_jobs(engine) == 0

    def test_an_untimed_batch_is_due_at_the_inserting_transactions_time(
        self, engine: Engine
    ) -> None:
        """With no job given a time, COPY leaves scheduled_at to the column's default: the
        transaction's now(), the same instant as created_at, and never in the future."""
        with Session(engine) as session, session.begin():
            assert sa_river.insert_many_fast(session, [Email(to=str(i)) for i in range(5)]) == 5
            (tx_now,) = session.execute(text("SELECT now()")).one()
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT state::text, scheduled_at, created_at FROM river_job")
            ).all()
        assert {(state, at) for state, at, _ in rows} == {("available", tx_now)}
        assert all(at == created for _, at, created in rows)


# --- NOTIFY ------------------------------------------------------------------------------------


class TestNotify:
    def test_one_notification_per_queue_after_commit(
        self, engine: Engine, listener: Listener
    ) -> None:
        items: list[Any] = [
            InsertManyParams(Email(to=f"m{i}"), InsertOpts(queue="mail")) for i in range(5)
        ]
        items += [InsertManyParams(Email(to=f"b{i}"), InsertOpts(queue="bulk")) for i in range(3)]
        items += [Email(to="d")]
        with Session(engine) as session, session.begin():
            sa_river.insert_many(session, items)
            # While the transaction is open nobody hears anything: a marker committed meanwhile
            # arrives first.
            send_marker(engine, "marker-during")
            assert listener.until_marker("marker-during") == []
        send_marker(engine)
        heard = listener.until_marker("marker")
        assert sorted(heard, key=lambda p: p["queue"]) == [
            {"queue": "bulk"},
            {"queue": "default"},
            {"queue": "mail"},
        ]

    def test_payload_is_json_with_the_queue(self, engine: Engine, listener: Listener) -> None:
        sa_river.insert(engine, Email(to="a"), InsertOpts(queue="with space & <chars>"))
        notes = list(listener.conn.notifies(timeout=WAIT, stop_after=1))
        assert len(notes) == 1, "no notification within the wait"
        note = notes[0]
        assert note.channel == CHANNEL
        assert json.loads(note.payload) == {"queue": "with space & <chars>"}

    def test_each_committed_transaction_notifies_once(
        self, engine: Engine, listener: Listener
    ) -> None:
        sa_river.insert(engine, Email(to="a"), InsertOpts(queue="q"))
        sa_river.insert(engine, Email(to="b"), InsertOpts(queue="q"))
        sa_river.insert_many(engine, [Email(to="c"), Email(to="d")])
        send_marker(engine)
        assert listener.until_marker("marker") == [
            {"queue": "q"},
            {"queue": "q"},
            {"queue": "default"},
        ]

    def test_no_notification_after_rollback(self, engine: Engine, listener: Listener) -> None:
        with Session(engine) as session:
            sa_river.insert(session, Email(to="a"), InsertOpts(queue="rolled_back"))
            sa_river.insert_many(session, [Email(to="b")])
            sa_river.insert_many_fast(session, [Email(to="c")])
            session.rollback()
        send_marker(engine)
        assert listener.until_marker("marker") == []

    def test_no_notification_for_scheduled_or_pending_only(
        self, engine: Engine, listener: Listener
    ) -> None:
        sa_river.insert(engine, Email(to="a"), InsertOpts(queue="later", scheduled_at=future()))
        sa_river.insert(engine, Email(to="b"), InsertOpts(queue="later", pending=True))
        sa_river.insert_many(
            engine,
            [
                InsertManyParams(Email(to="c"), InsertOpts(queue="later", scheduled_at=future())),
                InsertManyParams(Email(to="d"), InsertOpts(queue="later", pending=True)),
            ],
        )
        sa_river.insert_many_fast(
            engine,
            [
                InsertManyParams(Email(to="e"), InsertOpts(queue="later", scheduled_at=future())),
                InsertManyParams(Email(to="f"), InsertOpts(queue="later", pending=True)),
            ],
        )
        send_marker(engine)
        assert listener.until_marker("marker") == []
        assert count_jobs(engine, "queue = 'later'") == 6

    def test_mixed_batch_notifies_only_queues_with_available_jobs(
        self, engine: Engine, listener: Listener
    ) -> None:
        sa_river.insert_many(
            engine,
            [
                InsertManyParams(Email(to="a"), InsertOpts(queue="later", scheduled_at=future())),
                InsertManyParams(Email(to="b"), InsertOpts(queue="now")),
            ],
        )
        send_marker(engine)
        assert listener.until_marker("marker") == [{"queue": "now"}]

    def test_copy_notifies_once_per_queue_on_commit(
        self, engine: Engine, listener: Listener
    ) -> None:
        items: list[Any] = [
            InsertManyParams(Email(to=f"{i}"), InsertOpts(queue=f"c{i % 2}")) for i in range(10)
        ]
        assert sa_river.insert_many_fast(engine, items) == 10
        send_marker(engine)
        heard = listener.until_marker("marker")
        assert sorted(p["queue"] for p in heard) == ["c0", "c1"]

    def test_unique_duplicate_does_not_notify(self, engine: Engine, listener: Listener) -> None:
        first = sa_river.insert(engine, UniqueReport(report_id=1))
        send_marker(engine, "marker-1")
        assert listener.until_marker("marker-1") == [{"queue": "default"}]
        second = sa_river.insert(engine, UniqueReport(report_id=1))
        assert second.unique_skipped_as_duplicate
        assert second.job.id == first.job.id
        send_marker(engine, "marker-2")
        assert listener.until_marker("marker-2") == []

    def test_async_session_notifies_on_commit_only(
        self, db_url: URL, engine: Engine, listener: Listener
    ) -> None:
        async def body(aengine: AsyncEngine) -> None:
            async with AsyncSession(aengine) as session:
                await sa_river.insert_async(session, Email(to="x"), InsertOpts(queue="gone"))
                await session.rollback()
                await sa_river.insert_async(session, Email(to="y"), InsertOpts(queue="kept"))
                await session.commit()

        run_async(db_url, body)
        send_marker(engine)
        assert listener.until_marker("marker") == [{"queue": "kept"}]


# --- unique jobs -------------------------------------------------------------------------------


def stored_unique(engine: Engine, job_id: int) -> tuple[bytes, str]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT unique_key, unique_states::text FROM river_job WHERE id = :id"),
            {"id": job_id},
        ).one()
    return bytes(row[0]), row[1]


def complete_job(engine: Engine, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE river_job SET state = 'completed', finalized_at = now() WHERE id = :id"),
            {"id": job_id},
        )


class TestUniqueJobs:
    def test_duplicate_returns_the_existing_live_job(self, engine: Engine) -> None:
        opts = InsertOpts(unique=UniqueOpts(by_args=True))
        first = sa_river.insert(engine, Email(to="a"), opts)
        assert_new_job(first, kind="email")
        second = sa_river.insert(engine, Email(to="a"), opts)
        assert second.unique_skipped_as_duplicate is True
        assert second.job.id == first.job.id
        assert second.job.state == JobState.AVAILABLE
        assert second.job.args == first.job.args
        other = sa_river.insert(engine, Email(to="b"), opts)
        assert other.unique_skipped_as_duplicate is False
        assert count_jobs(engine) == 2

    def test_duplicate_leaves_the_existing_row_unchanged(self, engine: Engine) -> None:
        opts = InsertOpts(unique=UniqueOpts(), queue="q1", priority=2, tags=["first"])
        first = sa_river.insert(engine, Email(to="a"), opts)
        again = InsertOpts(unique=UniqueOpts(), queue="q2", priority=4, tags=["second"])
        second = sa_river.insert(engine, Email(to="b"), again)
        assert second.unique_skipped_as_duplicate
        assert second.job.id == first.job.id
        assert (second.job.queue, second.job.priority, second.job.tags) == ("q1", 2, ["first"])
        assert second.job.args == {"to": "a", "subject": "hi"}

    def test_stored_key_is_rivers_sha256_and_default_states(self, engine: Engine) -> None:
        # The first vector of tests/data/unique_keys.json, inserted for real.
        result = sa_river.insert(
            engine,
            ("worker_1", {"subject": "Test Email", "recipient": "user@example.com"}),
            InsertOpts(unique=UniqueOpts(by_args=True)),
        )
        prehash = '&kind=worker_1&args={"recipient":"user@example.com","subject":"Test Email"}'
        expected = hashlib.sha256(prehash.encode()).digest()
        assert expected.hex() == "924d0ae47cfc7fa39a6ac83c366368583aa6406612772dd007cad2527989ed80"
        key, states = stored_unique(engine, result.job.id)
        assert key == expected
        assert states == "11110101"
        assert result.job.unique_key == expected
        assert result.job.unique_states == frozenset(
            {"available", "completed", "pending", "retryable", "running", "scheduled"}
        )

    def test_stored_key_by_queue_and_period(self, engine: Engine) -> None:
        when = datetime(2024, 9, 15, 10, 37, 12, tzinfo=UTC)
        result = sa_river.insert(
            engine,
            ("worker_4", {}),
            InsertOpts(scheduled_at=when, unique=UniqueOpts(by_period=timedelta(hours=1))),
        )
        key, _ = stored_unique(engine, result.job.id)
        assert key.hex() == "a610df2007f01592d9c63d88f7501405ad149731935473667b567814c5ddf61d"
        result = sa_river.insert(
            engine,
            ("worker_6", {}),
            InsertOpts(queue="email_queue", unique=UniqueOpts(by_queue=True)),
        )
        key, _ = stored_unique(engine, result.job.id)
        assert key.hex() == "26b1abe28abd7a0d215b0881bff7a77e408d71da6166d43272c0179ea058d3dc"

    def test_custom_by_state_is_stored_as_bitmask(self, engine: Engine) -> None:
        unique = UniqueOpts(by_state=["available", "pending", "running", "scheduled"])
        result = sa_river.insert(engine, Email(to="a"), InsertOpts(unique=unique))
        assert stored_unique(engine, result.job.id)[1] == "11010001"

    def test_new_unique_job_in_the_future_is_scheduled_never_discarded(
        self, engine: Engine
    ) -> None:
        later = future()
        result = sa_river.insert(engine, UniqueReport(report_id=1), InsertOpts(scheduled_at=later))
        assert_new_job(result, kind="unique_report", state=JobState.SCHEDULED)
        assert result.job.scheduled_at == later
        again = sa_river.insert(engine, UniqueReport(report_id=2), InsertOpts(scheduled_at=later))
        assert again.unique_skipped_as_duplicate
        assert again.job.id == result.job.id
        assert again.job.state == JobState.SCHEDULED
        assert count_jobs(engine) == 1
        assert count_jobs(engine, "state = 'discarded'") == 0

    def test_new_unique_pending_job_is_pending(self, engine: Engine) -> None:
        result = sa_river.insert(engine, UniqueReport(report_id=1), InsertOpts(pending=True))
        assert_new_job(result, kind="unique_report", state=JobState.PENDING)
        again = sa_river.insert(engine, UniqueReport(report_id=1))
        assert again.unique_skipped_as_duplicate
        assert again.job.state == JobState.PENDING

    @pytest.mark.parametrize("in_future", [False, True], ids=["now", "future"])
    @pytest.mark.parametrize(
        ("args", "call", "expected_queue"),
        [
            pytest.param(UniqueReport(report_id=1), InsertOpts(), "default", id="from-class"),
            pytest.param(
                Email(to="a"),
                InsertOpts(unique=UniqueOpts(by_args=True), queue="call"),
                "call",
                id="from-call",
            ),
            pytest.param(
                ByArgsReport(report_id=1),
                InsertOpts(priority=2),
                "reports",
                id="unique-from-class-priority-from-call",
            ),
            pytest.param(
                ByArgsReport(report_id=1),
                InsertOpts(unique=UniqueOpts(by_args=True, by_queue=True), queue="call"),
                "call",
                id="both-call-wins",
            ),
        ],
    )
    def test_new_unique_job_is_stored_in_its_requested_state(
        self,
        engine: Engine,
        args: JobArgs,
        call: InsertOpts,
        expected_queue: str,
        in_future: bool,
    ) -> None:
        if in_future:
            call = InsertOpts(scheduled_at=future()).merged_over(call)
        first = sa_river.insert(engine, args, call)
        expected_state = JobState.SCHEDULED if in_future else JobState.AVAILABLE
        assert_new_job(first, kind=type(args).kind, state=expected_state)
        assert first.job.queue == expected_queue
        assert first.job.unique_key is not None
        assert stored_unique(engine, first.job.id)[1] == "11110101"
        second = sa_river.insert(engine, args, call)
        assert second.unique_skipped_as_duplicate is True
        assert second.job.id == first.job.id
        assert second.job.state == expected_state
        assert count_jobs(engine) == 1
        assert count_jobs(engine, "state = 'discarded'") == 0

    def test_call_unique_replaces_class_unique(self, engine: Engine) -> None:
        # ByArgsReport's class default is unique by args; the call makes it unique by kind.
        kind_only = InsertOpts(unique=UniqueOpts())
        first = sa_river.insert(engine, ByArgsReport(report_id=1), kind_only)
        second = sa_river.insert(engine, ByArgsReport(report_id=2), kind_only)
        assert second.unique_skipped_as_duplicate
        assert second.job.id == first.job.id
        assert first.job.queue == "reports", "the class's queue still applies"
        third = sa_river.insert(engine, ByArgsReport(report_id=2))
        assert third.unique_skipped_as_duplicate is False, "class default: by args"

    def test_exclude_kind_makes_kinds_share_a_key(self, engine: Engine) -> None:
        opts = InsertOpts(unique=UniqueOpts(by_args=True, exclude_kind=True))
        first = sa_river.insert(engine, ("kind_a", {"task_id": "task_123"}), opts)
        second = sa_river.insert(engine, ("kind_b", {"task_id": "task_123"}), opts)
        assert second.unique_skipped_as_duplicate
        assert second.job.id == first.job.id
        assert second.job.kind == "kind_a", "the existing job keeps its own kind"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT kind FROM river_job")).scalars().all() == ["kind_a"]
        key, _ = stored_unique(engine, first.job.id)
        assert key.hex() == "4b48cf5f2559d1de919b01391108cc5577d10e6e56a10bda33618b98b6054252"

    def test_stored_key_hashes_go_escaped_args(self, engine: Engine) -> None:
        result = sa_river.insert(
            engine,
            ("esc", {"b": "<tag> & \u2028", "a": "Zoë"}),
            InsertOpts(unique=UniqueOpts(by_args=True)),
        )
        prehash = '&kind=esc&args={"a":"Zoë","b":"\\u003ctag\\u003e \\u0026 \\u2028"}'
        key, _ = stored_unique(engine, result.job.id)
        assert key == hashlib.sha256(prehash.encode("utf-8")).digest()

    def test_class_default_unique_with_call_scheduled_at(self, engine: Engine) -> None:
        later = future()
        result = sa_river.insert(
            engine, ByArgsReport(report_id=7), InsertOpts(scheduled_at=later, priority=3)
        )
        assert_new_job(result, kind="by_args_report", state=JobState.SCHEDULED)
        assert (result.job.queue, result.job.priority) == ("reports", 3)
        dup = sa_river.insert(engine, ByArgsReport(report_id=7))
        assert dup.unique_skipped_as_duplicate
        assert dup.job.id == result.job.id
        different = sa_river.insert(engine, ByArgsReport(report_id=8))
        assert not different.unique_skipped_as_duplicate

    def test_duplicates_within_one_batch(self, engine: Engine) -> None:
        existing = sa_river.insert(engine, ByArgsReport(report_id=0))
        results = sa_river.insert_many(
            engine,
            [
                ByArgsReport(report_id=1),
                ByArgsReport(report_id=2),
                ByArgsReport(report_id=1),
                ByArgsReport(report_id=0),
                Email(to="not unique"),
                Email(to="not unique"),
                ByArgsReport(report_id=2),
            ],
        )
        skipped = [r.unique_skipped_as_duplicate for r in results]
        assert skipped == [False, False, True, True, False, False, True]
        ids = [r.job.id for r in results]
        assert ids[2] == ids[0]
        assert ids[6] == ids[1]
        assert ids[3] == existing.job.id
        assert ids[4] != ids[5]
        assert [r.job.args for r in results][:4] == [
            {"report_id": 1},
            {"report_id": 2},
            {"report_id": 1},
            {"report_id": 0},
        ]
        assert count_jobs(engine) == 1 + 2 + 2

    def test_batch_of_only_duplicates_of_existing_jobs(self, engine: Engine) -> None:
        first = sa_river.insert_many(engine, [UniqueReport(report_id=1)])
        again = sa_river.insert_many(engine, [UniqueReport(report_id=1), UniqueReport(report_id=2)])
        assert [r.unique_skipped_as_duplicate for r in again] == [True, True]
        assert {r.job.id for r in again} == {first[0].job.id}
        assert count_jobs(engine) == 1
        # The duplicate comes back whole, read from its row; it is the job first inserted.
        assert again[0].job == first[0].job == sa_river.get_job(engine, first[0].job.id)

    def test_a_new_jobs_row_is_the_stored_row_on_every_path(self, engine: Engine) -> None:
        """The returned JobRow of a new job is built from what was sent plus what the server
        decided; it must equal the row as stored, options and all."""
        opts = InsertOpts(
            queue="q",
            priority=3,
            max_attempts=7,
            tags=["abc", "d-e"],
            metadata={"m": [1, "x"]},
            scheduled_at=future(),
            unique=UniqueOpts(by_args=True),
        )
        one = sa_river.insert(engine, Email(to="one"), opts)
        many = sa_river.insert_many(
            engine, [InsertManyParams(Email(to="many"), opts), Email(to="plain")]
        )
        for result in (one, *many):
            assert result.job == sa_river.get_job(engine, result.job.id)

    def test_completed_job_still_blocks_with_default_states(self, engine: Engine) -> None:
        first = sa_river.insert(engine, UniqueReport(report_id=1))
        complete_job(engine, first.job.id)
        again = sa_river.insert(engine, UniqueReport(report_id=1))
        assert again.unique_skipped_as_duplicate is True
        assert again.job.id == first.job.id
        assert again.job.state == JobState.COMPLETED
        assert count_jobs(engine) == 1

    def test_completed_job_does_not_block_when_by_state_leaves_it_out(self, engine: Engine) -> None:
        unique = UniqueOpts(by_state=["available", "pending", "retryable", "running", "scheduled"])
        opts = InsertOpts(unique=unique)
        first = sa_river.insert(engine, Email(to="a"), opts)
        assert stored_unique(engine, first.job.id)[1] == "11110001"
        blocked = sa_river.insert(engine, Email(to="a"), opts)
        assert blocked.unique_skipped_as_duplicate, "still live: a duplicate"
        complete_job(engine, first.job.id)
        second = sa_river.insert(engine, Email(to="a"), opts)
        assert second.unique_skipped_as_duplicate is False
        assert second.job.id != first.job.id
        assert second.job.state == JobState.AVAILABLE
        assert count_jobs(engine) == 2
        assert stored_unique(engine, second.job.id) == stored_unique(engine, first.job.id)

    def test_cancelled_and_discarded_jobs_never_block_by_default(self, engine: Engine) -> None:
        for state in ("cancelled", "discarded"):
            first = sa_river.insert(
                engine, ("finished_kind", {"s": state}), InsertOpts(unique=UniqueOpts(by_args=True))
            )
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE river_job SET state = CAST(:s AS river_job_state),"
                        " finalized_at = now() WHERE id = :id"
                    ),
                    {"s": state, "id": first.job.id},
                )
            second = sa_river.insert(
                engine, ("finished_kind", {"s": state}), InsertOpts(unique=UniqueOpts(by_args=True))
            )
            assert second.unique_skipped_as_duplicate is False
            assert second.job.id != first.job.id

    def test_by_period_separates_periods(self, engine: Engine) -> None:
        opts = UniqueOpts(by_period=timedelta(hours=1))
        base = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
        a = sa_river.insert(engine, Email(to="a"), InsertOpts(unique=opts, scheduled_at=base))
        b = sa_river.insert(
            engine,
            Email(to="a"),
            InsertOpts(unique=opts, scheduled_at=base + timedelta(minutes=59)),
        )
        c = sa_river.insert(
            engine, Email(to="a"), InsertOpts(unique=opts, scheduled_at=base + timedelta(hours=1))
        )
        assert (a.unique_skipped_as_duplicate, b.unique_skipped_as_duplicate) == (False, True)
        assert c.unique_skipped_as_duplicate is False
        assert count_jobs(engine) == 2

    def test_unique_duplicate_inside_the_same_open_transaction(self, engine: Engine) -> None:
        with Session(engine) as session, session.begin():
            first = sa_river.insert(session, UniqueReport(report_id=1))
            second = sa_river.insert(session, UniqueReport(report_id=1))
        assert second.unique_skipped_as_duplicate
        assert second.job.id == first.job.id
        assert count_jobs(engine) == 1

    def test_rolled_back_unique_job_frees_its_key(self, engine: Engine) -> None:
        with Session(engine) as session:
            sa_river.insert(session, UniqueReport(report_id=1))
            session.rollback()
        result = sa_river.insert(engine, UniqueReport(report_id=1))
        assert result.unique_skipped_as_duplicate is False
        assert count_jobs(engine) == 1

    def test_ten_threads_racing_leave_one_row(self, engine: Engine) -> None:
        threads_n = 10
        barrier = threading.Barrier(threads_n, timeout=WAIT)
        results: list[InsertResult] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker() -> None:
            try:
                with engine.connect() as conn, conn.begin():
                    # Own connection, own transaction, all released at once.
                    conn.execute(text("SELECT 1"))
                    barrier.wait()
                    result = sa_river.insert(conn, UniqueReport(report_id=42))
                with lock:
                    results.append(result)
            except BaseException as exc:  # reported below, never lost in a thread
                with lock:
                    errors.append(exc)

        threads = [threading.Thread(target=worker, name=f"racer-{i}") for i in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a racer is stuck"
        assert errors == []
        assert len(results) == threads_n
        assert count_jobs(engine) == 1
        assert sum(r.unique_skipped_as_duplicate for r in results) == threads_n - 1
        assert len({r.job.id for r in results}) == 1
        assert all(r.job.state == JobState.AVAILABLE for r in results)

    def test_threads_racing_with_the_same_unique_batch_leave_one_row_per_key(
        self, engine: Engine
    ) -> None:
        # Same key order in every batch: racers wait on one another, never deadlock.
        threads_n, keys_n = 4, 20
        barrier = threading.Barrier(threads_n, timeout=WAIT)
        outcomes: list[list[InsertResult]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker() -> None:
            try:
                with engine.connect() as conn, conn.begin():
                    conn.execute(text("SELECT 1"))
                    barrier.wait()
                    results = sa_river.insert_many(
                        conn, [ByArgsReport(report_id=i) for i in range(keys_n)]
                    )
                with lock:
                    outcomes.append(results)
            except BaseException as exc:
                with lock:
                    errors.append(exc)

        threads = [threading.Thread(target=worker, name=f"batch-{i}") for i in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a racer is stuck"
        assert errors == []
        assert count_jobs(engine) == keys_n
        for i in range(keys_n):
            column = [results[i] for results in outcomes]
            assert len({r.job.id for r in column}) == 1
            assert sum(not r.unique_skipped_as_duplicate for r in column) == 1


# --- bad input ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadCase:
    field: str
    call: Callable[[Session], Any]


def _bad(field: str, call: Callable[[Session], Any]) -> Any:
    return pytest.param(BadCase(field, call), id=field)


class NotJson:
    pass


BAD_CASES = [
    _bad(
        "args.payload.items[1]",
        lambda s: sa_river.insert(s, ("k", {"payload": {"items": [1, NotJson()]}})),
    ),
    _bad("priority", lambda s: sa_river.insert(s, Email(to="a"), InsertOpts(priority=5))),
    _bad("max_attempts", lambda s: sa_river.insert(s, Email(to="a"), InsertOpts(max_attempts=0))),
    _bad("queue", lambda s: sa_river.insert(s, Email(to="a"), InsertOpts(queue=""))),
    _bad("kind", lambda s: sa_river.insert(s, ("k" * 128, {}))),
    _bad("tags", lambda s: sa_river.insert(s, Email(to="a"), InsertOpts(tags=["bad,tag"]))),
    _bad(
        "scheduled_at",
        lambda s: sa_river.insert(s, Email(to="a"), InsertOpts(scheduled_at=datetime(2030, 1, 1))),
    ),
    _bad(
        "unique.by_state",
        lambda s: sa_river.insert(
            s, Email(to="a"), InsertOpts(unique=UniqueOpts(by_state=["available"]))
        ),
    ),
    _bad(
        "items[2].priority",
        lambda s: sa_river.insert_many(
            s,
            [
                Email(to="good1"),
                Email(to="good2"),
                InsertManyParams(Email(to="bad"), InsertOpts(priority=5)),
                Email(to="good3"),
            ],
        ),
    ),
    _bad(
        "items[1].args.a",
        lambda s: sa_river.insert_many(s, [Email(to="good"), ("k", {"a": float("nan")})]),
    ),
    _bad(
        "items[0].tags",
        lambda s: sa_river.insert_many_fast(
            s, [InsertManyParams(Email(to="bad"), InsertOpts(tags=["-x"])), Email(to="good")]
        ),
    ),
    _bad("args.note", lambda s: sa_river.insert(s, ("k", {"note": "nul \x00 byte"}))),
    _bad(
        "metadata.m",
        lambda s: sa_river.insert(s, Email(to="a"), InsertOpts(metadata={"m": "\x00"})),
    ),
    _bad("kind", lambda s: sa_river.insert(s, ("k\x00", {}))),
    _bad(
        "items[1].args.to",
        lambda s: sa_river.insert_many_fast(s, [Email(to="good"), Email(to="\x00")]),
    ),
]


class TestBadInput:
    @pytest.mark.parametrize("case", BAD_CASES)
    def test_bad_input_names_the_field_writes_nothing_and_keeps_the_transaction(
        self, engine: Engine, case: BadCase
    ) -> None:
        with Session(engine) as session:
            with count_statements(engine) as statements, pytest.raises(InvalidJobError) as info:
                case.call(session)
            assert isinstance(info.value, ValueError)
            assert info.value.field == case.field
            assert str(info.value).startswith(f"{case.field}: ")
            assert statements == [], "nothing may reach the database"
            # The caller's transaction is still usable: a good job goes in and commits.
            good = sa_river.insert(session, Email(to="after the error"))
            session.commit()
        assert job_ids(engine) == [good.job.id]
        assert count_jobs(engine, "args->>'to' = 'after the error'") == 1

    def test_bad_batch_item_after_earlier_work_in_the_transaction(self, engine: Engine) -> None:
        with Session(engine) as session:
            kept = sa_river.insert(session, Email(to="before"))
            with pytest.raises(UnserializableArgsError) as info:
                sa_river.insert_many(session, [Email(to="good"), ("k", {"x": {1, NotJson()}})])
            assert info.value.field.startswith("items[1].args.x")
            session.commit()
        assert job_ids(engine) == [kept.job.id]

    def test_bad_input_through_an_engine_writes_nothing(self, engine: Engine) -> None:
        with pytest.raises(InvalidJobError):
            sa_river.insert_many(
                engine,
                [Email(to="good"), InsertManyParams(Email(to="b"), InsertOpts(queue="q" * 128))],
            )
        assert count_jobs(engine) == 0

    def test_bad_input_through_an_async_session(self, db_url: URL, engine: Engine) -> None:
        async def body(aengine: AsyncEngine) -> None:
            async with AsyncSession(aengine) as session:
                with pytest.raises(InvalidJobError) as info:
                    await sa_river.insert_many_async(
                        session,
                        [
                            Email(to="good"),
                            InsertManyParams(Email(to="b"), InsertOpts(max_attempts=-1)),
                        ],
                    )
                assert info.value.field == "items[1].max_attempts"
                with pytest.raises(InvalidJobError):
                    await sa_river.insert_async(session, Email(to="b"), InsertOpts(priority=0))
                await sa_river.insert_async(session, Email(to="after"))
                await session.commit()

        run_async(db_url, body)
        assert count_jobs(engine) == 1
        assert count_jobs(engine, "args->>'to' = 'after'") == 1


def test_engine_fixture_uses_a_fresh_database(engine: Engine) -> None:
    assert count_jobs(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_schema()")).scalar_one() == "public"


class TestScopedSessions:
    """Flask-SQLAlchemy's ``db.session`` is a ``scoped_session``: it works as the session."""

    def test_insert_and_drain_through_a_scoped_session(self, engine: Engine) -> None:
        registry = scoped_session(sessionmaker(engine))
        try:
            result = sa_river.insert(registry, ("email", {"to": "a"}))
            assert registry().in_transaction()
            require_inserted(registry, "email", to="a")
            registry.rollback()
            assert sa_river.get_job(engine, result.job.id) is None

            sa_river.insert(registry, ("email", {"to": "b"}))
            workers = sa_river.Workers()
            sent: list[str] = []

            @workers.handler("email")
            def email(job: sa_river.Job[dict[str, str]]) -> None:
                sent.append(job.args["to"])

            drain(registry, workers)
            registry.commit()
            assert sent == ["b"]
        finally:
            registry.remove()

    def test_insert_async_through_an_async_scoped_session(self, db_url: str) -> None:
        async def main() -> int:
            async_engine = create_async_engine(db_url)
            registry = async_scoped_session(
                async_sessionmaker(async_engine), scopefunc=asyncio.current_task
            )
            try:
                result = await sa_river.insert_async(registry, ("email", {}))
                copied = await sa_river.insert_many_fast_async(registry, [("email", {})])
                await registry.commit()
                return result.job.id + copied
            finally:
                await registry.remove()
                await async_engine.dispose()

        assert asyncio.run(main()) > 1
