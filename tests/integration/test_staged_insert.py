"""Jobs staged on a session (``sa_river.insert_on_flush``) and written by its unit of work,
against real PostgreSQL.

Each test gets a fresh migrated database (``engine``/``db_url`` fixtures) and creates the ORM
table it stages jobs about. Statements are observed with a ``before_cursor_execute`` listener
on the engine (which also makes sa_river's inserts go through ``Connection.execute``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import DateTime, Engine, ForeignKey, event, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    scoped_session,
    sessionmaker,
)

import sa_river
from sa_river import (
    Hook,
    InsertingJob,
    InsertOpts,
    InvalidJobError,
    JobArgs,
    JobState,
    StagedJob,
    UniqueOpts,
)
from sa_river.staging import _LISTENERS


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "staged_user"
    id: Mapped[int] = mapped_column(primary_key=True)  # SERIAL: the id comes from the INSERT
    email: Mapped[str]
    # A server default SQLAlchemy does not fetch: expired after the INSERT, loaded on access.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Order(Base):
    __tablename__ = "staged_order"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("staged_user.id"))
    user: Mapped[User] = relationship()


class SendWelcome(JobArgs, kind="send_welcome"):
    user_id: int


class Ship(JobArgs, kind="ship"):
    order_id: int
    user_id: int


class Digest(JobArgs, kind="digest", insert_opts=InsertOpts(unique=UniqueOpts(by_args=True))):
    user_id: int


@pytest.fixture
def orm_engine(engine: Engine) -> Engine:
    Base.metadata.create_all(engine)
    return engine


def session_on(engine: Engine) -> Session:
    """A session whose objects stay readable after commit, as the tests read them then."""
    return Session(engine, expire_on_commit=False)


def jobs(engine: Engine) -> list[tuple[int, str, dict[str, Any]]]:
    """``(id, kind, args)`` of every committed job, by id."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind, args FROM river_job ORDER BY id"))
        return [(r.id, r.kind, r.args) for r in rows]


def user_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM staged_user")).scalar_one())


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement ``engine`` sends while the block runs (after a first connect, so the
    dialect's own first-connect queries are not counted)."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    with engine.connect():
        pass
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def job_inserts(seen: list[str]) -> list[str]:
    return [s for s in seen if re.search(r"INSERT INTO river_job\b", s)]


def index_of(seen: list[str], pattern: str) -> int:
    matches = [i for i, s in enumerate(seen) if re.search(pattern, s)]
    assert matches, f"no statement matches {pattern!r} in {seen}"
    return matches[0]


# --- the ids of pending objects ---------------------------------------------------------------


def test_a_staged_job_gets_the_id_of_the_object_flushed_before_it(orm_engine: Engine) -> None:
    with statements(orm_engine) as seen, session_on(orm_engine) as session:
        user = User(email="ada@example.com")
        session.add(user)
        staged = sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id))
        assert isinstance(staged, StagedJob)
        assert (staged.status, staged.result, user.id) == ("staged", None, None)
        assert job_inserts(seen) == []  # nothing is written at staging time

        session.flush()
        assert user.id is not None
        assert staged.status == "written"
        assert staged.result is not None
        assert staged.result.job.args == {"user_id": user.id}
        assert staged.result.job.state == JobState.AVAILABLE
        # After the user's INSERT, in the same transaction, and not yet visible outside it.
        assert index_of(seen, r"INSERT INTO staged_user") < index_of(seen, r"INSERT INTO river_job")
        assert jobs(orm_engine) == []
        session.commit()

    assert jobs(orm_engine) == [(staged.result.job.id, "send_welcome", {"user_id": user.id})]


