"""Periodic jobs on real PostgreSQL: one job per run, whoever leads and however often it moves."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, text

import sa_river
from sa_river import InsertOpts
from sa_river.errors import ConfigError
from sa_river.maintenance.periodic import PeriodicJobEnqueuer, run_unique_key
from sa_river.periodic import PeriodicJob

SECOND = timedelta(seconds=1)


def tick() -> tuple[str, dict[str, Any]]:
    return ("tick", {})


def every_second(**kwargs: Any) -> PeriodicJob:
    return PeriodicJob(SECOND, tick, name="tick", **kwargs)


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        now: datetime = conn.execute(text("SELECT now()")).scalar_one()
    return now


def runs(engine: Engine, kind: str = "tick") -> list[tuple[datetime, int]]:
    """``(scheduled_at, number of rows)`` per run time, in order."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT scheduled_at, count(*) FROM river_job WHERE kind = :kind "
                "GROUP BY scheduled_at ORDER BY scheduled_at"
            ),
            {"kind": kind},
        ).all()
    return [(r[0], r[1]) for r in rows]


def assert_one_row_per_period(
    engine: Engine, period: timedelta = SECOND, kind: str = "tick"
) -> list[datetime]:
    found = runs(engine, kind)
    assert found, "no run enqueued"
    assert all(count == 1 for _, count in found), found  # no run twice
    times = [t for t, _ in found]
    assert all(b - a == period for a, b in itertools.pairwise(times)), times  # no run skipped
    return times


def seed_run(engine: Engine, job: PeriodicJob, at: datetime) -> None:
    """Pretend an earlier enqueuer enqueued ``job``'s run at ``at`` (a plain, non-unique row)."""
    sa_river.insert(
        engine,
        job.args_factory(),
        InsertOpts(scheduled_at=at, metadata={"periodic_job": job.name}),
    )


def floor_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def enqueuer(
    engine: Engine,
    jobs: list[PeriodicJob],
    is_leader: Callable[[], bool] = lambda: True,
    **kwargs: Any,
) -> PeriodicJobEnqueuer:
    return PeriodicJobEnqueuer(
        engine, jobs=jobs, is_leader=is_leader, **{"interval": 0.05, **kwargs}
    )


@pytest.fixture
def services() -> Iterator[list[PeriodicJobEnqueuer]]:
    started: list[PeriodicJobEnqueuer] = []
    yield started
    for service in started:
        service.stop(5)


def test_interval_schedule_enqueues_one_job_per_period(
    engine: Engine, services: list[PeriodicJobEnqueuer]
) -> None:
    job = every_second(opts=InsertOpts(queue="periodic", priority=2, metadata={"team": "ops"}))
    service = enqueuer(engine, [job])
    services.append(service)
    service.start()
    time.sleep(2.1)
    service.stop(5)
    stopped = db_now(engine)

    times = assert_one_row_per_period(engine)
    assert service.started_at is not None
    assert len(times) >= 2
    assert times[0] > service.started_at  # nothing before the start: the first run is the next
    assert times[-1] == floor_second(stopped) or times[-1] == floor_second(stopped) - SECOND
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert all((t - epoch) % SECOND == timedelta(0) for t in times)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT scheduled_at, unique_key, unique_states::text AS states, metadata, "
                "queue, priority, state::text AS state FROM river_job ORDER BY scheduled_at"
            )
        ).all()
    for row in rows:
        assert bytes(row.unique_key) == run_unique_key("tick", "tick", row.scheduled_at)
        assert row.states == "11111111"
        assert row.metadata == {"team": "ops", "periodic_job": "tick"}
        assert (row.queue, row.priority, row.state) == ("periodic", 2, "available")


def test_cron_schedule_backfills_each_minute(engine: Engine) -> None:
    job = PeriodicJob("* * * * *", tick)
    before = db_now(engine)
    last_seen = before.replace(second=0, microsecond=0) - timedelta(minutes=3)
    seed_run(engine, job, last_seen)

    assert enqueuer(engine, [job]).run_once() >= 3
    after = db_now(engine)

    times = assert_one_row_per_period(engine, timedelta(minutes=1))
    assert times[0] == last_seen
    assert times[-1] <= after
    assert times[-1] + timedelta(minutes=1) > before  # the latest due minute is there
    assert all(t.second == 0 and t.microsecond == 0 for t in times)


