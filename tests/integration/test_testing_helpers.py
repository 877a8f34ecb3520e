"""sa_river.testing and the pytest plugin, against real PostgreSQL.

The plugin's fixtures (``sa_river_engine``...) are used directly here, on the suite's server
(``sa_river_server_url`` is overridden below to reuse ``server_url``). The plugin itself, as a
user's suite meets it through the entry point, is tested with ``pytester`` in a subprocess,
running the worked example of ``docs/testing.md`` verbatim.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, ForeignKey, String, create_engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_river
import sa_river.testing
from sa_river import (
    Hook,
    InsertingJob,
    InsertManyParams,
    InsertOpts,
    Job,
    JobArgs,
    JobCancel,
    JobSnooze,
    JobState,
    UniqueOpts,
    UnknownJobKindError,
    Workers,
)
from sa_river.hooks import hooks_installed, installed_hooks
from sa_river.testing import (
    CLIENT_ID,
    DrainResult,
    RequireInsertedOpts,
    drain,
    inline,
    require_inserted,
    require_inserted_many,
    require_not_inserted,
)

pytest_plugins = ["pytester"]

S = JobState
DOCS = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


@pytest.fixture(scope="session")
def sa_river_server_url(server_url: URL) -> URL:
    """The plugin's databases go on the suite's server (tests/conftest.py)."""
    return server_url


@pytest.fixture
def tx(sa_river_engine: Engine) -> Iterator[Session]:
    """A Session in a transaction rolled back after the test."""
    with sa_river_engine.connect() as conn:
        transaction = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
            yield session
        transaction.rollback()


class Email(JobArgs, kind="email"):
    to: str
    subject: str = "hello"


class Remind(JobArgs, kind="remind"):
    user_id: int
    at: datetime | None = None
    state: str = "draft"  # an args field named like an option: options go in opts=


def state_of(target: Session | Engine, job_id: int) -> JobState:
    row = sa_river.get_job(target, job_id)
    assert row is not None
    return row.state


# --- require_inserted ------------------------------------------------------------------------


class TestRequireInserted:
    def test_finds_an_uncommitted_job_in_the_sessions_transaction(self, tx: Session) -> None:
        inserted = sa_river.insert(tx, Email(to="a@x"), InsertOpts(queue="mail", priority=2))
        row = require_inserted(tx, Email, to="a@x")
        assert row.id == inserted.job.id
        assert require_inserted(tx, "email", to="a@x").id == row.id
        opts = RequireInsertedOpts(queue="mail", priority=2, state="available", max_attempts=25)
        assert require_inserted(tx, Email, opts=opts).id == row.id

    def test_an_engine_sees_only_committed_jobs(self, sa_river_engine: Engine) -> None:
        with Session(sa_river_engine) as session, session.begin():
            sa_river.insert(session, Email(to="a@x"))
            require_not_inserted(sa_river_engine, Email)
        require_inserted(sa_river_engine, Email, to="a@x")

    def test_an_args_instance_requires_equal_args(self, tx: Session) -> None:
        sa_river.insert(tx, Email(to="a@x", subject="hi"))
        require_inserted(tx, Email(to="a@x", subject="hi"))
        require_not_inserted(tx, Email(to="a@x"))  # subject "hello" differs
        with pytest.raises(TypeError, match="not both"):
            require_inserted(tx, Email(to="a@x"), to="a@x")

    def test_values_match_as_stored(self, tx: Session) -> None:
        at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        sa_river.insert(tx, Remind(user_id=1, at=at))
        require_inserted(tx, Remind, at=at, state="draft")  # the args field called state
        require_not_inserted(tx, Remind, at=at + timedelta(seconds=1))

    def test_options_are_checked(self, tx: Session) -> None:
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        job = sa_river.insert(
            tx, Email(to="a@x"), InsertOpts(scheduled_at=later, tags=["t-one", "t-two"])
        ).job
        require_inserted(tx, Email, opts=RequireInsertedOpts(state=S.SCHEDULED))
        require_inserted(tx, Email, opts=RequireInsertedOpts(scheduled_at=job.scheduled_at))
        require_inserted(tx, Email, opts=RequireInsertedOpts(tags=["t-one", "t-two"]))
        require_not_inserted(tx, Email, opts=RequireInsertedOpts(tags=["t-one"]))
        require_not_inserted(tx, Email, opts=RequireInsertedOpts(queue="other"))

    def test_failure_lists_the_jobs_of_that_kind_and_how_they_differ(self, tx: Session) -> None:
        sa_river.insert(tx, Email(to="b@x"), InsertOpts(queue="mail"))
        with pytest.raises(AssertionError) as info:
            require_inserted(tx, Email, to="a@x", opts=RequireInsertedOpts(queue="mail"))
        message = str(info.value)
        assert "expected a job of kind 'email' with to='a@x', queue='mail'" in message
        assert "found none" in message
        assert re.search(r"job \d+: args.to is 'b@x' \(expected 'a@x'\)", message), message

    def test_failure_with_no_job_of_the_kind_names_the_kinds_present(self, tx: Session) -> None:
        sa_river.insert_many(tx, [Email(to="a@x"), Email(to="b@x"), Remind(user_id=1)])
        with pytest.raises(AssertionError, match=r"no job of kind 'nope' at all; kinds present: "):
            require_inserted(tx, "nope")
        with pytest.raises(AssertionError, match=r"'email' \(2\), 'remind' \(1\)"):
            require_inserted(tx, "nope")

    def test_several_matches_fail_unless_many_are_asked_for(self, tx: Session) -> None:
        a = sa_river.insert(tx, Email(to="a@x")).job
        b = sa_river.insert(tx, Email(to="a@x", subject="again")).job
        with pytest.raises(AssertionError, match=r"exactly one .* found 2 \(ids \d+, \d+\)"):
            require_inserted(tx, Email, to="a@x")
        assert [r.id for r in require_inserted_many(tx, Email, to="a@x")] == [a.id, b.id]
        assert len(require_inserted_many(tx, Email, count=2)) == 2
        with pytest.raises(AssertionError, match="expected exactly 3 job of kind 'email'"):
            require_inserted_many(tx, Email, count=3)
        with pytest.raises(AssertionError, match="expected at least one"):
            require_inserted_many(tx, Email, to="c@x")

    def test_an_unknown_field_is_a_type_error_not_a_silent_mismatch(self, tx: Session) -> None:
        with pytest.raises(TypeError, match=r"Email has no field 'too'; its fields are to, subj"):
            require_not_inserted(tx, Email, too="a@x")
        with pytest.raises(TypeError, match="kind string"):
            require_inserted(tx, 42)  # type: ignore[arg-type]

    def test_require_not_inserted_lists_what_it_found(self, tx: Session) -> None:
        require_not_inserted(tx, Email)
        sa_river.insert(tx, Email(to="a@x"))
        require_not_inserted(tx, Email, to="b@x")
        with pytest.raises(AssertionError) as info:
            require_not_inserted(tx, Email)
        assert re.search(
            r"expected no job of kind 'email'; found 1:\n  job \d+ \(available, queue 'default', "
            r"priority 1, args \{'to': 'a@x', 'subject': 'hello'\}\)",
            str(info.value),
        ), str(info.value)


# --- drain -----------------------------------------------------------------------------------


class Note(JobArgs, kind="note"):
    text: str


class Chain(JobArgs, kind="chain"):
    left: int


class Fail(JobArgs, kind="fail"):
    pass


def record_note(conn: Connection, note: str) -> None:
    conn.execute(text("INSERT INTO notes (text) VALUES (:t)"), {"t": note})


def notes(target: Session | Connection) -> list[str]:
    conn = target.connection() if isinstance(target, Session) else target
    return [r.text for r in conn.execute(text("SELECT text FROM notes ORDER BY id"))]


@pytest.fixture
def conn(sa_river_engine: Engine) -> Iterator[Connection]:
    """A Connection in a transaction rolled back after the test, with a ``notes`` table."""
    with sa_river_engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("CREATE TABLE notes (id serial PRIMARY KEY, text text)"))
        yield connection
        transaction.rollback()


def note_workers(conn: Connection) -> Workers:
    """Handlers writing on ``conn``, the drained connection."""
    workers = Workers()

    @workers.handler(Note)
    def note(job: Job[Note]) -> None:
        record_note(conn, job.args.text)

    @workers.handler(Chain)
    def chain(job: Job[Chain]) -> None:
        record_note(conn, f"chain {job.args.left}")
        if job.args.left:
            sa_river.insert(conn, Chain(left=job.args.left - 1))

    @workers.handler(Fail)
    def fail(job: Job[Fail]) -> None:
        record_note(conn, "written, then rolled back")
        raise ValueError("boom")

    return workers


class TestDrain:
    def test_works_uncommitted_jobs_and_the_jobs_their_handlers_insert(
        self, conn: Connection
    ) -> None:
        sa_river.insert(conn, Note(text="one"))
        sa_river.insert(conn, Chain(left=2))
        result = drain(conn, note_workers(conn))
        assert result.counts == {S.COMPLETED: 4}
        assert notes(conn) == ["one", "chain 2", "chain 1", "chain 0"]
        assert all(w.job.attempted_by == [CLIENT_ID] for w in result.worked)
        assert sa_river.list_jobs(conn, states=["available", "running"]) == []
        assert drain(conn, note_workers(conn)).counts == {}

    def test_a_failure_is_retryable_its_writes_rolled_back_and_its_error_kept(
        self, conn: Connection
    ) -> None:
        job = sa_river.insert(conn, Fail()).job
        result = drain(conn, note_workers(conn))
        assert result.counts == {S.RETRYABLE: 1}
        assert [repr(e) for e in result.errors] == ["ValueError('boom')"]
        assert "ValueError('boom')" in repr(result)
        assert notes(conn) == []
        row = sa_river.get_job(conn, job.id)
        assert row is not None
        assert (row.state, row.attempt, row.errors[0].error) == (S.RETRYABLE, 1, "ValueError: boom")
        assert row.scheduled_at > row.attempted_at  # type: ignore[operator]

    def test_a_moved_clock_works_retries_until_discarded(self, conn: Connection) -> None:
        job = sa_river.insert(conn, Fail(), InsertOpts(max_attempts=3)).job
        result = drain(conn, note_workers(conn), now=timedelta(days=365))
        assert [w.state for w in result.worked] == [S.RETRYABLE, S.RETRYABLE, S.DISCARDED]
        assert [w.job.attempt for w in result.worked] == [1, 2, 3]
        assert state_of_conn(conn, job.id) is S.DISCARDED

    def test_scheduled_jobs_wait_for_the_clock(self, conn: Connection) -> None:
        db_now = conn.execute(select(func.now())).scalar_one()
        sa_river.insert(
            conn, Note(text="soon"), InsertOpts(scheduled_at=db_now + timedelta(hours=1))
        )
        sa_river.insert(
            conn, Note(text="later"), InsertOpts(scheduled_at=db_now + timedelta(days=2))
        )
        workers = note_workers(conn)
        assert drain(conn, workers).counts == {}
        assert drain(conn, workers, now=db_now + timedelta(minutes=59)).counts == {}
        assert drain(conn, workers, now=db_now + timedelta(hours=1)).counts == {S.COMPLETED: 1}
        assert notes(conn) == ["soon"]
        assert drain(conn, workers, now=timedelta(days=3)).counts == {S.COMPLETED: 1}
        assert notes(conn) == ["soon", "later"]
        with pytest.raises(ValueError, match="timezone-aware"):
            drain(conn, workers, now=datetime(2030, 1, 1))

    def test_outcomes_cancel_snooze_and_unknown_kind(self, conn: Connection) -> None:
        workers = Workers()

        @workers.handler("cancel_me")
        def cancel_me(job: Job[dict[str, Any]]) -> None:
            raise JobCancel("not wanted")

        @workers.handler("snooze_me")
        def snooze_me(job: Job[dict[str, Any]]) -> None:
            raise JobSnooze(timedelta(minutes=5))

        ids = [
            r.job.id
            for r in sa_river.insert_many(
                conn, [("cancel_me", {}), ("snooze_me", {}), ("nobody_handles_me", {})]
            )
        ]
        result = drain(conn, workers)
        assert [(w.job.id, w.state) for w in result.worked] == [
            (ids[0], S.CANCELLED),
            (ids[1], S.SCHEDULED),
            (ids[2], S.RETRYABLE),
        ]
        assert isinstance(result.errors[-1], UnknownJobKindError)
        snoozed = sa_river.get_job(conn, ids[1])
        assert snoozed is not None
        assert (snoozed.attempt, snoozed.metadata.get("snoozes")) == (0, 1)

    def test_async_handlers_run_also_from_inside_an_event_loop(self, conn: Connection) -> None:
        workers = Workers()
        ran: list[str] = []

        @workers.handler(Note)
        async def note(job: Job[Note]) -> None:
            await asyncio.sleep(0)
            ran.append(job.args.text)

        sa_river.insert(conn, Note(text="sync test"))
        assert drain(conn, workers).counts == {S.COMPLETED: 1}

        async def from_a_loop() -> DrainResult:
            sa_river.insert(conn, Note(text="async test"))
            return drain(conn, workers)

        assert asyncio.run(from_a_loop()).counts == {S.COMPLETED: 1}
        assert ran == ["sync test", "async test"]

    def test_priority_order_queues_filter_and_paused_queues(self, conn: Connection) -> None:
        workers = note_workers(conn)
        sa_river.insert(conn, Note(text="p3"), InsertOpts(priority=3))
        sa_river.insert(conn, Note(text="p1"), InsertOpts(priority=1, queue="other"))
        sa_river.insert(conn, Note(text="p2"), InsertOpts(priority=2))
        sa_river.insert(conn, Note(text="paused"), InsertOpts(queue="paused"))
        sa_river.pause_queue(conn, "paused")
        assert drain(conn, workers, queues=["default"]).counts == {S.COMPLETED: 2}
        assert drain(conn, workers).counts == {S.COMPLETED: 1}
        assert notes(conn) == ["p2", "p3", "p1"]
        sa_river.resume_queue(conn, "paused")
        assert drain(conn, workers).counts == {S.COMPLETED: 1}

    def test_the_limit_stops_a_job_that_snoozes_forever(self, conn: Connection) -> None:
        workers = Workers()

        @workers.handler(Note)
        def again(job: Job[Note]) -> None:
            raise JobSnooze(0)

        job = sa_river.insert(conn, Note(text="x")).job
        with pytest.raises(AssertionError, match="drain made 5 attempts and jobs are still due"):
            drain(conn, workers, limit=5)
        assert state_of_conn(conn, job.id) is S.AVAILABLE  # given back, not left running

    def test_the_limit_on_an_engine_gives_the_extra_job_back(self, sa_river_engine: Engine) -> None:
        """On an engine each step is its own transaction; the job fetched past the limit is
        given back as available, its attempt not counted (this used to fail releasing it)."""
        workers = Workers()

        @workers.handler("again")
        def again(job: Job[dict[str, Any]]) -> None:
            raise JobSnooze(0)

        job = sa_river.insert(sa_river_engine, ("again", {})).job
        with pytest.raises(AssertionError, match="drain made 3 attempts and jobs are still due"):
            drain(sa_river_engine, workers, limit=3)
        row = sa_river.get_job(sa_river_engine, job.id)
        assert row is not None
        assert (row.state, row.attempt) == (S.AVAILABLE, 0)

    def test_a_session_is_flushed_before_and_expired_after(self, tx: Session) -> None:
        tx.execute(text("CREATE TABLE counters (id int PRIMARY KEY, n int)"))
        workers = Workers()

        @workers.handler("bump")
        def bump(job: Job[dict[str, Any]]) -> None:
            tx.connection().execute(text("UPDATE counters SET n = n + 1"))  # no autoflush

        counter = Counter(id=1, n=0)
        tx.add(counter)  # pending: drain flushes it before the handler runs
        sa_river.insert(tx, ("bump", {}))
        assert drain(tx, workers).counts == {S.COMPLETED: 1}
        assert counter.n == 1  # expired by drain, so reloaded

    def test_with_an_engine_jobs_are_committed_like_a_worker(self, sa_river_engine: Engine) -> None:
        workers = Workers()

        @workers.handler("settle_myself")
        def settle_myself(job: Job[dict[str, Any]]) -> None:
            # A handler completing its job in its own transaction (the row is not locked).
            with Session(sa_river_engine) as session, session.begin():
                assert sa_river.complete_in(session, job)

        job = sa_river.insert(sa_river_engine, ("settle_myself", {})).job
        assert drain(sa_river_engine, workers).counts == {S.COMPLETED: 1}
        assert state_of(sa_river_engine, job.id) is S.COMPLETED

    def test_async_targets_are_refused_with_a_hint(self) -> None:
        from sqlalchemy.ext.asyncio import AsyncSession

        with pytest.raises(TypeError, match="run_sync"):
            drain(AsyncSession(), Workers())  # type: ignore[arg-type]


class CounterBase(DeclarativeBase):
    pass


class Counter(CounterBase):
    __tablename__ = "counters"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


def state_of_conn(conn: Connection, job_id: int) -> JobState:
    row = sa_river.get_job(conn, job_id)
    assert row is not None
    return row.state


# --- inline ----------------------------------------------------------------------------------


class TestInline:
    def test_insert_runs_the_handler_before_returning(self, conn: Connection) -> None:
        workers = note_workers(conn)
        with inline(workers) as worked:
            result = sa_river.insert(conn, Note(text="now"))
            assert notes(conn) == ["now"]
            assert result.job.state == S.AVAILABLE  # the result shows the job as inserted
            assert state_of_conn(conn, result.job.id) is S.COMPLETED
            sa_river.insert(conn, Chain(left=1))  # and the jobs its handler inserts, at once
        assert notes(conn) == ["now", "chain 1", "chain 0"]
        assert worked.counts == {S.COMPLETED: 3}
        assert installed_hooks() == ()
        sa_river.insert(conn, Note(text="after the block"))
        assert notes(conn) == ["now", "chain 1", "chain 0"]

    def test_insert_many_and_what_is_left_alone(self, conn: Connection) -> None:
        workers = note_workers(conn)
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        unique = InsertOpts(unique=UniqueOpts(by_args=True))
        with inline(workers) as worked:
            sa_river.insert_many(
                conn,
                [
                    Note(text="a"),
                    InsertManyParams(Note(text="scheduled"), InsertOpts(scheduled_at=later)),
                    InsertManyParams(Note(text="pending"), InsertOpts(pending=True)),
                    InsertManyParams(Note(text="unique"), unique),
                ],
            )
            # completed is one of the default unique states: the duplicate is skipped, not run
            assert sa_river.insert(conn, Note(text="unique"), unique).unique_skipped_as_duplicate
        assert notes(conn) == ["a", "unique"]
        assert worked.counts == {S.COMPLETED: 2}

    def test_a_failing_handler_does_not_fail_the_insert(self, conn: Connection) -> None:
        with inline(note_workers(conn)) as worked:
            job = sa_river.insert(conn, Fail()).job
        assert worked.counts == {S.RETRYABLE: 1}
        assert notes(conn) == []  # the attempt's writes were rolled back to its savepoint
        assert state_of_conn(conn, job.id) is S.RETRYABLE

    def test_the_hook_is_removed_when_the_block_raises(self) -> None:
        def fail_inside() -> None:
            with inline(Workers()):
                assert len(installed_hooks()) == 1
                raise RuntimeError("inside")

        with pytest.raises(RuntimeError, match="inside"):
            fail_inside()
        assert installed_hooks() == ()

    def test_it_is_an_ordinary_hook_beside_the_applications_own(self, conn: Connection) -> None:
        seen: list[str] = []

        class Tracing(Hook):
            def before_insert(self, jobs: Sequence[InsertingJob]) -> None:
                seen.extend(f"before {j.kind}" for j in jobs)

            def after_insert(
                self,
                jobs: Sequence[InsertingJob],
                results: Sequence[sa_river.InsertResult],
                error: BaseException | None,
            ) -> None:
                seen.extend(f"after {r.job.kind}" for r in results)

        with hooks_installed(Tracing()), inline(note_workers(conn)) as worked:
            sa_river.insert(conn, Chain(left=1))
        # The handler's own insert runs every hook too, nested inside the outer insert.
        assert seen == ["before chain", "before chain", "after chain", "after chain"]
        assert worked.counts == {S.COMPLETED: 2}

    def test_async_inserts_run_the_handlers_too(self, sa_river_engine: Engine) -> None:
        ran: list[str] = []
        workers = Workers()
        connections: list[AsyncConnection] = []

        @workers.handler(Note)
        def note(job: Job[Note]) -> None:
            ran.append(job.args.text)

        @workers.handler(Chain)
        def chain(job: Job[Chain]) -> None:
            ran.append(f"chain {job.args.left}")
            if job.args.left:  # on the sync view of the async connection, as inline works
                sync_view = connections[0].sync_connection
                assert sync_view is not None
                sa_river.insert(sync_view, Chain(left=job.args.left - 1))

        @workers.handler(Note.kind + "_async")
        async def note_async(job: Job[dict[str, Any]]) -> None:
            ran.append("async handler")

        async def body() -> tuple[DrainResult, list[JobState]]:
            url = sa_river_engine.url.render_as_string(hide_password=False)
            aengine = create_async_engine(url)
            try:
                async with aengine.connect() as aconn:
                    connections.append(aconn)
                    transaction = await aconn.begin()
                    with inline(workers) as worked:
                        one = await sa_river.insert_async(aconn, Note(text="one"))
                        assert one.job.state == S.AVAILABLE  # the result shows it as inserted
                        many = await sa_river.insert_many_async(
                            aconn, [Chain(left=1), (Note.kind + "_async", {})]
                        )
                        assert ran == ["one", "chain 1", "chain 0", "async handler"]
                        fast = [Note(text="by copy")]
                        assert await sa_river.insert_many_fast_async(aconn, fast) == 1
                    ids = [one.job.id, *(r.job.id for r in many)]
                    states = [
                        (await aconn.run_sync(sa_river.get_job, job_id)).state  # type: ignore[union-attr]
                        for job_id in ids
                    ]
                    await transaction.rollback()
            finally:
                await aengine.dispose()
            return worked, states

        worked, states = asyncio.run(body())
        assert worked.counts == {S.COMPLETED: 4}
        assert states == [S.COMPLETED] * 3
        assert ran == ["one", "chain 1", "chain 0", "async handler"]  # COPY: no rows, not worked
        assert installed_hooks() == ()


# --- a small app, tested end to end with sa_river.testing only -------------------------------


class AppBase(DeclarativeBase):
    pass


class AppUser(AppBase):
    __tablename__ = "app_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


class AppEmail(AppBase):
    __tablename__ = "app_emails"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_users.id"))
    subject: Mapped[str]


class Welcome(JobArgs, kind="app_welcome"):
    user_id: int


class App:
    """The application: sign-up stores a user and enqueues a welcome email in one transaction."""

    def __init__(self) -> None:
        self.sessions: sessionmaker[Session] = sessionmaker()
        self.workers = Workers()
        self.workers.add(Welcome, self.send_welcome)

    def sign_up(self, email: str) -> int:
        with self.sessions.begin() as session:
            user = AppUser(email=email)
            session.add(user)
            session.flush()
            sa_river.insert(session, Welcome(user_id=user.id), InsertOpts(queue="mail"))
            return user.id

    def send_welcome(self, job: Job[Welcome]) -> None:
        with self.sessions.begin() as session:
            session.add(AppEmail(user_id=job.args.user_id, subject="Welcome!"))


class TestAppEndToEnd:
    def test_sign_up_sends_exactly_one_welcome_email(self, sa_river_engine: Engine) -> None:
        AppBase.metadata.create_all(sa_river_engine)
        app = App()
        app.sessions.configure(bind=sa_river_engine)

        user_id = app.sign_up("ada@example.com")

        job = require_inserted(
            sa_river_engine, Welcome, user_id=user_id, opts=RequireInsertedOpts(queue="mail")
        )
        assert drain(sa_river_engine, app.workers).counts == {S.COMPLETED: 1}
        require_inserted(
            sa_river_engine, Welcome(user_id=user_id), opts=RequireInsertedOpts(state="completed")
        )
        with app.sessions() as session:
            emails = session.scalars(select(AppEmail)).all()
            assert [(e.user_id, e.subject) for e in emails] == [(user_id, "Welcome!")]
        assert drain(sa_river_engine, app.workers).counts == {}
        assert job.state is S.AVAILABLE

    def test_a_failed_sign_up_enqueues_nothing(self, sa_river_engine: Engine) -> None:
        AppBase.metadata.create_all(sa_river_engine)
        app = App()
        app.sessions.configure(bind=sa_river_engine)
        app.sign_up("ada@example.com")
        with pytest.raises(IntegrityError, match="unique"):
            app.sign_up("ada@example.com")
        assert len(require_inserted_many(sa_river_engine, Welcome)) == 1


# --- the pytest plugin ------------------------------------------------------------------------


def docs_files() -> dict[str, str]:
    """The files of docs/testing.md's worked example: python blocks opening with ``# name.py``."""
    blocks = re.findall(r"```python\n# (\w+\.py)\n(.*?)```", DOCS.read_text(), re.DOTALL)
    return dict(blocks)