def test_the_callable_may_read_what_the_flush_left_expired(orm_engine: Engine) -> None:
    # created_at is a server default SQLAlchemy expires after the INSERT: the callable runs
    # once the objects are persistent, so reading it loads it.
    with session_on(orm_engine) as session, session.begin():
        user = User(email="b@example.com")
        session.add(user)
        staged = sa_river.insert_on_flush(
            session, lambda: ("audit", {"user_id": user.id, "at": user.created_at.isoformat()})
        )
    assert staged.result is not None
    assert staged.result.job.args["user_id"] == user.id
    assert datetime.fromisoformat(staged.result.job.args["at"]).tzinfo is not None


def test_several_staged_jobs_are_one_statement_in_staging_order(orm_engine: Engine) -> None:
    with statements(orm_engine) as seen, session_on(orm_engine) as session:
        user = User(email="d@example.com")
        order = Order(user=user)  # both pending: the flush inserts the user, then the order
        session.add(order)
        staged = [
            sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id)),
            sa_river.insert_on_flush(session, ("ready", {"n": 1}), InsertOpts(queue="other")),
            sa_river.insert_on_flush(session, lambda: Ship(order_id=order.id, user_id=user.id)),
        ]
        session.commit()

    assert len(job_inserts(seen)) == 1  # one batch
    assert index_of(seen, r"INSERT INTO staged_order") < index_of(seen, r"INSERT INTO river_job")
    results = [s.result for s in staged]
    assert all(r is not None for r in results)
    ids = [r.job.id for r in results if r is not None]
    assert ids == sorted(ids)
    assert jobs(orm_engine) == [
        (ids[0], "send_welcome", {"user_id": user.id}),
        (ids[1], "ready", {"n": 1}),
        (ids[2], "ship", {"order_id": order.id, "user_id": user.id}),
    ]
    assert results[1] is not None
    assert results[1].job.queue == "other"


def test_jobs_staged_after_a_flush_wait_for_the_next_one(orm_engine: Engine) -> None:
    with session_on(orm_engine) as session, session.begin():
        first_user = User(email="e@example.com")
        session.add(first_user)
        first = sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=first_user.id))
        session.flush()
        second_user = User(email="f@example.com")
        session.add(second_user)
        second = sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=second_user.id))
        assert (first.status, second.status) == ("written", "staged")
    assert [args for _, _, args in jobs(orm_engine)] == [
        {"user_id": first_user.id},
        {"user_id": second_user.id},
    ]


# --- commit with only staged jobs ---------------------------------------------------------------


def test_a_commit_with_only_staged_jobs_writes_them(orm_engine: Engine) -> None:
    with statements(orm_engine) as seen, session_on(orm_engine) as session:
        staged = [
            sa_river.insert_on_flush(session, SendWelcome(user_id=1)),
            sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=2)),
        ]
        session.flush()  # nothing for the ORM to flush: SQLAlchemy skips it, events and all
        assert [s.status for s in staged] == ["staged", "staged"]
        session.commit()
    assert [s.status for s in staged] == ["written", "written"]
    assert len(job_inserts(seen)) == 1
    assert [args for _, _, args in jobs(orm_engine)] == [{"user_id": 1}, {"user_id": 2}]


def test_a_commit_with_only_persistent_objects_changed_writes_after_their_update(
    orm_engine: Engine,
) -> None:
    with session_on(orm_engine) as session, session.begin():
        user = User(email="g@example.com")
        session.add(user)
    with statements(orm_engine) as seen, session_on(orm_engine) as session, session.begin():
        loaded = session.get(User, user.id)
        assert loaded is not None
        loaded.email = "h@example.com"
        sa_river.insert_on_flush(session, lambda: ("changed", {"email": loaded.email}))
    assert index_of(seen, r"UPDATE staged_user") < index_of(seen, r"INSERT INTO river_job")
    assert [args for _, _, args in jobs(orm_engine)] == [{"email": "h@example.com"}]


# --- rollback and close -----------------------------------------------------------------------


