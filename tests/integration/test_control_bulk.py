"""delete_job, the bulk changes (cancel_jobs, retry_jobs, delete_jobs) and list_jobs' filters,
ordering and keyset paging, against real PostgreSQL, in their sync and async forms.

Expected results are computed in Python from the rows themselves, so every filter and every
ordering is checked against an independent reading of what it promises.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from _worker_helpers import count_states, insert_job, job, running_worker, wait_for_state
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

import sa_river
from sa_river import FieldError, InsertOpts, Job, JobRow, JobRunningError, JobState, Workers
from sa_river.urls import libpq_dsn

S = JobState
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
ORDERS = ["id", "created_at", "scheduled_at", "finalized_at", "priority"]
BULK = ["cancel_jobs", "retry_jobs", "delete_jobs"]


def set_columns(engine: Engine, job_id: int, **values: Any) -> None:
    """Set columns of one job directly (``state`` and ``finalized_at`` must agree)."""
    sets = ", ".join(
        f"{name} = CAST(:{name} AS river_job_state)" if name == "state" else f"{name} = :{name}"
        for name in values
    )
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE river_job SET {sets} WHERE id = :id"), {"id": job_id, **values})


def make(engine: Engine, kind: str = "bulk", state: str = "available", **values: Any) -> int:
    """A job in ``state`` (finalised now if that state is final), with ``values`` set."""
    job_id = insert_job(engine, kind, {}, InsertOpts(queue=values.pop("queue", "default")))
    if state in ("cancelled", "completed", "discarded"):
        values.setdefault("finalized_at", datetime.now(timezone.utc))
    set_columns(engine, job_id, state=state, **values)
    return job_id


def all_rows(engine: Engine) -> list[JobRow]:
    return sa_river.list_jobs(engine, limit=10_000)


def ids_of(rows: list[JobRow]) -> list[int]:
    return [r.id for r in rows]


def expected_order(rows: list[JobRow], order_by: str, descending: bool) -> list[int]:
    """``rows`` in ``order_by`` order, ids breaking ties, nulls (finalized_at) last."""
    valued = [r for r in rows if getattr(r, order_by) is not None]
    valued.sort(key=lambda r: (getattr(r, order_by), r.id), reverse=descending)
    nulls = sorted((r for r in rows if getattr(r, order_by) is None), key=lambda r: r.id)
    return ids_of(valued) + ids_of(nulls[::-1] if descending else nulls)


class Listener:
    """An autocommit connection LISTENing on this schema's river_control channel."""

    def __init__(self, url: URL) -> None:
        self.conn = psycopg.connect(libpq_dsn(url), autocommit=True)
        self.conn.execute('LISTEN "public.river_control"')

    def heard(self, count: int) -> list[str]:
        got = [n.payload for n in self.conn.notifies(timeout=5, stop_after=count)]
        assert len(got) == count, f"heard {got}, wanted {count} notifications"
        return got

    def nothing_more(self) -> None:
        assert list(self.conn.notifies(timeout=0.3)) == []


@pytest.fixture
def listener(db_url: URL) -> Iterator[Listener]:
    listening = Listener(db_url)
    yield listening
    listening.conn.close()


def run_async(db_url: URL, body: Callable[[Any], Any]) -> Any:
    """``await body(async_engine)`` on an AsyncEngine of the test database."""
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main() -> Any:
        aengine = create_async_engine(db_url.set(drivername="postgresql+psycopg"))
        try:
            return await body(aengine)
        finally:
            await aengine.dispose()

    return asyncio.run(asyncio.wait_for(main(), timeout=30))


# --- delete_job --------------------------------------------------------------------------------


