"""The leader is SIGKILLed, then the next one is frozen (SIGSTOP) past its term and thawed.

Three worker processes (``--log-format json``) elect a leader. The test samples
``river_leader`` every 100 ms and reads each process's leadership events (``leader_elected``,
``leader_lost``, ``leader_resigned``) and leader-only actions (``maintenance_started``, the
maintenance services' events) from its log:

- after the leader is killed, another process is elected, and it acts (rescues the killed
  leader's running jobs);
- a leader frozen past its term is replaced; thawed, it fences itself: it logs that it lost
  leadership at once and takes no leader-only action;
- at no instant do two processes act as leader (the frozen stretch of a paused process does
  not count: a stopped process does nothing), and the terms in ``river_leader`` never overlap.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, text

import sa_river
from tests.faults._harness import (
    Fleet,
    WorkerCommand,
    json_events,
    read_executions,
    traceback_count,
    wait_quietly,
)
from tests.integration._worker_helpers import wait_until

pytestmark = pytest.mark.slow_fault

LEADER_TAKEOVER = 15.0 + 5.0 + 1.0 + 5.0
"""A follower leads within the CLI's leader TTL (15 s) + election interval (5 s) + jitter
(1 s) of the leader's last renewal, plus slack for a loaded machine."""
FENCE_BOUND = 2.0
"""A thawed leader whose term expired while it was frozen logs the loss within this long."""
LEADER_ONLY_EVENTS = {"maintenance_started"}
LEADER_ONLY_LOGGERS = ("sa_river.maintenance",)


@dataclass(frozen=True)
class Sample:
    at: float
    """Wall clock (the log records' clock)."""
    leader_id: str | None
    elected_at: datetime | None
    expires_at: datetime | None