def test_split_brain_enqueuers_never_duplicate_a_run(engine: Engine) -> None:
    # Two enqueuers that both believe they lead, with the same runs due, racing each round.
    job = every_second()
    seed_run(engine, job, floor_second(db_now(engine)) - 5 * SECOND)
    a = enqueuer(engine, [job])
    b = enqueuer(engine, [every_second()])
    inserted = {"a": 0, "b": 0}
    errors: list[BaseException] = []
    deadline = time.monotonic() + 1.6
    # Decided once per round, by the barrier's action: were each thread to read the clock
    # itself, one could stop while the other went on to wait alone at the next barrier.
    over = threading.Event()

    def end_of_round() -> None:
        if time.monotonic() > deadline:
            over.set()

    barrier = threading.Barrier(2, action=end_of_round)

    def race(name: str, service: PeriodicJobEnqueuer) -> None:
        try:
            while True:
                barrier.wait(5)
                if over.is_set():
                    return
                inserted[name] += service.run_once()
                time.sleep(0.05)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors, errors

    times = assert_one_row_per_period(engine)
    assert len(times) >= 7  # the seed, the 5 runs due at once, and at least one later one
    assert inserted["a"] + inserted["b"] == len(times) - 1  # each run inserted by exactly one


def test_leadership_handover_backfills_the_gap_without_duplicates(
    engine: Engine, services: list[PeriodicJobEnqueuer]
) -> None:
    job = every_second()
    a_leads = True
    a = enqueuer(engine, [job], lambda: a_leads)
    services.append(a)
    a.start()
    time.sleep(2.2)
    a_leads = False  # A loses leadership...
    a.stop(5)
    a_stopped = db_now(engine)
    a_runs = [t for t, _ in runs(engine)]
    assert len(a_runs) >= 2

    time.sleep(2.5)  # ...and B is elected 2.5 s later
    b = enqueuer(engine, [every_second()])
    services.append(b)
    b_started = db_now(engine)
    b.start()
    time.sleep(1.3)
    b.stop(5)

    times = assert_one_row_per_period(engine)
    assert times[: len(a_runs)] == a_runs
    gap = [t for t in times if a_runs[-1] < t <= b_started]
    assert len(gap) >= 2, (a_stopped, b_started, times)  # the runs due while no one led...
    with engine.connect() as conn:
        created = {
            r[0]: r[1] for r in conn.execute(text("SELECT scheduled_at, created_at FROM river_job"))
        }
    assert all(created[t] >= b_started for t in gap)  # ...were backfilled by B
    assert times[-1] >= floor_second(b_started) + SECOND  # and B carried on after them


def test_not_leader_inserts_nothing(engine: Engine, services: list[PeriodicJobEnqueuer]) -> None:
    job = every_second()
    seed_run(engine, job, floor_second(db_now(engine)) - 3 * SECOND)
    follower = enqueuer(engine, [job], lambda: False)
    assert follower.run_once() == 0
    services.append(follower)
    follower.start()
    time.sleep(0.3)
    follower.stop(5)
    assert len(runs(engine)) == 1  # only the seed


def test_leadership_is_rechecked_right_before_the_insert(engine: Engine) -> None:
    leading = True

    def lose_leadership_while_building() -> tuple[str, dict[str, Any]]:
        nonlocal leading
        leading = False
        return ("tick", {})

    job = PeriodicJob(SECOND, tick, name="tick")
    seed_run(engine, job, floor_second(db_now(engine)) - 3 * SECOND)
    job.args_factory = lose_leadership_while_building
    service = enqueuer(engine, [job], lambda: leading)
    assert service.run_once() == 0
    assert len(runs(engine)) == 1


def test_run_on_start_enqueues_one_run_at_start(engine: Engine) -> None:
    hourly = PeriodicJob(timedelta(hours=1), tick, run_on_start=True)
    service = enqueuer(engine, [hourly])
    assert service.run_once() == 1
    assert service.run_once() == 0
    assert service.started_at is not None
    assert [t for t, _ in runs(engine)] == [floor_second(service.started_at)]
    # A new enqueuer of the same leader-less history does not repeat the start run within the
    # same second, and otherwise enqueues nothing before the next hour.
    twin = enqueuer(engine, [PeriodicJob(timedelta(hours=1), tick)])
    assert twin.run_once() == 0