class TestDeleteJob:
    @pytest.mark.parametrize(
        "state",
        ["available", "scheduled", "retryable", "pending", "completed", "cancelled", "discarded"],
    )
    def test_a_job_that_is_not_running_is_deleted(self, engine: Engine, state: str) -> None:
        job_id = make(engine, state=state)
        other = make(engine)
        before = job(engine, job_id)
        deleted = sa_river.delete_job(engine, job_id)
        assert deleted == before  # the row as it was
        assert sa_river.get_job(engine, job_id) is None
        assert sa_river.get_job(engine, other) is not None

    def test_a_running_job_is_refused_and_left_alone(self, engine: Engine) -> None:
        job_id = make(engine, state="running", attempt=1)
        before = job(engine, job_id)
        with pytest.raises(JobRunningError) as info:
            sa_river.delete_job(engine, job_id)
        assert (info.value.job_id, info.value.state, info.value.field) == (
            job_id,
            S.RUNNING,
            "job_id",
        )
        assert f"job {job_id} is running" in str(info.value)
        assert isinstance(info.value, FieldError)
        assert isinstance(info.value, ValueError)
        assert job(engine, job_id) == before

    def test_the_refusal_leaves_the_callers_transaction_usable(self, engine: Engine) -> None:
        running = make(engine, state="running", attempt=1)
        waiting = make(engine)
        with Session(engine) as session, session.begin():
            with pytest.raises(JobRunningError):
                sa_river.delete_job(session, running)
            assert sa_river.delete_job(session, waiting) is not None  # no aborted transaction
        assert sa_river.get_job(engine, waiting) is None
        assert job(engine, running).state is S.RUNNING

    def test_a_missing_job_is_none(self, engine: Engine) -> None:
        assert sa_river.delete_job(engine, 424242) is None

    def test_a_rolled_back_delete_deletes_nothing(self, engine: Engine) -> None:
        job_id = make(engine)
        with Session(engine) as session, session.begin():
            assert sa_river.delete_job(session, job_id) is not None
            assert sa_river.get_job(session, job_id) is None
            session.rollback()
        assert sa_river.get_job(engine, job_id) is not None

    def test_async(self, db_url: URL, engine: Engine) -> None:
        waiting = make(engine)
        running = make(engine, state="running", attempt=1)

        async def body(aengine: Any) -> Any:
            deleted = await sa_river.delete_job_async(aengine, waiting)
            missing = await sa_river.delete_job_async(aengine, waiting)
            with pytest.raises(JobRunningError):
                await sa_river.delete_job_async(aengine, running)
            return deleted, missing

        deleted, missing = run_async(db_url, body)
        assert deleted.id == waiting
        assert missing is None
        assert sa_river.get_job(engine, waiting) is None
        assert job(engine, running).state is S.RUNNING


# --- list_jobs: filters ------------------------------------------------------------------------


@pytest.fixture
def fleet(engine: Engine) -> list[JobRow]:
    """24 jobs with known, varied columns (ties included); their rows."""
    states = ["available", "scheduled", "retryable", "completed", "discarded", "cancelled"]
    for n in range(24):
        state = states[n % len(states)]
        tags = (["red"] if n % 2 == 0 else []) + (["blue"] if n % 3 == 0 else [])
        make(
            engine,
            kind="abc"[n % 3],
            state=state,
            queue=f"q{n % 2}",
            priority=1 + n % 4,
            tags=tags,
            created_at=T0 + (n * 7 % 24) * HOUR,  # all different, not in id order
            scheduled_at=T0 + (n * 5 % 6) * HOUR,  # four jobs at each hour
            **(
                {"finalized_at": T0 + (n % 4) * 24 * HOUR}
                if state in ("completed", "discarded", "cancelled")
                else {}
            ),
        )
    rows = all_rows(engine)
    assert len(rows) == 24
    return rows


