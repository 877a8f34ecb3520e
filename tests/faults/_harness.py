"""Worker processes, execution records and their analysis for the fault tests (not a test module).

- :class:`Fleet` starts ``python -m sa_river worker`` commands (one runner, or a supervisor with
  ``--processes N``), kills them or their children with SIGKILL, stops them with SIGTERM, and at
  the end kills every process it ever started that is still alive.
- :func:`read_executions` reads the records ``_fault_app`` writes outside the database.
- :func:`analyse` lays the executions beside the final ``river_job`` rows and the kill times and
  counts lost, stuck, duplicated and overlapping jobs (:class:`Figures`).
- :class:`InsertStream` inserts jobs from a thread, each in its own transaction, retrying
  through connection errors.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy.exc
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

import sa_river
from tests.faults._fault_app import RECORDS_ENV

__all__ = [
    "APP",
    "RESCUE_FLAGS",
    "ROOT",
    "Execution",
    "Figures",
    "Fleet",
    "InsertStream",
    "WorkerCommand",
    "analyse",
    "command_line_id",
    "json_events",
    "read_executions",
    "traceback_count",
    "url_string",
]

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults._fault_app:workers"

RESCUE_FLAGS: tuple[str, ...] = (
    "--heartbeat-interval",
    "1",
    "--rescue-after",
    "5",
    "--rescuer-interval",
    "1",
)
"""Short rescue settings: heartbeat every second, a runner silent for 5 s is lost, the leader's
rescuer looks every second."""

RESCUE_AFTER = 5.0


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def command_line_id(pid: int) -> str | None:
    """The ``--id`` a worker process was started with, if any."""
    argv = _cmdline(pid).split(b"\0")
    for option, value in itertools.pairwise(argv):
        if option == b"--id":
            return value.decode()
    return None


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


class WorkerCommand:
    """One ``python -m sa_river worker`` process: a runner, or with ``processes > 1`` a
    supervisor whose children are the runners."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self._log_file: TextIO = log.open("a")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[int]:
        return children_of(self.pid) if self.alive() else []

    def close(self) -> None:
        self._log_file.close()


@dataclass
class Fleet:
    """Every worker command a test starts, and what happened to each process."""

    url: URL
    directory: Path
    records: Path
    commands: list[WorkerCommand] = field(default_factory=list)
    killed: dict[int, float] = field(default_factory=dict)
    """pid -> CLOCK_MONOTONIC of its SIGKILL."""
    stopped: dict[int, float] = field(default_factory=dict)
    """pid -> CLOCK_MONOTONIC at which it was seen gone after a SIGTERM."""
    paused: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    _seen: set[int] = field(default_factory=set)

    def start(
        self,
        *,
        client_id: str | None = None,
        processes: int = 1,
        queue_limit: int = 10,
        log_format: str = "text",
        name: str = "worker",
        rescue_flags: Sequence[str] = RESCUE_FLAGS,
        extra: Sequence[str] = (),
    ) -> WorkerCommand:
        argv = [sys.executable, "-m", "sa_river", "worker", "--app", APP]
        argv += ["--database-url", url_string(self.url), "--queue", f"default={queue_limit}"]
        argv += ["--poll-interval", "0.2", "--shutdown-timeout", "5"]
        argv += ["--log-format", log_format, *rescue_flags]
        if client_id is not None:
            argv += ["--id", client_id]
        if processes > 1:
            argv += ["--processes", str(processes)]
        argv += list(extra)
        env = dict(os.environ)
        env["SA_RIVER_DATABASE_URL"] = url_string(self.url)
        env[RECORDS_ENV] = str(self.records)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = WorkerCommand(argv, env, self.directory / f"{name}.log")
        self.commands.append(command)
        self._seen.add(command.pid)
        return command

    # -- faults -------------------------------------------------------------------------------

    def kill(self, pid: int) -> None:
        """SIGKILL one process (a runner or a supervisor's child)."""
        self._seen.add(pid)
        os.kill(pid, signal.SIGKILL)
        self.killed[pid] = time.monotonic()  # after: no record of it can be later than this

    def kill_command(self, command: WorkerCommand) -> list[int]:
        """SIGKILL a whole worker command at once: the supervisor and all its children, as a
        crash of the machine or container would. The pids killed."""
        victims = [command.pid, *command.children()]
        self._seen.update(victims)
        for pid in victims:  # the supervisor first: it must not restart the others
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.killed[pid] = time.monotonic()
        command.proc.wait(10)
        return victims

    def pause(self, pid: int) -> float:
        """SIGSTOP; returns the time."""
        self._seen.add(pid)
        os.kill(pid, signal.SIGSTOP)
        stamp = time.monotonic()
        self.paused.setdefault(pid, []).append((stamp, float("inf")))
        return stamp

    def resume(self, pid: int) -> float:
        """SIGCONT; returns the time."""
        os.kill(pid, signal.SIGCONT)
        stamp = time.monotonic()
        start, _ = self.paused[pid][-1]
        self.paused[pid][-1] = (start, stamp)
        return stamp

    # -- stopping -----------------------------------------------------------------------------

    def stop_all(self, timeout: float = 30.0) -> dict[int, int | None]:
        """SIGTERM every live command and wait (bounded); ``pid -> exit code`` (None: it had
        to be killed)."""
        live = [c for c in self.commands if c.alive()]
        pids = {c.pid: c.children() for c in live}
        for command in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command.pid, signal.SIGCONT)
                command.proc.send_signal(signal.SIGTERM)
        codes: dict[int, int | None] = {}
        deadline = time.monotonic() + timeout
        for command in live:
            try:
                codes[command.pid] = command.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[command.pid] = None
                command.proc.kill()
                command.proc.wait(10)
            now = time.monotonic()
            for pid in [command.pid, *pids[command.pid]]:
                self.stopped.setdefault(pid, now)
        return codes

    def cleanup(self) -> None:
        """SIGKILL every process this fleet started (or saw in the records) still alive."""
        recorded = {e.pid for e in read_executions(self.records)}
        for command in self.commands:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command.pid, signal.SIGCONT)
            children = command.children()
            if command.alive():
                command.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                command.proc.wait(10)
            self._seen.update(children)
        for pid in self._seen | recorded:
            if pid != os.getpid() and _alive(pid) and b"sa_river" in _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        for command in self.commands:
            command.close()

    def log_text(self) -> str:
        return "\n".join(c.log.read_text(errors="replace") for c in self.commands)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def end_of(self, pid: int, now: float) -> float:
        """When process ``pid`` stopped running handlers: its kill, its stop, or ``now``."""
        return min(self.killed.get(pid, now), self.stopped.get(pid, now), now)


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """One run of a handler, from its ``start`` line to its ``end`` line (if any)."""

    kind: str
    job_id: int
    attempt: int
    pid: int
    started: float
    ended: float | None
    outcome: str | None

    def describe(self) -> str:
        end = "-" if self.ended is None else f"{self.ended:.3f}"
        return (
            f"job {self.job_id} attempt {self.attempt} pid {self.pid} "
            f"[{self.started:.3f}, {end}] {self.outcome or 'unfinished'}"
        )