def test_rollback_before_the_flush_discards_the_staged_jobs(orm_engine: Engine) -> None:
    with statements(orm_engine) as seen, session_on(orm_engine) as session:
        user = User(email="i@example.com")
        session.add(user)
        staged = sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id))
        session.rollback()
        assert (staged.status, staged.result) == ("discarded", None)
        # The next transaction of the same session does not write it.
        session.add(User(email="j@example.com"))
        session.commit()
    assert job_inserts(seen) == []
    assert jobs(orm_engine) == []
    assert user_count(orm_engine) == 1


def test_rollback_after_the_flush_removes_the_written_jobs(orm_engine: Engine) -> None:
    with session_on(orm_engine) as session:
        user = User(email="k@example.com")
        session.add(user)
        staged = sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id))
        session.flush()
        assert staged.status == "written"
        assert staged.result is not None
        session.rollback()
        assert (staged.status, staged.result) == ("discarded", None)
        session.commit()  # a new, empty transaction
    assert jobs(orm_engine) == []
    assert user_count(orm_engine) == 0


def test_closing_the_session_discards_the_staged_jobs(orm_engine: Engine) -> None:
    session = session_on(orm_engine)
    user = User(email="l@example.com")
    session.add(user)
    staged = sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id))
    session.close()
    assert staged.status == "discarded"
    # The closed session is used again: the old job is not written by it.
    session.add(User(email="m@example.com"))
    session.commit()
    session.close()
    assert jobs(orm_engine) == []


def test_staging_begins_the_transaction_as_add_does(orm_engine: Engine) -> None:
    with session_on(orm_engine) as session:
        assert not session.in_transaction()
        staged = sa_river.insert_on_flush(session, SendWelcome(user_id=1))
        assert session.in_transaction()
        session.rollback()  # so a rollback with nothing else in the session still discards it
        assert staged.status == "discarded"
        session.commit()
    assert jobs(orm_engine) == []
    with Session(orm_engine, autobegin=False) as session:
        with pytest.raises(sqlalchemy.exc.InvalidRequestError, match="Autobegin is disabled"):
            sa_river.insert_on_flush(session, SendWelcome(user_id=1))
        with session.begin():
            staged = sa_river.insert_on_flush(session, SendWelcome(user_id=2))
    assert staged.status == "written"


def test_a_rolled_back_savepoint_discards_only_what_it_undid(orm_engine: Engine) -> None:
    with session_on(orm_engine) as session, session.begin():
        outer = sa_river.insert_on_flush(session, SendWelcome(user_id=1))
        with session.begin_nested() as savepoint:
            inner = sa_river.insert_on_flush(session, SendWelcome(user_id=2))
            savepoint.rollback()
        assert (outer.status, inner.status) == ("staged", "discarded")

        with session.begin_nested() as savepoint:
            session.add(User(email="n@example.com"))
            session.flush()  # writes the outer job inside the savepoint
            assert outer.status == "written"
            savepoint.rollback()  # and takes it back, as it does the user
        assert (outer.status, outer.result) == ("discarded", None)

        kept = sa_river.insert_on_flush(session, SendWelcome(user_id=3))
        with session.begin_nested():
            released = sa_river.insert_on_flush(session, SendWelcome(user_id=4))
        # Releasing the savepoint (a commit) flushes and writes every staged job.
        assert (kept.status, released.status) == ("written", "written")
    assert [args for _, _, args in jobs(orm_engine)] == [{"user_id": 3}, {"user_id": 4}]


def test_jobs_written_in_a_released_savepoint_go_with_the_outer_rollback(
    orm_engine: Engine,
) -> None:
    with session_on(orm_engine) as session:
        with session.begin_nested():
            staged = sa_river.insert_on_flush(session, SendWelcome(user_id=1))
        assert staged.status == "written"
        session.rollback()
        assert staged.status == "discarded"
    assert jobs(orm_engine) == []


# --- failures ---------------------------------------------------------------------------------