class TestListFilters:
    def test_each_filter_matches_what_it_says(self, engine: Engine, fleet: list[JobRow]) -> None:
        def check(predicate: Callable[[JobRow], bool], **filters: Any) -> None:
            got = ids_of(sa_river.list_jobs(engine, **filters))
            want = [r.id for r in fleet if predicate(r)]
            assert got == want, filters
            assert want, f"{filters} should match some jobs of the fleet"

        check(lambda r: r.kind in ("a", "c"), kinds=["a", "c"])
        check(lambda r: r.queue == "q1", queues=["q1"])
        check(lambda r: r.state in (S.COMPLETED, S.RETRYABLE), states=["completed", S.RETRYABLE])
        check(lambda r: r.priority in (1, 4), priorities=[1, 4])
        some = [fleet[3].id, fleet[7].id, fleet[20].id]
        check(lambda r: r.id in some, ids=some)
        # tags: jobs having all the given tags (and maybe more).
        check(lambda r: "red" in r.tags, tags=["red"])
        check(lambda r: {"red", "blue"} <= set(r.tags), tags=["blue", "red"])
        check(lambda r: "blue" in r.tags, tags={"blue"})  # any collection but a string
        # Time bounds: after <= column < before.
        t = T0 + 5 * HOUR
        check(lambda r: r.created_at >= t, created_after=t)
        check(lambda r: r.created_at < t, created_before=t)
        check(
            lambda r: t <= r.created_at < t + 6 * HOUR,
            created_after=t,
            created_before=t + 6 * HOUR,
        )
        check(lambda r: r.scheduled_at >= T0 + 4 * HOUR, scheduled_after=T0 + 4 * HOUR)
        check(lambda r: r.scheduled_at < T0 + 2 * HOUR, scheduled_before=T0 + 2 * HOUR)
        day2 = T0 + 48 * HOUR
        check(lambda r: r.finalized_at is not None and r.finalized_at >= day2, finalized_after=day2)
        check(lambda r: r.finalized_at is not None and r.finalized_at < day2, finalized_before=day2)
        # Another time zone is the same instant.
        plus2 = timezone(timedelta(hours=2))
        check(lambda r: r.created_at >= t, created_after=t.astimezone(plus2))
        # Filters combine with AND.
        check(
            lambda r: r.kind == "a" and "red" in r.tags and r.priority in (1, 3),
            kinds=["a"],
            tags=["red"],
            priorities=[1, 3],
        )

    def test_nothing_matches_an_empty_list_or_an_unknown_value(
        self, engine: Engine, fleet: list[JobRow]
    ) -> None:
        for name in ("states", "queues", "kinds", "priorities", "ids"):
            assert sa_river.list_jobs(engine, **{name: []}) == [], name
        assert sa_river.list_jobs(engine, tags=["green"]) == []
        assert sa_river.list_jobs(engine, tags=["red", "green"]) == []
        assert sa_river.list_jobs(engine, kinds=["nope"]) == []

    def test_values_are_bound_parameters(self, engine: Engine) -> None:
        quoted = make(engine, kind="it's", tags=["o'clock"])
        make(engine, kind="plain")
        statements: list[str] = []

        def remember(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", remember)
        try:
            evil = "x'); DELETE FROM river_job; --"
            assert sa_river.list_jobs(engine, kinds=[evil], queues=[evil], tags=[evil]) == []
            got = sa_river.list_jobs(
                engine, kinds=["it's"], tags=["o'clock"], created_after=T0, priorities=[1]
            )
            assert ids_of(got) == [quoted]
        finally:
            event.remove(engine, "before_cursor_execute", remember)
        assert len(all_rows(engine)) == 2
        for statement in statements:
            for value in ("DELETE", "it's", "o'clock", "2024", "'red'"):
                assert value not in statement, statement


class TestListValidation:
    @pytest.mark.parametrize(
        ("arguments", "field", "says"),
        [
            ({"states": ["bogus"]}, "states", "unknown state 'bogus'"),
            ({"states": "available"}, "states", "not the single string 'available'"),
            ({"kinds": "mail"}, "kinds", r"kinds=\['mail'\]"),
            ({"kinds": 5}, "kinds", "must be a list, got int"),
            ({"queues": ["a\x00b"]}, "queues", "NUL"),
            ({"kinds": [1]}, "kinds", "must be strings"),
            ({"queues": ["ok", None]}, "queues", "must be strings"),
            ({"tags": []}, "tags", "at least one tag"),
            ({"tags": "red"}, "tags", "must be a list"),
            ({"priorities": [0]}, "priorities", "from 1 to 4"),
            ({"priorities": [True]}, "priorities", "from 1 to 4"),
            ({"ids": ["1"]}, "ids", "integers"),
            ({"order_by": "kind"}, "order_by", "must be one of id, created_at"),
            ({"descending": "yes"}, "descending", "True or False"),
            ({"limit": 0}, "limit", "at least 1"),
            ({"limit": -5}, "limit", "at least 1"),
            ({"limit": 1.5}, "limit", "at least 1"),
            ({"after_id": 5, "order_by": "created_at"}, "after_id", "id order only"),
            ({"after_id": "5"}, "after_id", "an integer"),
            ({"after": 5}, "after", "the last JobRow"),
            ({"created_after": "2024-01-01"}, "created_after", "must be a datetime"),
        ]
        + [
            ({name: datetime(2024, 1, 1)}, name, "timezone-aware")
            for name in (
                "created_after",
                "created_before",
                "scheduled_after",
                "scheduled_before",
                "finalized_after",
                "finalized_before",
            )
        ],
    )
    def test_bad_values_name_their_argument(
        self, engine: Engine, arguments: dict[str, Any], field: str, says: str
    ) -> None:
        with pytest.raises(FieldError, match=says) as info:
            sa_river.list_jobs(engine, **arguments)
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}: ")

    def test_after_and_after_id_together_is_an_error(self, engine: Engine) -> None:
        row = job(engine, make(engine))
        with pytest.raises(FieldError, match="not both") as info:
            sa_river.list_jobs(engine, after=row, after_id=row.id)
        assert info.value.field == "after"

    def test_bulk_functions_check_the_same_filters(self, engine: Engine) -> None:
        make(engine)
        for name in BULK:
            with pytest.raises(FieldError, match="timezone-aware"):
                getattr(sa_river, name)(engine, created_before=datetime(2030, 1, 1))
            with pytest.raises(FieldError, match="unknown state"):
                getattr(sa_river, name)(engine, states=["done"])
        with pytest.raises(FieldError, match="at least 1") as info:
            sa_river.delete_jobs(engine, kinds=["bulk"], limit=0)
        assert info.value.field == "limit"
        assert count_states(engine) == {"available": 1}