def read_executions(path: Path) -> list[Execution]:
    """The executions recorded in ``path``: each ``start`` paired with the next ``end`` of the
    same job, attempt and process."""
    if not path.exists():
        return []
    open_runs: dict[tuple[int, int, int], list[tuple[str, float]]] = defaultdict(list)
    done: list[Execution] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 7:
            continue  # a line cut by a SIGKILL mid-write (one write: in practice never)
        event, kind, job_id, attempt, pid, mono = parts[:6]
        key = (int(job_id), int(attempt), int(pid))
        if event == "start":
            open_runs[key].append((kind, float(mono)))
        elif event == "end" and open_runs[key]:
            kind, started = open_runs[key].pop(0)
            outcome = parts[7] if len(parts) > 7 else "ok"
            done.append(Execution(kind, *key, started, float(mono), outcome))
    for key, runs in open_runs.items():
        for kind, started in runs:
            done.append(Execution(kind, *key, started, None, None))
    return sorted(done, key=lambda e: (e.job_id, e.started))


# --- analysis ------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the faults did to the jobs; every list holds job ids (or descriptions)."""

    jobs: int
    completed: int
    executions: int
    lost: list[int]
    """Inserted but not completed at the end."""
    stuck: list[int]
    """Still ``running`` at the end, after the rescue window."""
    executed_twice: list[int]
    """Jobs with more than one finished execution."""
    unexplained_duplicates: list[int]
    """Of those, the ones where an earlier finished execution's process was not killed after
    it: its completion should have been written, the job should not have run again."""
    ran_twice_at_once: list[str]
    """Two executions of one job overlapping in time (an execution whose process was killed
    ends at the kill)."""
    duplicated_effects: list[int]
    """``fault_effect`` jobs with more than one row in ``fault_effects``."""
    effects_without_completion: list[int]
    """``fault_effect`` rows whose job is not completed (the effect and the completion must
    commit together)."""
    states: dict[str, int]
    runs: dict[int, list[str]] = field(default_factory=dict)
    """The executions of the jobs named in the lists above (for the failure message)."""

    def summary(self) -> str:
        return (
            f"jobs={self.jobs} completed={self.completed} executions={self.executions} "
            f"lost={len(self.lost)} stuck={len(self.stuck)} "
            f"executed_twice={len(self.executed_twice)} "
            f"unexplained_duplicates={len(self.unexplained_duplicates)} "
            f"ran_twice_at_once={len(self.ran_twice_at_once)} "
            f"duplicated_effects={len(self.duplicated_effects)} "
            f"effects_without_completion={len(self.effects_without_completion)} "
            f"states={self.states} "
            f"examples: lost={self.lost[:5]} stuck={self.stuck[:5]} "
            f"unexplained={self.unexplained_duplicates[:5]} "
            f"overlaps={self.ran_twice_at_once[:3]} "
            f"runs of unexplained duplicates: "
            f"{[self.runs.get(j) for j in self.unexplained_duplicates[:3]]}"
        )