class LeaderSampler:
    """Reads ``river_leader`` every ``interval`` seconds on a thread."""

    def __init__(self, engine: Engine, interval: float = 0.1) -> None:
        self._engine = engine
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[Sample] = []
        self._thread = threading.Thread(target=self._run, name="leader-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._engine.connect() as conn:
                    row = conn.execute(
                        text("SELECT leader_id, elected_at, expires_at FROM river_leader")
                    ).first()
            except sqlalchemy.exc.DBAPIError:
                continue
            at = time.time()
            if row is None:
                self.samples.append(Sample(at, None, None, None))
            else:
                self.samples.append(Sample(at, str(row[0]), row[1], row[2]))

    def current(self) -> str | None:
        return self.samples[-1].leader_id if self.samples else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _wall(monotonic: float) -> float:
    return monotonic + (time.time() - time.monotonic())


def _events(command: WorkerCommand) -> list[tuple[float, dict[str, Any]]]:
    found = []
    for record in json_events(command.log.read_text(errors="replace")):
        stamp = datetime.fromisoformat(str(record["time"])).timestamp()
        found.append((stamp, record))
    return sorted(found, key=lambda pair: pair[0])


def _leader_only(record: dict[str, Any]) -> bool:
    if record.get("event") == "maintenance_stopped":
        return False  # part of stepping down
    return record.get("event") in LEADER_ONLY_EVENTS or str(record.get("logger", "")).startswith(
        LEADER_ONLY_LOGGERS
    )


def _terms(command: WorkerCommand, end: float) -> list[tuple[float, float]]:
    """``(elected, lost)`` wall-clock stretches in which the process's log says it led."""
    spans: list[tuple[float, float]] = []
    opened: float | None = None
    for stamp, record in _events(command):
        event = record.get("event")
        if event == "leader_elected" and opened is None:
            opened = stamp
        elif event in ("leader_lost", "leader_resigned") and opened is not None:
            spans.append((opened, stamp))
            opened = None
    if opened is not None:
        spans.append((opened, end))
    return spans


@pytest.mark.timeout(180)
def test_a_killed_leader_is_replaced_and_a_thawed_leader_fences_itself(
    fleet: Fleet, fault_engine: Engine
) -> None:
    engine = fault_engine
    sampler = LeaderSampler(engine)
    by_id: dict[str, WorkerCommand] = {}

    def start(client_id: str) -> WorkerCommand:
        command = fleet.start(
            client_id=client_id,
            log_format="json",
            name=f"{client_id}-{len(fleet.commands)}",
        )
        by_id[client_id] = command
        return command

    try:
        for client_id in ("leader-a", "leader-b", "leader-c"):
            start(client_id)
        first = wait_until(sampler.current, LEADER_TAKEOVER, message="a first leader")

        # Long jobs everywhere, so the leader dies with jobs that the next one must rescue.
        ids = [r.job.id for r in sa_river.insert_many(engine, [("fault_long", {"s": 8})] * 24)]
        killed = by_id[first]
        wait_until(
            lambda: any(
                e.pid == killed.pid and e.ended is None for e in read_executions(fleet.records)
            ),
            15,
            message=lambda: f"the leader to run jobs; {fleet.log_tail()}",
        )
        fleet.kill(killed.pid)
        killed.proc.wait(10)
        killed_at = fleet.killed[killed.pid]
        second = wait_until(
            lambda: leader if (leader := sampler.current()) not in (None, first) else None,
            LEADER_TAKEOVER,
            message=lambda: f"a leader other than {first}; {fleet.log_tail()}",
        )
        kill_takeover = time.monotonic() - killed_at
        start(first)  # the killed worker comes back under its id
        rescued_by_second = wait_quietly(
            lambda: any(r.get("event") == "rescuer_rescued" for _, r in _events(by_id[second])),
            20,
        )

        # Freeze the new leader past its term, then thaw it.
        frozen = by_id[second]
        fleet.pause(frozen.pid)
        paused_at = time.monotonic()
        third = wait_until(
            lambda: leader if (leader := sampler.current()) not in (None, second) else None,
            LEADER_TAKEOVER,
            message=lambda: f"a leader other than the frozen {second}; {fleet.log_tail()}",
        )
        pause_takeover = time.monotonic() - paused_at
        time.sleep(1.0)
        thawed_at = _wall(fleet.resume(frozen.pid))
        wait_quietly(
            lambda: any(
                stamp >= thawed_at and r.get("event") == "leader_lost"
                for stamp, r in _events(frozen)
            ),
            10,
        )
        time.sleep(2.0)
        fleet.stop_all()
    finally:
        sampler.stop()
    end = time.time()

    # Per process: what its log says, cut at its SIGKILL, minus its frozen stretch.
    acting: list[tuple[float, float, int]] = []
    fence_latency: float | None = None
    actions_after_thaw = 0
    stray_actions = 0
    for command in fleet.commands:
        cut = _wall(fleet.killed[command.pid]) if command.pid in fleet.killed else end
        terms = [(s, min(e, cut)) for s, e in _terms(command, cut) if s < cut]
        events = _events(command)
        for stamp, record in events:
            if _leader_only(record) and not any(s <= stamp <= e for s, e in terms):
                stray_actions += 1
        for start_, end_ in terms:
            pieces = [(start_, end_)]
            for pause_start, pause_end in fleet.paused.get(command.pid, []):
                frozen_from, thawed = _wall(pause_start), _wall(pause_end)
                if not start_ < thawed <= end_:
                    continue
                after = [r for stamp, r in events if thawed <= stamp <= end_ and _leader_only(r)]
                actions_after_thaw += len(after)
                fence_latency = end_ - thawed
                fenced = not after and fence_latency <= FENCE_BOUND
                pieces = [(start_, min(end_, frozen_from))]
                if not fenced:
                    pieces.append((thawed, end_))
            acting += [(s, e, command.pid) for s, e in pieces]

    overlaps = [
        (a, b)
        for i, a in enumerate(sorted(acting))
        for b in sorted(acting)[i + 1 :]
        if a[2] != b[2] and b[0] < a[1] and a[0] < b[1]
    ]
    terms_seen: dict[tuple[str, datetime], datetime] = {}
    for sample in sampler.samples:
        if sample.leader_id is not None and sample.elected_at and sample.expires_at:
            terms_seen[(sample.leader_id, sample.elected_at)] = sample.expires_at
    ordered = sorted(terms_seen.items(), key=lambda item: item[0][1])
    overlapping_terms = [
        (a[0][0], b[0][0])
        for a, b in itertools.pairwise(ordered)
        if b[0][1] < a[1]  # elected before the previous term's last known expiry
    ]
    tracebacks = traceback_count(fleet.log_text())
    report = (
        f"leaders {first} -> {second} (after kill, {kill_takeover:.1f}s) -> {third} (after "
        f"freeze, {pause_takeover:.1f}s); rescued_by_new_leader={rescued_by_second} "
        f"fence_latency={fence_latency} actions_after_thaw={actions_after_thaw} "
        f"stray_leader_actions={stray_actions} acting_overlaps={overlaps} "
        f"terms={[(k[0], str(k[1])) for k, _ in ordered]} overlapping_terms={overlapping_terms} "
        f"tracebacks={tracebacks} jobs={len(ids)}"
    )
    print(report)

    assert second != first, report
    assert third != second, report
    assert kill_takeover <= LEADER_TAKEOVER, report
    assert rescued_by_second, report
    assert fence_latency is not None, report
    assert fence_latency <= FENCE_BOUND, report
    assert actions_after_thaw == 0, report
    assert stray_actions == 0, report
    assert overlaps == [], report
    assert overlapping_terms == [], report
    assert len(ordered) >= 3, report
    assert tracebacks == 0, report