def server_option(server_url: URL) -> str:
    return "--sa-river-database-url=" + server_url.render_as_string(hide_password=False)


class TestPytestPlugin:
    def test_the_docs_worked_example_passes(
        self, pytester: pytest.Pytester, server_url: URL
    ) -> None:
        files = docs_files()
        assert sorted(files) == [
            "conftest.py",
            "myapp.py",
            "test_signup.py",
            "test_signup_in_a_transaction.py",
        ]
        for name, body in files.items():
            pytester.makepyfile(**{name.removesuffix(".py"): body})
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", server_option(server_url))
        result.assert_outcomes(passed=4)

    def test_the_module_docstring_example_passes(
        self, pytester: pytest.Pytester, server_url: URL
    ) -> None:
        doc = sa_river.testing.__doc__ or ""
        block = doc.split("A worked example, a complete test module", 1)[1].split("::\n", 1)[1]
        lines = []
        for line in block.splitlines()[1:]:
            if line and not line.startswith("    "):
                break
            lines.append(line)
        pytester.makepyfile(test_example=textwrap.dedent("\n".join(lines)))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", server_option(server_url))
        result.assert_outcomes(passed=1)

    def test_databases_are_migrated_per_test_and_dropped(
        self, pytester: pytest.Pytester, server_url: URL
    ) -> None:
        pytester.makepyfile(
            test_fixtures="""
            from sqlalchemy import text

            import sa_river

            def test_a(sa_river_engine, sa_river_database_url):
                with sa_river_engine.begin() as conn:
                    assert conn.execute(text("SELECT count(*) FROM river_job")).scalar() == 0
                sa_river.insert(sa_river_engine, ("k", {}))  # committed
                print("DATABASE", sa_river_database_url.database)

            def test_b(sa_river_engine, sa_river_database_url):
                with sa_river_engine.connect() as conn:
                    assert conn.execute(text("SELECT count(*) FROM river_job")).scalar() == 0
                print("DATABASE", sa_river_database_url.database)
            """
        )
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-s", server_option(server_url)
        )
        result.assert_outcomes(passed=2)
        names = re.findall(r"DATABASE (\S+)", result.stdout.str())
        assert len(set(names)) == 2
        engine = create_engine(server_url)
        try:
            with engine.connect() as conn:
                left = conn.execute(
                    text("SELECT datname FROM pg_database WHERE datname LIKE 'sa_river_t%'")
                ).all()
        finally:
            engine.dispose()
        assert not {name for (name,) in left} & set(names)

    def test_without_a_server_the_error_says_how_to_configure_one(
        self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("SA_RIVER_TEST_DATABASE_URL", raising=False)
        pytester.makeconftest("import sys\nsys.modules['pgserver'] = None  # not installed\n")
        pytester.makepyfile(test_x="def test_x(sa_river_engine):\n    pass\n")
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            ["*set SA_RIVER_TEST_DATABASE_URL (or pass --sa-river-database-url)*"]
        )

    def test_the_plugin_can_be_disabled(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(test_x="def test_x(sa_river_engine):\n    pass\n")
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:sa_river")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*fixture 'sa_river_engine' not found*"])
