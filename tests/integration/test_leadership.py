"""Leadership inside worker runners: services follow leadership, own pools (in-process)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from _worker_helpers import wait_until
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

import sa_river
from sa_river.periodic import PeriodicJob

FAST = {
    "elect_interval": 0.2,
    "leader_ttl": 3.0,
    "fetch_poll_interval": 0.2,
    "scheduler_interval": 0.2,
    "heartbeat_interval": 0.3,
}


def noop_workers() -> sa_river.Workers:
    workers = sa_river.Workers()
    workers.add("noop", lambda job: None)
    workers.add("tick", lambda job: None)
    return workers


@pytest.fixture
def started() -> Iterator[list[sa_river.Worker]]:
    workers: list[sa_river.Worker] = []
    yield workers
    for worker in workers:
        worker.stop(5)


def start(started: list[sa_river.Worker], url: URL, **settings: Any) -> sa_river.Worker:
    periodic = settings.pop("periodic_jobs", ())
    worker = sa_river.Worker(
        url, noop_workers(), {"default": 5}, periodic_jobs=periodic, **{**FAST, **settings}
    )
    worker.start()
    started.append(worker)
    return worker


def test_election_and_completion_go_on_while_the_application_pool_is_exhausted(
    db_url: URL, engine: Engine, started: list[sa_river.Worker]
) -> None:
    # The application's pool is fully checked out and held for 30 s.
    app_engine = create_engine(db_url, pool_size=2, max_overflow=0, pool_timeout=1)
    held = [app_engine.connect() for _ in range(2)]
    try:
        worker = start(started, db_url, elect_interval=1.0, leader_ttl=3.0)
        wait_until(worker.is_leader, 10, message="the worker to lead")
        leader_since = time.monotonic()
        lost = 0
        completed = 0
        while time.monotonic() - leader_since < 30:
            if not worker.is_leader():
                lost += 1
            ids = [r.job.id for r in sa_river.insert_many(engine, [("noop", {})] * 5)]
            wait_until(
                lambda ids=ids: all(
                    sa_river.get_job(engine, i).state == "completed"  # type: ignore[union-attr]
                    for i in ids
                ),
                10,
                message="jobs to complete",
            )
            completed += len(ids)
            time.sleep(0.5)
        with engine.connect() as conn:
            expires = conn.execute(text("SELECT expires_at - now() FROM river_leader")).scalar_one()
        assert lost == 0  # renewed every second for 30 s (the TTL is 3 s)
        assert expires > timedelta(seconds=1)
        assert completed >= 50
        assert app_engine.pool.checkedout() == 2  # still all held by the application
    finally:
        for conn in held:
            conn.close()
        app_engine.dispose()


def test_leader_only_services_follow_leadership_back_and_forth(
    db_url: URL, engine: Engine, started: list[sa_river.Worker]
) -> None:
    # A -> B -> A: leader-only services start and stop on the right runner every time, and a
    # 1 s periodic job neither skips nor doubles a run.
    tick = PeriodicJob(timedelta(seconds=1), lambda: ("tick", {}), name="tick")
    a = start(started, db_url, periodic_jobs=[tick])
    wait_until(a.is_leader, 10, message="a to lead")
    b = start(started, db_url, periodic_jobs=[tick])
    time.sleep(2.2)
    assert a._maintainer is not None
    assert b._maintainer is not None
    assert a._maintainer.running
    assert not b._maintainer.running

    a.stop(10)  # resigns: b takes over at once
    wait_until(b.is_leader, 5, message="b to lead")
    wait_until(
        lambda: b._maintainer is not None and b._maintainer.running, 5, message="b's services"
    )
    assert not a._maintainer.running
    time.sleep(2.2)

    a2 = start(started, db_url, periodic_jobs=[tick])  # "A" again, a new runner process
    time.sleep(0.5)
    assert not a2.is_leader()
    b.stop(10)
    wait_until(a2.is_leader, 5, message="a to lead again")
    wait_until(
        lambda: a2._maintainer is not None and a2._maintainer.running, 5, message="a's services"
    )
    assert not b._maintainer.running
    time.sleep(2.2)
    a2.stop(10)

    assert a._maintainer.transitions == [True, False]
    assert b._maintainer.transitions == [True, False]
    with engine.connect() as conn:
        runs = conn.execute(
            text(
                "SELECT scheduled_at, count(*) FROM river_job WHERE kind = 'tick' "
                "GROUP BY scheduled_at ORDER BY scheduled_at"
            )
        ).all()
    times = [r[0] for r in runs]
    assert all(count == 1 for _, count in runs), runs  # no run twice
    assert len(times) >= 6
    gaps = {(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)}
    assert gaps == {1.0}, runs  # no run skipped