def job_rows(engine: Engine) -> dict[int, tuple[str, str]]:
    """``id -> (kind, state)`` of every job."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, kind, state::text FROM river_job")).all()
    return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}


def analyse(
    engine: Engine,
    executions: Sequence[Execution],
    fleet: Fleet,
    *,
    acknowledged: Iterable[int] = (),
    now: float | None = None,
) -> Figures:
    """Count what went wrong, from the final rows, the records and the fleet's kill times.

    ``acknowledged``: ids whose insert returned (a job acknowledged but missing is lost too).
    """
    now = time.monotonic() if now is None else now
    rows = job_rows(engine)
    states: dict[str, int] = defaultdict(int)
    for _, state in rows.values():
        states[state] += 1
    ids = set(rows) | set(acknowledged)
    lost = sorted(i for i in ids if rows.get(i, ("", "missing"))[1] != "completed")
    stuck = sorted(i for i in ids if rows.get(i, ("", ""))[1] == "running")

    by_job: dict[int, list[Execution]] = defaultdict(list)
    for execution in executions:
        by_job[execution.job_id].append(execution)

    executed_twice: list[int] = []
    unexplained: list[int] = []
    overlapping: list[str] = []
    for job_id, runs in sorted(by_job.items()):
        finished = sorted((r for r in runs if r.outcome == "ok"), key=lambda r: r.started)
        if len(finished) > 1:
            executed_twice.append(job_id)
            for earlier in finished[:-1]:
                assert earlier.ended is not None
                killed_at = fleet.killed.get(earlier.pid)
                if killed_at is None or killed_at < earlier.ended:
                    unexplained.append(job_id)
                    break
        spans = sorted(
            (
                r.started,
                r.ended if r.ended is not None else fleet.end_of(r.pid, now),
                r,
            )
            for r in runs
        )
        for i, (start_a, end_a, a) in enumerate(spans):
            for start_b, end_b, b in spans[i + 1 :]:
                if start_b < end_a and start_a < end_b:
                    overlapping.append(f"{a.describe()} || {b.describe()}")

    with engine.connect() as conn:
        effect_counts = conn.execute(
            text("SELECT job_id, count(*) FROM fault_effects GROUP BY job_id")
        ).all()
    duplicated_effects = sorted(int(j) for j, n in effect_counts if n > 1)
    effects_without_completion = sorted(
        int(j) for j, _ in effect_counts if rows.get(int(j), ("", ""))[1] != "completed"
    )

    def describe(run: Execution) -> str:
        killed = fleet.killed.get(run.pid)
        fate = f"killed at {killed:.3f}" if killed is not None else "not killed"
        return f"{run.describe()} ({fate})"

    return Figures(
        runs={j: [describe(r) for r in by_job[j]] for j in unexplained[:10]},
        jobs=len(ids),
        completed=states.get("completed", 0),
        executions=len(executions),
        lost=lost,
        stuck=stuck,
        executed_twice=executed_twice,
        unexplained_duplicates=unexplained,
        ran_twice_at_once=overlapping,
        duplicated_effects=duplicated_effects,
        effects_without_completion=effects_without_completion,
        states=dict(states),
    )


def completed_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM river_job WHERE state = 'completed'")
            ).scalar_one()
        )


def wait_quietly(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` up to ``timeout`` seconds; whether it became true. Errors (the
    database being down) count as false. The caller asserts on the figures instead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except sqlalchemy.exc.DBAPIError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- logs ----------------------------------------------------------------------------------


def traceback_count(log: str) -> int:
    """How many tracebacks a worker log holds (text or JSON format)."""
    return log.count("Traceback (most recent call last)")


def json_events(log: str) -> Iterator[dict[str, Any]]:
    """The JSON log records of a ``--log-format json`` worker log (other lines skipped)."""
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    yield record


# --- inserts -------------------------------------------------------------------------------


class InsertStream:
    """A thread inserting ``make_job(n)`` for n = 0, 1, ... every ``interval`` seconds, each
    with :func:`sa_river.insert` in a transaction of its own, retrying the same n after a
    connection error (an insert whose COMMIT was cut may have happened: the test counts the
    rows in the table, not only the acknowledged ids)."""

    def __init__(
        self,
        url: URL,
        make_job: Callable[[int], tuple[str, dict[str, Any]]],
        interval: float,
    ) -> None:
        self._engine = create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 2},
        )
        self._make_job = make_job
        self._interval = interval
        self._stop = threading.Event()
        self.acknowledged: list[int] = []
        self.failures = 0
        self.unexpected: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="insert-stream", daemon=True)

    def start(self) -> InsertStream:
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                with Session(self._engine) as session, session.begin():
                    result = sa_river.insert(session, self._make_job(n))
                self.acknowledged.append(result.job.id)
                n += 1
                self._stop.wait(self._interval)
            except sqlalchemy.exc.DBAPIError:
                self.failures += 1
                self._stop.wait(0.2)
            except BaseException as exc:  # reported by stop()
                self.unexpected.append(exc)
                return

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._engine.dispose()
        assert not self._thread.is_alive(), "the insert stream did not stop"
        assert not self.unexpected, f"the insert stream failed: {self.unexpected[0]!r}"