def sleep_past_next_second(engine: Engine) -> datetime:
    """Sleep until just after the next whole second of database time; return that second."""
    now = db_now(engine)
    boundary = floor_second(now) + SECOND
    time.sleep((boundary - now).total_seconds() + 0.05)
    return boundary


def test_restart_enqueues_the_next_due_run(engine: Engine) -> None:
    first = enqueuer(engine, [every_second()])
    assert first.run_once() == 0  # starts the series: nothing due yet
    due = sleep_past_next_second(engine)
    assert first.run_once() == 1
    assert [t for t, _ in runs(engine)] == [due]
    del first  # every runner stops

    missed = sleep_past_next_second(engine)  # a run falls due while nothing runs
    restarted = enqueuer(engine, [every_second()])  # a new process: no memory but the table
    assert restarted.run_once() == 1
    assert [t for t, _ in runs(engine)] == [due, missed]
    assert restarted.run_once() == 0


def test_max_backfill_keeps_the_latest_runs(engine: Engine) -> None:
    job = every_second()
    seed_run(engine, job, floor_second(db_now(engine)) - 1000 * SECOND)
    assert enqueuer(engine, [job], max_backfill=5).run_once() == 5
    now = db_now(engine)
    backfilled = [t for t, _ in runs(engine)][1:]
    assert len(backfilled) == 5
    assert all(b - a == SECOND for a, b in itertools.pairwise(backfilled))
    assert backfilled[-1] in (floor_second(now), floor_second(now) - SECOND)


def test_a_failing_args_factory_does_not_stop_other_jobs(engine: Engine) -> None:
    calls = 0

    def flaky() -> tuple[str, dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls > 1:  # fine when the PeriodicJob is built, failing at run time
            raise RuntimeError("upstream down")
        return ("flaky", {})

    broken = PeriodicJob(SECOND, flaky)
    healthy = every_second()
    start = floor_second(db_now(engine)) - 3 * SECOND
    seed_run(engine, healthy, start)
    sa_river.insert(
        engine,
        ("flaky", {}),
        InsertOpts(scheduled_at=start, metadata={"periodic_job": broken.name}),
    )
    assert enqueuer(engine, [broken, healthy]).run_once() >= 3
    assert len(runs(engine, "tick")) >= 4
    assert len(runs(engine, "flaky")) == 1


def test_enqueuer_configuration_errors(engine: Engine) -> None:
    one = every_second()
    with pytest.raises(ConfigError, match="duplicate periodic job name 'tick'") as info:
        PeriodicJobEnqueuer(engine, jobs=[one, every_second()], is_leader=lambda: True)
    assert info.value.field == "jobs[1].name"
    with pytest.raises(ConfigError) as info:
        PeriodicJobEnqueuer(engine, jobs=[one], is_leader=lambda: True, max_backfill=0)
    assert info.value.field == "max_backfill"
    with pytest.raises(ConfigError) as info:
        PeriodicJobEnqueuer(engine, jobs=[one], is_leader=lambda: True, interval=0)
    assert info.value.field == "interval"
    with pytest.raises(ConfigError) as info:
        PeriodicJob("61 * * * *", tick)
    assert info.value.field == "schedule"
    with pytest.raises(ConfigError) as info:
        PeriodicJob(timedelta(0), tick)
    assert info.value.field == "schedule"


def test_last_run_lookup_uses_the_indexes(engine: Engine) -> None:
    # With many unrelated jobs, finding a periodic job's latest run must not scan the table.
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO river_job (kind, args, metadata) "
                "SELECT 'other', '{}', jsonb_build_object('n', g) FROM generate_series(1, 20000) g"
            )
        )
        conn.execute(text("ANALYZE river_job"))
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                text(
                    "EXPLAIN SELECT max(scheduled_at) FROM river_job WHERE kind = 'tick' "
                    "AND metadata @> jsonb_build_object('periodic_job', 'tick')"
                )
            )
        )
    assert "Seq Scan" not in plan, plan
