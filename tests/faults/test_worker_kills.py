"""SIGKILL worker processes in the middle of a few thousand short jobs, several times.

A killed runner leaves jobs ``running`` and outcomes it had not written yet. Whether it comes
back under the same id (``--id s``: a restarted process, or a supervisor child restarted as
``s-1`` again) or a new random one, and whether one child or the whole worker dies, after the
rescue window:

- no job is lost and none is left ``running``;
- a job runs again only if its earlier run had finished (its ``end`` is recorded) in a process
  that was killed before it wrote the completion, and never two runs of one job at once;
- ``fault_effect`` jobs, which write their effect and their completion in one transaction
  (:func:`sa_river.complete_in`), have their effect exactly once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, text

import sa_river
from tests.faults._harness import (
    RESCUE_AFTER,
    Fleet,
    WorkerCommand,
    analyse,
    command_line_id,
    completed_count,
    read_executions,
)
from tests.integration._worker_helpers import wait_until

SHORT_JOBS = 3000
EFFECT_JOBS = 600
JOB_MS = 10
QUEUE_LIMIT = 10

LEADER_TAKEOVER = 15.0 + 5.0 + 1.0
"""Worst case for a follower to lead after the leader died: the CLI's leader TTL (15 s), one
election interval (5 s) and its jitter (1 s)."""
RESCUE_WINDOW = LEADER_TAKEOVER + RESCUE_AFTER + 1.0 + 10.0
"""From the last kill until every job must be completed: a new leader, the rescue-after
window, one rescuer interval, and slack for a loaded 2-core machine."""
COMPLETION_LAG = 2.0
"""An outcome is written within this long after its handler ended (the completer flushes
every 100 ms); a job whose earlier finished run is older than this when its process was
killed must not run again."""


@dataclass(frozen=True)
class KillPlan:
    fixed_id: bool
    processes: int
    child_kills: int = 0
    """SIGKILL one child of the supervisor; it restarts it (as the same ``s-N`` with an id)."""
    leader_child_first: bool = False
    """The first child killed is the leader (else a follower: rescue needs no new election)."""
    worker_kills: int = 0
    """SIGKILL the whole worker command (supervisor and children), start it again as before."""


def _client_pids(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, pid FROM sa_river_client")).all()
    return {str(r.id): int(r.pid) for r in rows}


def _leader(engine: Engine) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT leader_id FROM river_leader WHERE expires_at > now()"))
        return found.scalar()


def _starts_by(fleet: Fleet, pid: int) -> int:
    return sum(1 for e in read_executions(fleet.records) if e.pid == pid)


def _running_in(fleet: Fleet, pid: int) -> int:
    return sum(1 for e in read_executions(fleet.records) if e.pid == pid and e.ended is None)


def _caught_mid_job(fleet: Fleet, pids: list[int]) -> bool:
    """Wait (briefly) for a moment when one of ``pids`` is inside a handler, so that the kill
    that follows hits running jobs: with 10 ms jobs a process is between two fetches now and
    then. False if none was seen working within the wait."""
    try:
        wait_until(lambda: any(_running_in(fleet, pid) > 0 for pid in pids), 5, interval=0.005)
    except AssertionError:
        return False
    return True


TOP_UP_BELOW = 6000
"""Jobs kept waiting before each kill: a restarted child takes seconds to start on a loaded
machine, and the survivors must not drain the queue meanwhile, or the child never reaches the
starts a kill waits for."""


def _top_up(engine: Engine, jobs: list[tuple[str, dict[str, object]]]) -> int:
    """Insert copies of ``jobs`` until at least :data:`TOP_UP_BELOW` wait; how many were added."""
    added = 0
    while True:
        with engine.connect() as conn:
            waiting = conn.execute(
                text("SELECT count(*) FROM river_job WHERE state = 'available'")
            ).scalar_one()
        if waiting + added >= TOP_UP_BELOW:
            return added
        added += sa_river.insert_many_fast(engine, jobs)


def _wait_working(fleet: Fleet, pid: int, starts: int = 30) -> None:
    """Until process ``pid`` has started ``starts`` handlers."""
    wait_until(
        lambda: _starts_by(fleet, pid) >= starts,
        30,
        interval=0.05,
        message=lambda: f"pid {pid} to start {starts} jobs; log:\n{fleet.log_tail()}",
    )


def _runner_pids(command: WorkerCommand, processes: int) -> list[int]:
    """The runner processes of a command: itself, or its ``processes`` children."""
    if processes == 1:
        return [command.pid]
    return wait_until(
        lambda: kids if len(kids := command.children()) == processes else None,
        30,
        message=f"{processes} children of the supervisor",
    )


def _wait_replaced(
    fleet: Fleet, command: WorkerCommand, victim: int, survivors: set[int], processes: int
) -> None:
    """Until ``victim`` is gone and the supervisor has started a new child beside
    ``survivors``. A SIGKILLed process stays listed for a moment after the signal, so without
    the first condition the old set of children would count as replaced."""

    def replaced() -> bool:
        children = set(command.children())
        return victim not in children and len(children) == processes and survivors < children

    wait_until(
        replaced,
        30,
        message=lambda: f"the supervisor to restart the killed child; {fleet.log_tail()}",
    )


def _pick_child(engine: Engine, fleet: Fleet, command: WorkerCommand, leader: bool) -> int:
    """A child that is (or is not) the leader. A child's id is the ``--id`` of its command
    line, or, for random ids, the one its heartbeat row names with its pid."""

    def pick() -> int | None:
        children = command.children()
        heartbeats = {pid: cid for cid, pid in _client_pids(engine).items()}
        ids = {pid: command_line_id(pid) or heartbeats.get(pid) for pid in children}
        current = _leader(engine)
        if current is None or None in ids.values():
            return None
        for pid, client_id in ids.items():
            if (client_id == current) == leader:
                return pid
        return None

    return wait_until(
        pick,
        LEADER_TAKEOVER + 10,
        interval=0.1,
        message=lambda: f"a {'leader' if leader else 'follower'} child; {fleet.log_tail()}",
    )


PLANS = {
    "two-processes-fixed-id-follower-child-killed-3-times": KillPlan(True, 2, child_kills=3),
    "two-processes-random-id-leader-then-follower-child-killed": KillPlan(
        False, 2, child_kills=2, leader_child_first=True
    ),
    "two-processes-fixed-id-child-then-whole-worker-killed": KillPlan(
        True, 2, child_kills=1, worker_kills=1
    ),
    "one-process-fixed-id-killed-3-times": KillPlan(True, 1, worker_kills=3),
    "one-process-random-id-killed-3-times": KillPlan(False, 1, worker_kills=3),
}
QUICK = {"two-processes-fixed-id-follower-child-killed-3-times"}


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "plan_name",
    [
        pytest.param(name, marks=() if name in QUICK else pytest.mark.slow_fault, id=name)
        for name in PLANS
    ],
)
def test_sigkilled_workers_lose_no_job_and_never_run_one_twice_at_once(
    plan_name: str, fleet: Fleet, fault_engine: Engine
) -> None:
    plan = PLANS[plan_name]
    engine = fault_engine
    every = (SHORT_JOBS + EFFECT_JOBS) // EFFECT_JOBS  # one effect job in every `every`
    jobs: list[tuple[str, dict[str, object]]] = [
        ("fault_effect" if i % every == 0 else "fault_short", {"ms": JOB_MS})
        for i in range(SHORT_JOBS + EFFECT_JOBS)
    ]
    total = sa_river.insert_many_fast(engine, jobs)
    assert total == SHORT_JOBS + EFFECT_JOBS

    client_id = "s" if plan.fixed_id else None

    def start() -> WorkerCommand:
        return fleet.start(
            client_id=client_id,
            processes=plan.processes,
            queue_limit=QUEUE_LIMIT,
            name=f"worker{len(fleet.commands)}",
        )

    command = start()
    kills_mid_job = 0
    kills = 0
    last_kill = time.monotonic()
    for n in range(plan.child_kills):
        total += _top_up(engine, jobs)
        victim = _pick_child(engine, fleet, command, leader=plan.leader_child_first and n == 0)
        _wait_working(fleet, victim)
        kills_mid_job += _caught_mid_job(fleet, [victim])
        survivors = set(command.children()) - {victim}
        fleet.kill(victim)
        kills += 1
        last_kill = time.monotonic()
        _wait_replaced(fleet, command, victim, survivors, plan.processes)
    for _ in range(plan.worker_kills):
        total += _top_up(engine, jobs)
        runners = _runner_pids(command, plan.processes)
        for pid in runners:
            _wait_working(fleet, pid)
        kills_mid_job += _caught_mid_job(fleet, runners)
        fleet.kill_command(command)
        kills += 1
        last_kill = time.monotonic()
        command = start()

    remaining_at_last_kill = total - completed_count(engine)
    drained = wait_until_quiet(engine, total, last_kill + RESCUE_WINDOW)
    codes = fleet.stop_all()
    figures = analyse(engine, read_executions(fleet.records), fleet)
    report = f"{plan_name}: {figures.summary()} drained={drained} kills={kills}"
    print(report)

    assert kills == plan.child_kills + plan.worker_kills
    # Every kill hit a process in the middle of jobs, with jobs still waiting.
    assert kills_mid_job == kills, report
    assert remaining_at_last_kill > 0, report
    assert figures.lost == [], report
    assert figures.stuck == [], report
    assert figures.ran_twice_at_once == [], report
    assert figures.unexplained_duplicates == [], report
    assert _late_duplicates(figures.executed_twice, fleet) == [], report
    assert figures.duplicated_effects == [], report
    assert figures.effects_without_completion == [], report
    with engine.connect() as conn:
        effects = conn.execute(text("SELECT count(DISTINCT job_id) FROM fault_effects"))
        # One effect for every effect job, those the top-ups added included.
        assert effects.scalar_one() == EFFECT_JOBS * (total // len(jobs)), report
    assert all(code == 0 for code in codes.values()), (codes, fleet.log_tail())


def wait_until_quiet(engine: Engine, total: int, deadline: float) -> bool:
    """Wait (until ``deadline``, monotonic) for every job to be completed; whether they were."""
    while time.monotonic() < deadline:
        if completed_count(engine) == total:
            return True
        time.sleep(0.25)
    return completed_count(engine) == total


def _late_duplicates(job_ids: list[int], fleet: Fleet) -> list[int]:
    """Jobs that ran again although an earlier run had ended more than ``COMPLETION_LAG``
    before its process was killed (its completion should have been written by then)."""
    late = []
    runs = read_executions(fleet.records)
    for job_id in job_ids:
        finished = sorted(
            (e for e in runs if e.job_id == job_id and e.outcome == "ok"), key=lambda e: e.started
        )
        for earlier in finished[:-1]:
            killed = fleet.killed.get(earlier.pid)
            if (
                earlier.ended is not None
                and killed is not None
                and killed - earlier.ended > COMPLETION_LAG
            ):
                late.append(job_id)
                break
    return late