# --- list_jobs: ordering and keyset paging -----------------------------------------------------


class TestOrderingAndPaging:
    @pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
    @pytest.mark.parametrize("order_by", ORDERS)
    def test_pages_in_order_with_after(
        self, engine: Engine, fleet: list[JobRow], order_by: str, descending: bool
    ) -> None:
        want = expected_order(fleet, order_by, descending)
        full = sa_river.list_jobs(engine, order_by=order_by, descending=descending)
        assert ids_of(full) == want
        seen: list[int] = []
        after: JobRow | None = None
        while True:
            page = sa_river.list_jobs(
                engine,
                order_by=order_by,
                descending=descending,
                after=after,
                limit=5,
            )
            if not page:
                break
            assert len(page) <= 5
            seen += ids_of(page)
            after = page[-1]
        assert seen == want

    @pytest.mark.parametrize("order_by", ORDERS)
    def test_paging_with_filters(self, engine: Engine, fleet: list[JobRow], order_by: str) -> None:
        matching = [r for r in fleet if r.queue == "q0" and r.kind in ("a", "b")]
        want = expected_order(matching, order_by, True)
        seen: list[int] = []
        after: JobRow | None = None
        while page := sa_river.list_jobs(
            engine,
            queues=["q0"],
            kinds=["a", "b"],
            order_by=order_by,
            descending=True,
            after=after,
            limit=3,
        ):
            seen += ids_of(page)
            after = page[-1]
        assert seen == want

    def test_after_id_pages_in_id_order_both_ways(
        self, engine: Engine, fleet: list[JobRow]
    ) -> None:
        ids = ids_of(fleet)
        middle = ids[10]
        assert ids_of(sa_river.list_jobs(engine, after_id=middle)) == ids[11:]
        assert (
            ids_of(sa_river.list_jobs(engine, after_id=middle, descending=True)) == (ids[:10][::-1])
        )
        assert ids_of(sa_river.list_jobs(engine, order_by="id", after=fleet[10])) == ids[11:]

    def test_ids_beyond_32_bits(self, engine: Engine) -> None:
        with engine.begin() as conn:
            conn.execute(text("ALTER SEQUENCE river_job_id_seq RESTART WITH 3000000000"))
        ids = [make(engine, created_at=T0) for _ in range(3)]
        assert ids[0] >= 3_000_000_000
        for order_by in ("id", "created_at"):
            first = sa_river.list_jobs(engine, order_by=order_by, limit=1)
            rest = sa_river.list_jobs(engine, order_by=order_by, after=first[0])
            assert ids_of(first + rest) == ids, order_by
        assert ids_of(sa_river.list_jobs(engine, after_id=ids[0])) == ids[1:]
        assert sa_river.delete_jobs(engine, ids=ids[:2]) == ids[:2]

    def test_a_changed_job_neither_repeats_nor_shifts_a_page(
        self, engine: Engine, fleet: list[JobRow]
    ) -> None:
        first = sa_river.list_jobs(engine, order_by="created_at", limit=6)
        # The page's last job is deleted and a new job is created among the first page's.
        sa_river.delete_job(engine, first[-1].id)
        make(engine, created_at=first[0].created_at)
        rest = sa_river.list_jobs(engine, order_by="created_at", after=first[-1], limit=100)
        want = expected_order(fleet, "created_at", False)[6:]
        assert ids_of(rest) == want