def test_a_callable_that_raises_fails_the_flush_and_nothing_is_written(
    orm_engine: Engine,
) -> None:
    def broken() -> SendWelcome:
        raise LookupError("no such user")

    with statements(orm_engine) as seen, session_on(orm_engine) as session:
        user = User(email="o@example.com")
        session.add(user)
        fine = sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id))
        bad = sa_river.insert_on_flush(session, broken)
        with pytest.raises(InvalidJobError) as caught:
            session.flush()
        assert caught.value.field == "staged[1]"
        message = str(caught.value)
        assert "broken (test_staged_insert.py:" in message
        assert "LookupError: no such user" in message
        assert isinstance(caught.value.__cause__, LookupError)
        # The flush failed: SQLAlchemy rolled back its transaction; the session wants a
        # rollback, which discards what was staged.
        with pytest.raises(sqlalchemy.exc.PendingRollbackError):
            session.commit()
        session.rollback()
        assert (fine.status, bad.status) == ("discarded", "discarded")
        session.commit()
    assert job_inserts(seen) == []
    assert jobs(orm_engine) == []
    assert user_count(orm_engine) == 0


def test_a_callable_returning_bad_args_names_the_job(orm_engine: Engine) -> None:
    with session_on(orm_engine) as session:
        session.add(User(email="p@example.com"))
        sa_river.insert_on_flush(session, lambda: None)  # type: ignore[arg-type, return-value]
        with pytest.raises(InvalidJobError) as caught:
            session.commit()
        assert caught.value.field == "staged[0].args"
        assert "<lambda> (test_staged_insert.py:" in str(caught.value)
        assert "expected a JobArgs instance" in str(caught.value)
        session.rollback()

    with session_on(orm_engine) as session:
        sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=1), InsertOpts(priority=9))
        with pytest.raises(InvalidJobError) as caught:
            session.commit()  # only the job staged: written (and failing) by the commit
        assert caught.value.field == "staged[0].priority"
        session.rollback()
    assert jobs(orm_engine) == []
    assert user_count(orm_engine) == 0


def test_bad_ready_args_fail_at_staging(orm_engine: Engine) -> None:
    with session_on(orm_engine) as session:
        with pytest.raises(InvalidJobError) as caught:
            sa_river.insert_on_flush(session, SendWelcome(user_id=1), InsertOpts(queue=""))
        assert caught.value.field == "queue"
        with pytest.raises(InvalidJobError) as caught:
            sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=1), opts={})  # type: ignore[arg-type]
        assert caught.value.field == "opts"
        session.add(User(email="q@example.com"))
        session.commit()  # nothing was staged
    assert jobs(orm_engine) == []


def test_only_sessions_are_accepted(orm_engine: Engine) -> None:
    with pytest.raises(TypeError, match=r"use sa_river\.insert"):
        sa_river.insert_on_flush(orm_engine, SendWelcome(user_id=1))  # type: ignore[arg-type]
    with orm_engine.connect() as conn, pytest.raises(TypeError, match="has no flush"):
        sa_river.insert_on_flush(conn, SendWelcome(user_id=1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Session class is refused"):
        sa_river.enable_insert_on_flush(Session)


# --- uniqueness and hooks ---------------------------------------------------------------------


def test_unique_options_keep_working(orm_engine: Engine) -> None:
    existing = sa_river.insert(orm_engine, Digest(user_id=999)).job
    with session_on(orm_engine) as session, session.begin():
        user = User(email="r@example.com")
        session.add(user)
        again = sa_river.insert_on_flush(session, Digest(user_id=999))
        first = sa_river.insert_on_flush(session, lambda: Digest(user_id=user.id))
        second = sa_river.insert_on_flush(session, lambda: Digest(user_id=user.id))
        by_opts = sa_river.insert_on_flush(
            session,
            lambda: ("report", {"user_id": user.id}),
            InsertOpts(unique=UniqueOpts(by_args=True)),
        )
    assert again.result is not None
    assert first.result is not None
    assert second.result is not None
    assert again.result.unique_skipped_as_duplicate
    assert again.result.job.id == existing.id
    assert not first.result.unique_skipped_as_duplicate
    assert second.result.unique_skipped_as_duplicate
    assert second.result.job.id == first.result.job.id
    assert by_opts.result is not None
    assert not by_opts.result.unique_skipped_as_duplicate
    assert [kind for _, kind, _ in jobs(orm_engine)] == ["digest", "digest", "report"]


def test_hooks_see_staged_jobs_as_one_insert(orm_engine: Engine) -> None:
    class Seen(Hook):
        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def before_insert(self, jobs: Sequence[InsertingJob]) -> None:
            self.calls.append([job.kind for job in jobs])
            for job in jobs:
                job.metadata["via"] = "hook"

    hook = sa_river.add_hook(Seen())
    try:
        with session_on(orm_engine) as session, session.begin():
            user = User(email="s@example.com")
            session.add(user)
            staged = sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id))
            sa_river.insert_on_flush(session, ("other", {}))
    finally:
        sa_river.remove_hook(hook)
    assert hook.calls == [["send_welcome", "other"]]
    assert staged.result is not None
    assert staged.result.job.metadata == {"via": "hook"}


