"""The database goes away under running workers: restarts, a crash, a 35-second outage.

Three worker processes work a steady stream of jobs (short ones, long ones of a few seconds,
and ``fault_effect`` jobs that complete in their own transaction) inserted by a thread that
retries through connection errors. The cluster is restarted (``pg_ctl restart -m fast``
twice, a crash with ``-m immediate`` once) or stopped for 35 seconds. Then:

- the workers resume on their own: jobs complete again soon after each restart;
- no job is lost, none is left running, none runs twice at once (a worker's job must not be
  rescued while the worker is alive: after an outage every heartbeat is stale at once);
- every effect is written exactly once, with its job's completion;
- the worker logs hold no tracebacks: a database outage is an expected condition, logged as
  one warning per failure streak.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from tests.faults._cluster import PostgresCluster
from tests.faults._harness import (
    RESCUE_FLAGS,
    Figures,
    Fleet,
    InsertStream,
    analyse,
    completed_count,
    job_rows,
    read_executions,
    traceback_count,
    wait_quietly,
)
from tests.integration._worker_helpers import insert_job, wait_until

pytestmark = pytest.mark.slow_fault

QUEUE_LIMIT = 10
INSERT_INTERVAL = 0.05
LONG_SECONDS = 4.0
RESUME_BOUND = 30.0
"""Jobs must complete again within this long after the database is back."""
DRAIN_BOUND = 60.0
"""After the last fault, every job must be completed within this long (a job whose attempt
failed on the outage is retried after its backoff: 1 s, then 16 s)."""
SPANNING_SECONDS = 45.0
"""Jobs that run across the whole 35 s outage."""


def _job(n: int) -> tuple[str, dict[str, Any]]:
    if n % 10 == 3:
        return ("fault_long", {"s": LONG_SECONDS})
    if n % 10 == 7:
        return ("fault_effect", {"ms": 5})
    return ("fault_short", {"ms": 5})


OUTAGE_RESCUE_FLAGS = (
    "--heartbeat-interval",
    "5",
    "--rescue-after",
    "15",
    "--rescuer-interval",
    "1",
)
"""For the outage: the default heartbeat interval (5 s) and a rescue window shorter than the
outage, so that when the database comes back every heartbeat is stale and the first election
races the workers' first heartbeats (with a 1 s heartbeat the heartbeats nearly always win,
which would hide a rescuer that does not wait for them)."""


WORKERS = ("worker-a", "worker-b", "worker-c")
LOUD_LINES_PER_WORKER_AND_FAULT = 8


def _start_workers(fleet: Fleet, rescue_flags: tuple[str, ...] = RESCUE_FLAGS) -> None:
    for name in WORKERS:
        fleet.start(queue_limit=QUEUE_LIMIT, name=name, rescue_flags=rescue_flags)


def _wait_progress(engine: Engine, fleet: Fleet, more: int = 20) -> None:
    before = completed_count(engine)
    wait_until(
        lambda: completed_count(engine) >= before + more,
        30,
        interval=0.1,
        message=lambda: f"jobs to complete; {fleet.log_tail()}",
    )


def _resumed_within(engine: Engine, bound: float, more: int = 20) -> float | None:
    """Seconds until ``more`` jobs completed after the database came back; None if not
    within ``bound``."""
    started = time.monotonic()
    before: list[int] = []

    def progressed() -> bool:
        count = completed_count(engine)
        if not before:
            before.append(count)
        return count >= before[0] + more

    if wait_quietly(progressed, bound, interval=0.1):
        return round(time.monotonic() - started, 2)
    return None


def _long_started(fleet: Fleet, since: float) -> int:
    return sum(
        1
        for e in read_executions(fleet.records)
        if e.kind == "fault_long" and e.started >= since and e.ended is None
    )


def _wait_long_running(fleet: Fleet, at_least: int = 2) -> int:
    """Until ``at_least`` long jobs are running; how many are."""
    since = time.monotonic() - LONG_SECONDS - 1
    return wait_until(
        lambda: n if (n := _long_started(fleet, since)) >= at_least else None,
        15,
        interval=0.1,
        message=lambda: f"{at_least} long jobs running; {fleet.log_tail()}",
    )


def _drain(engine: Engine, stream: InsertStream, fleet: Fleet) -> tuple[Figures, str]:
    stream.stop()
    expected = len(stream.acknowledged)
    wait_quietly(lambda: completed_count(engine) >= expected, DRAIN_BOUND)
    # Count the table too: an insert whose COMMIT was cut may have happened anyway.
    wait_quietly(lambda: completed_count(engine) == len(_all_ids(engine)), 5)
    codes = fleet.stop_all()
    figures = analyse(
        engine, read_executions(fleet.records), fleet, acknowledged=stream.acknowledged
    )
    return figures, f"{figures.summary()} insert_failures={stream.failures} exit={codes}"


def _all_ids(engine: Engine) -> set[int]:
    return set(job_rows(engine))


def _loud_lines(log: str) -> int:
    """Log lines at WARNING or above (the text format names the level after the time)."""
    return sum(1 for line in log.splitlines() if " WARNING " in line or " ERROR " in line)


def _assert_quiet_logs(log: str, *, workers: int, faults: int) -> None:
    """An outage is one line per component of each worker (notifier, fetcher, completer,
    heartbeat, elector, a leader's services): not the statement and its parameters, and not
    a line per retry. Measured: 17 lines for 3 workers and one outage."""
    assert "[SQL:" not in log, log[-4000:]
    loud = _loud_lines(log)
    bound = LOUD_LINES_PER_WORKER_AND_FAULT * workers * faults
    assert loud <= bound, f"{loud} WARNING/ERROR lines, more than {bound}: {log[-4000:]}"


def _assert_no_damage(figures: Figures, report: str, log: str) -> None:
    assert figures.lost == [], report
    assert figures.stuck == [], report
    assert figures.ran_twice_at_once == [], report
    assert figures.unexplained_duplicates == [], report
    assert figures.duplicated_effects == [], report
    assert figures.effects_without_completion == [], report
    assert traceback_count(log) == 0, f"{traceback_count(log)} tracebacks; {report}\n{log[-4000:]}"


@pytest.mark.timeout(240)
def test_workers_resume_after_two_restarts_and_a_crash_with_no_job_lost_or_run_twice_at_once(
    fault_cluster: PostgresCluster, fault_db: URL, fault_engine: Engine, fleet: Fleet
) -> None:
    engine = fault_engine
    _start_workers(fleet)
    stream = InsertStream(fault_db, _job, INSERT_INTERVAL).start()
    try:
        _wait_progress(engine, fleet, 100)
        faults: list[tuple[str, Callable[[], None]]] = [
            ("restart fast", lambda: fault_cluster.restart("fast")),
            ("restart fast", lambda: fault_cluster.restart("fast")),
            ("crash (immediate) and start", lambda: fault_cluster.restart("immediate")),
        ]
        resumed: list[tuple[str, int, float | None]] = []
        for what, fault in faults:
            # Long jobs are running when the server goes.
            running_long = _wait_long_running(fleet)
            fault()
            resumed.append((what, running_long, _resumed_within(engine, RESUME_BOUND)))
            time.sleep(2.0)
    finally:
        figures, report = _drain(engine, stream, fleet)
    log = fleet.log_text()
    report = f"{report} resumed(what, long jobs running, seconds)={resumed}"
    print(report)

    assert [seconds is not None for _, _, seconds in resumed] == [True] * 3, report
    assert all(running >= 2 for _, running, _ in resumed), report
    _assert_no_damage(figures, report, log)
    _assert_quiet_logs(log, workers=len(WORKERS), faults=len(faults))


@pytest.mark.timeout(240)
def test_workers_resume_after_a_35_second_outage_and_rescue_none_of_their_live_jobs(
    fault_cluster: PostgresCluster, fault_db: URL, fault_engine: Engine, fleet: Fleet
) -> None:
    engine = fault_engine
    _start_workers(fleet, OUTAGE_RESCUE_FLAGS)
    stream = InsertStream(fault_db, _job, INSERT_INTERVAL).start()
    try:
        _wait_progress(engine, fleet, 100)
        # Jobs that are running before, during and after the outage, in live workers.
        spanning = {insert_job(engine, "fault_long", {"s": SPANNING_SECONDS}) for _ in range(4)}
        wait_until(
            lambda: sum(1 for e in read_executions(fleet.records) if e.job_id in spanning) == 4,
            15,
            interval=0.1,
            message=lambda: f"the spanning jobs to start; {fleet.log_tail()}",
        )
        fault_cluster.outage(35.0)
        resumed = _resumed_within(engine, RESUME_BOUND)
        wait_quietly(
            lambda: all(
                e.ended is not None for e in read_executions(fleet.records) if e.job_id in spanning
            ),
            SPANNING_SECONDS,
        )
    finally:
        figures, report = _drain(engine, stream, fleet)
    log = fleet.log_text()
    spanning_runs = [e for e in read_executions(fleet.records) if e.job_id in spanning]
    report = (
        f"{report} resumed_after={resumed}s spanning job runs="
        f"{[e.describe() for e in spanning_runs]}"
    )
    print(report)

    assert resumed is not None, report
    # Each spanning job ran once, in the worker that fetched it before the outage.
    assert len(spanning_runs) == len(spanning), report
    _assert_no_damage(figures, report, log)
    _assert_quiet_logs(log, workers=len(WORKERS), faults=1)