# --- the bulk changes --------------------------------------------------------------------------


@pytest.fixture
def mixed(engine: Engine) -> dict[str, int]:
    """One job of kind "bulk" in each state, one of kind "other"; name -> id."""
    jobs = {
        state: make(engine, state=state, **({"attempt": 1} if state == "running" else {}))
        for state in (s.value for s in JobState)
    }
    jobs["other"] = make(engine, kind="other", state="available")
    return jobs


class TestBulkNeedsAFilter:
    @pytest.mark.parametrize("name", [*BULK, *(f"{n}_async" for n in BULK)])
    def test_no_filter_is_refused(self, db_url: URL, engine: Engine, name: str) -> None:
        make(engine)
        make(engine, state="completed")
        before = count_states(engine)
        function = getattr(sa_river, name)
        arguments = {"limit": 10} if name.startswith("delete") else {}  # a limit is no filter

        def call() -> Any:
            if name.endswith("_async"):
                return run_async(db_url, lambda aengine: function(aengine, **arguments))
            return function(engine, **arguments)

        with pytest.raises(FieldError, match="needs at least one filter") as info:
            call()
        assert info.value.field == "filters"
        assert "states=list(sa_river.JobState)" in str(info.value)
        assert count_states(engine) == before

    def test_every_job_explicitly(self, engine: Engine, mixed: dict[str, int]) -> None:
        deleted = sa_river.delete_jobs(engine, states=list(JobState))
        assert deleted == sorted(i for name, i in mixed.items() if name != "running")
        assert count_states(engine) == {"running": 1}

    def test_an_empty_list_is_a_filter_that_matches_nothing(
        self, engine: Engine, mixed: dict[str, int]
    ) -> None:
        before = count_states(engine)
        assert sa_river.delete_jobs(engine, ids=[]) == []
        assert sa_river.cancel_jobs(engine, kinds=[]) == []
        assert sa_river.retry_jobs(engine, states=[]) == []
        assert count_states(engine) == before