# --- listeners: installed once, and free when nothing is staged ---------------------------------


def _listeners_of(session: Session) -> list[Any]:
    ours = {fn for _, fn in _LISTENERS}
    return [fn for fn in session.dispatch.after_flush_postexec if fn in ours]


def _write_a_user(session: Session, email: str) -> None:
    session.add(User(email=email))
    session.commit()


def test_a_session_with_nothing_staged_runs_no_extra_statement(orm_engine: Engine) -> None:
    def statements_for(make: Callable[[], Session], email: str) -> list[str]:
        with session_on(orm_engine) as warm:  # the mapper's first use compiles and caches
            _write_a_user(warm, f"warm-{email}")
        with statements(orm_engine) as seen, make() as session:
            _write_a_user(session, email)
            session.rollback()  # and a rollback with nothing staged
            session.close()
        return seen

    plain = statements_for(lambda: session_on(orm_engine), "t1@example.com")
    maker = sa_river.enable_insert_on_flush(sessionmaker(orm_engine, expire_on_commit=False))
    assert statements_for(maker, "t2@example.com") == plain

    # A session that staged (and wrote) a job in an earlier transaction: listeners installed.
    session = session_on(orm_engine)
    sa_river.insert_on_flush(session, SendWelcome(user_id=1))
    session.commit()
    assert len(_listeners_of(session)) == 1
    assert statements_for(lambda: session, "t3@example.com") == plain


def test_listeners_are_installed_once_per_session_or_maker(orm_engine: Engine) -> None:
    # Nothing is listened to on the Session class itself.
    for name, fn in _LISTENERS:
        assert not event.contains(Session, name, fn)

    with session_on(orm_engine) as session:
        for n in range(3):
            sa_river.insert_on_flush(session, SendWelcome(user_id=n))
        sa_river.enable_insert_on_flush(session)
        assert len(_listeners_of(session)) == 1
        session.commit()
        sa_river.insert_on_flush(session, SendWelcome(user_id=9))
        session.commit()
        assert len(_listeners_of(session)) == 1
    assert len(jobs(orm_engine)) == 4

    maker = sessionmaker(orm_engine, expire_on_commit=False)
    assert sa_river.enable_insert_on_flush(maker) is maker
    sa_river.enable_insert_on_flush(maker)
    scoped = scoped_session(maker)
    sa_river.enable_insert_on_flush(scoped)
    with maker() as session:
        sa_river.insert_on_flush(session, SendWelcome(user_id=10))
        assert len(_listeners_of(session)) == 1  # the maker's, not a second set per session
        session.commit()
    staged = sa_river.insert_on_flush(scoped, SendWelcome(user_id=11))
    scoped.commit()
    scoped.remove()
    assert staged.status == "written"
    with session_on(orm_engine) as other:  # a plain session is not affected by the maker
        assert _listeners_of(other) == []
    assert len(jobs(orm_engine)) == 6


# --- AsyncSession -----------------------------------------------------------------------------


def run_async(db_url: URL, body: Callable[[AsyncEngine], Any]) -> Any:
    async def main() -> Any:
        aengine = create_async_engine(db_url.set(drivername="postgresql+psycopg"))
        try:
            return await asyncio.wait_for(body(aengine), timeout=30)
        finally:
            await aengine.dispose()

    return asyncio.run(main())


def test_async_session(orm_engine: Engine, db_url: URL) -> None:
    async def body(aengine: AsyncEngine) -> tuple[int, list[StagedJob]]:
        async with AsyncSession(aengine, expire_on_commit=False) as session:
            user = User(email="u@example.com")
            session.add(user)
            staged = [
                sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id)),
                sa_river.insert_on_flush(session, lambda: ("when", {"at": str(user.created_at)})),
            ]
            await session.flush()
            assert [s.status for s in staged] == ["written", "written"]
            await session.commit()

            user_id = user.id
            # Only a staged job: the commit writes it.
            staged.append(sa_river.insert_on_flush(session, SendWelcome(user_id=user_id)))
            await session.commit()

            # Rolled back before and after a flush.
            gone = sa_river.insert_on_flush(session, SendWelcome(user_id=-1))
            await session.rollback()
            session.add(User(email="v@example.com"))
            flushed = sa_river.insert_on_flush(session, SendWelcome(user_id=-2))
            await session.flush()
            await session.rollback()
            assert (gone.status, flushed.status) == ("discarded", "discarded")
            return user_id, staged

    user_id, staged = run_async(db_url, body)
    assert [s.status for s in staged] == ["written"] * 3
    assert [args for _, _, args in jobs(orm_engine)] == [
        {"user_id": user_id},
        {"at": staged[1].result.job.args["at"] if staged[1].result else None},
        {"user_id": user_id},
    ]


def test_async_sessionmaker(orm_engine: Engine, db_url: URL) -> None:
    async def body(aengine: AsyncEngine) -> list[StagedJob]:
        maker = sa_river.enable_insert_on_flush(async_sessionmaker(aengine, expire_on_commit=False))
        sa_river.enable_insert_on_flush(maker)
        out = []
        async with maker() as session, session.begin():
            assert len(_listeners_of(session.sync_session)) == 1
            user = User(email="w@example.com")
            session.add(user)
            out.append(sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id)))
            assert len(_listeners_of(session.sync_session)) == 1
        # A session of the maker with nothing staged.
        async with maker() as session, session.begin():
            session.add(User(email="x@example.com"))
        return out

    (staged,) = run_async(db_url, body)
    assert staged.status == "written"
    assert staged.result is not None
    assert jobs(orm_engine) == [(staged.result.job.id, "send_welcome", staged.result.job.args)]
    assert user_count(orm_engine) == 2
    # The listeners went on a class of the maker's own, not on Session.
    for name, fn in _LISTENERS:
        assert not event.contains(Session, name, fn)


def test_scheduled_and_pending_options(orm_engine: Engine) -> None:
    later = datetime.now().astimezone() + timedelta(hours=1)
    with session_on(orm_engine) as session, session.begin():
        user = User(email="y@example.com")
        session.add(user)
        scheduled = sa_river.insert_on_flush(
            session, lambda: SendWelcome(user_id=user.id), InsertOpts(scheduled_at=later)
        )
        pending = sa_river.insert_on_flush(
            session, lambda: SendWelcome(user_id=user.id), InsertOpts(pending=True)
        )
    assert scheduled.result is not None
    assert scheduled.result.job.state == JobState.SCHEDULED
    assert pending.result is not None
    assert pending.result.job.state == JobState.PENDING
    with session_on(orm_engine) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1