class TestCancelJobs:
    def test_cancels_as_cancel_job_does(self, engine: Engine, mixed: dict[str, int]) -> None:
        before = {name: job(engine, i) for name, i in mixed.items()}
        reached = sa_river.cancel_jobs(engine, kinds=["bulk"])
        unfinished = ["available", "pending", "retryable", "running", "scheduled"]
        assert reached == sorted(mixed[name] for name in unfinished)
        for name in ("available", "pending", "retryable", "scheduled"):
            row = job(engine, mixed[name])
            assert row.state is S.CANCELLED, name
            assert row.finalized_at is not None
            assert "cancel_attempted_at" in row.metadata
        running = job(engine, mixed["running"])
        assert running.state is S.RUNNING  # cancelled cooperatively
        assert running.finalized_at is None
        assert "cancel_attempted_at" in running.metadata
        for name in ("completed", "discarded", "cancelled", "other"):
            assert job(engine, mixed[name]) == before[name], name

    def test_sends_rivers_payload_for_each_job_reached(
        self, engine: Engine, listener: Listener
    ) -> None:
        running = make(engine, state="running", attempt=1, queue="wire")
        waiting = make(engine, state="available", queue="other")
        make(engine, state="completed", queue="wire")
        make(engine, kind="untouched", queue="wire")
        listener.nothing_more()  # inserts notify river_insert, not river_control
        assert sa_river.cancel_jobs(engine, kinds=["bulk"]) == [running, waiting]
        assert sorted(listener.heard(2)) == sorted(
            [
                f'{{"action" : "cancel", "job_id" : {running}, "queue" : "wire"}}',
                f'{{"action" : "cancel", "job_id" : {waiting}, "queue" : "other"}}',
            ]
        )
        # The running job is still unfinished: a second cancel asks again, as cancel_job does.
        assert sa_river.cancel_jobs(engine, kinds=["bulk"]) == [running]
        assert listener.heard(1) == [
            f'{{"action" : "cancel", "job_id" : {running}, "queue" : "wire"}}'
        ]
        listener.nothing_more()

    def test_a_rolled_back_cancel_sends_nothing(self, engine: Engine, listener: Listener) -> None:
        job_id = make(engine)
        with Session(engine) as session, session.begin():
            assert sa_river.cancel_jobs(session, ids=[job_id]) == [job_id]
            session.rollback()
        listener.nothing_more()
        assert job(engine, job_id).state is S.AVAILABLE

    def test_a_worker_stops_its_running_job(self, db_url: URL, engine: Engine) -> None:
        started = threading.Event()
        workers = Workers()

        @workers.handler("long_async")
        async def long_async(job: Job[dict[str, Any]]) -> None:
            started.set()
            await asyncio.sleep(30)

        job_id = insert_job(engine, "long_async", opts=InsertOpts(tags=["batch-7"]))
        with running_worker(db_url, workers, fetch_poll_interval=10):
            assert started.wait(10)
            assert sa_river.cancel_jobs(engine, tags=["batch-7"]) == [job_id]
            began = time.monotonic()
            row = wait_for_state(engine, job_id, S.CANCELLED, timeout=10)
            assert time.monotonic() - began < 3
        assert row.finalized_at is not None


class TestRetryJobs:
    def test_retries_as_retry_job_does(self, engine: Engine, mixed: dict[str, int]) -> None:
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        set_columns(engine, mixed["scheduled"], scheduled_at=later)
        set_columns(engine, mixed["discarded"], attempt=3, max_attempts=3)
        before = {name: job(engine, i) for name, i in mixed.items()}
        retried = sa_river.retry_jobs(engine, kinds=["bulk"])
        # Not the running job, nor the available one already due.
        changed = ["cancelled", "completed", "discarded", "pending", "retryable", "scheduled"]
        assert retried == sorted(mixed[name] for name in changed)
        for name in changed:
            row = job(engine, mixed[name])
            assert row.state is S.AVAILABLE, name
            assert row.finalized_at is None
            assert row.scheduled_at < later - timedelta(minutes=59)
        discarded = job(engine, mixed["discarded"])
        assert (discarded.attempt, discarded.max_attempts) == (3, 4)  # one more attempt
        for name in ("running", "available", "other"):
            assert job(engine, mixed[name]) == before[name], name

    def test_retry_job_leaves_an_available_job_that_is_due_alone(self, engine: Engine) -> None:
        due = make(engine, scheduled_at=T0)
        future = make(engine, scheduled_at=datetime.now(timezone.utc) + timedelta(hours=1))
        assert sa_river.retry_job(engine, due) == job(engine, due)
        assert job(engine, due).scheduled_at == T0  # it keeps its place in the queue
        assert sa_river.retry_jobs(engine, ids=[due, future]) == [future]
        assert job(engine, future).scheduled_at < datetime.now(timezone.utc) + timedelta(minutes=1)


class TestDeleteJobs:
    def test_deletes_all_but_running_jobs(self, engine: Engine, mixed: dict[str, int]) -> None:
        deleted = sa_river.delete_jobs(engine, kinds=["bulk"])
        assert deleted == sorted(i for name, i in mixed.items() if name not in ("running", "other"))
        left = ids_of(all_rows(engine))
        assert left == sorted([mixed["running"], mixed["other"]])

    def test_a_running_job_is_never_deleted(self, engine: Engine) -> None:
        running = make(engine, state="running", attempt=1)
        assert sa_river.delete_jobs(engine, ids=[running]) == []
        assert sa_river.delete_jobs(engine, states=["running"]) == []
        assert job(engine, running).state is S.RUNNING

    def test_limit_deletes_in_batches_lowest_ids_first(self, engine: Engine) -> None:
        old = [make(engine, state="completed", finalized_at=T0) for _ in range(7)]
        recent = make(engine, state="completed")
        make(engine, state="running", attempt=1, finalized_at=None)
        batches = []
        while batch := sa_river.delete_jobs(
            engine, states=["completed"], finalized_before=T0 + HOUR, limit=3
        ):
            batches.append(batch)
        assert batches == [old[:3], old[3:6], old[6:]]
        assert sa_river.get_job(engine, recent) is not None

    def test_every_filter_applies(self, engine: Engine, fleet: list[JobRow]) -> None:
        t = T0 + 10 * HOUR
        want = [r.id for r in fleet if r.kind == "a" and r.created_at >= t and "red" in r.tags]
        assert want
        assert sa_river.delete_jobs(engine, kinds=["a"], created_after=t, tags=["red"]) == want
        assert ids_of(all_rows(engine)) == [r.id for r in fleet if r.id not in want]


class TestAsyncTwins:
    def test_list_and_bulk_twins_on_an_async_engine_and_session(
        self, db_url: URL, engine: Engine, fleet: list[JobRow]
    ) -> None:
        from sqlalchemy.ext.asyncio import AsyncSession

        running = make(engine, kind="twin", state="running", attempt=1)
        waiting = make(engine, kind="twin", state="available")
        discarded = make(engine, kind="twin", state="discarded")

        async def body(aengine: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            page = await sa_river.list_jobs_async(
                aengine, order_by="created_at", descending=True, limit=4, tags=["red"]
            )
            more = await sa_river.list_jobs_async(
                aengine, order_by="created_at", descending=True, after=page[-1], tags=["red"]
            )
            seen["list"] = ids_of(page) + ids_of(more)
            async with AsyncSession(aengine) as session:
                await sa_river.delete_jobs_async(session, kinds=["twin"])
                await session.rollback()  # the session's transaction: nothing deleted
            seen["retry"] = await sa_river.retry_jobs_async(aengine, kinds=["twin"])
            seen["cancel"] = await sa_river.cancel_jobs_async(aengine, kinds=["twin"])
            async with AsyncSession(aengine) as session, session.begin():
                seen["delete"] = await sa_river.delete_jobs_async(session, kinds=["twin"], limit=5)
            return seen

        seen = run_async(db_url, body)
        red = [r for r in fleet if "red" in r.tags]
        assert seen == {
            "list": expected_order(red, "created_at", True),
            "retry": [discarded],
            "cancel": [running, waiting, discarded],
            "delete": [waiting, discarded],
        }
        assert job(engine, running).state is S.RUNNING


def test_a_misspelt_filter_is_refused_naming_it_and_the_real_ones(engine: Engine) -> None:
    for call in (sa_river.list_jobs, sa_river.cancel_jobs, sa_river.delete_jobs):
        with pytest.raises(TypeError, match=r"unknown filter 'state'; the filters are states,"):
            call(engine, state=["available"])  # type: ignore[call-arg]
