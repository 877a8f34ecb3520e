"""Supervisor: ``python -m sa_river worker --processes N`` runs N worker processes.

Python runs one thread at a time per process, so a busy worker uses about one core; on a
machine with several, more processes work more jobs. The supervisor starts ``N`` children,
each ``python -m sa_river worker ...`` with the same options but no ``--processes``: each is an
ordinary runner with its own connection pool, its own client id, its own heartbeat, and takes
part in leader election like any other runner (so at most one of them, or of any runner on the
same database, leads).

- A child that dies is started again after a backoff (0.5 s doubling to 30 s; reset once a
  child has run for a minute). If one exits with an error within its first seconds before any
  child ever ran that long, the configuration is wrong (unknown ``--app``, bad URL): the
  supervisor stops the others and exits with that child's code instead of retrying forever
  (a child killed by a signal is always restarted).
- The first SIGTERM or SIGINT is forwarded to every child as SIGTERM (each stops gracefully:
  running jobs get the shutdown timeout) and the supervisor waits for them; a second one is
  forwarded too (each child then stops hard). Children still alive ``stop_timeout`` seconds
  after the first signal are killed. The supervisor then exits 0.
- The database URL reaches the children in their environment (``SA_RIVER_DATABASE_URL``),
  never in their argv, where ``ps`` would show its password to every user of the machine.
- Children run in their own process group, so a Ctrl-C in a terminal reaches them only through
  the supervisor, once; and each checks that its supervisor is alive, stopping gracefully if it
  was killed (environment variable :data:`SUPERVISOR_PID_ENV`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from sa_river.retry import Backoff

__all__ = ["SUPERVISOR_PID_ENV", "Supervisor", "watch_supervisor"]

logger = logging.getLogger("sa_river.supervisor")

SUPERVISOR_PID_ENV = "SA_RIVER_SUPERVISOR_PID"
"""Set in each child's environment to the supervisor's pid."""

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0
"""A child that ran this long resets its slot's backoff."""
STARTUP_WINDOW = 5.0
"""An error exit this soon after start, before any child was ever healthy, ends the supervisor."""
_TICK = 0.1


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(BACKOFF_START, cap=BACKOFF_MAX))
    restarts: int = 0


class Supervisor:
    """Runs ``processes`` copies of ``child_argv`` (argv of one child, after the interpreter).

    ``env`` is added to each child's environment (this process's own): the place for a
    secret such as a database URL, which in argv any user on the machine could read with
    ``ps`` (a process's environment is readable by its own user only).
    """

    def __init__(
        self,
        child_argv: Callable[[int], Sequence[str]],
        processes: int,
        *,
        stop_timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._child_argv = child_argv
        self._env = dict(env or {})
        self._slots = [_Slot(i) for i in range(processes)]
        self._stop_timeout = stop_timeout
        self._signals: list[int] = []
        self._wake = threading.Event()
        self._ever_healthy = False

    @property
    def pids(self) -> list[int]:
        """Pids of the children alive now."""
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.poll() is None]

    def _start(self, slot: _Slot) -> None:
        env = dict(os.environ, **self._env)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        argv = [sys.executable, "-m", "sa_river", *self._child_argv(slot.index)]
        slot.proc = subprocess.Popen(argv, env=env, start_new_session=True)
        slot.started_at = time.monotonic()
        slot.restart_at = None
        logger.info(
            "supervisor: started worker process %d (pid %d)",
            slot.index,
            slot.proc.pid,
            extra={"event": "child_started"},
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)
        self._wake.set()

    def run(self) -> int:
        """Start the children and supervise them until a signal; the exit code."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {
                sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
            }
        try:
            for slot in self._slots:
                self._start(slot)
            code = self._supervise()
            if code is None:
                self._shutdown()
                return 0
            self._forward(signal.SIGTERM)
            self._wait_all(self._stop_timeout)
            return code
        finally:
            self._kill_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self) -> int | None:
        """Until the first signal (``None``), or a startup failure (its exit code)."""
        while not self._signals:
            now = time.monotonic()
            for slot in self._slots:
                proc = slot.proc
                if proc is not None:
                    code = proc.poll()
                    if code is None:
                        if not self._ever_healthy and now - slot.started_at >= STARTUP_WINDOW:
                            self._ever_healthy = True
                        if now - slot.started_at >= HEALTHY_AFTER:
                            slot.backoff.reset()
                        continue
                    ran = now - slot.started_at
                    if code > 0 and ran < STARTUP_WINDOW and not self._ever_healthy:
                        logger.error(
                            "supervisor: worker process %d exited with %d at start-up; stopping",
                            slot.index,
                            code,
                            extra={"event": "child_failed_at_start"},
                        )
                        return code
                    slot.proc = None
                    delay = slot.backoff.next()
                    slot.restart_at = now + delay
                    logger.warning(
                        "supervisor: worker process %d (pid %d) exited with %s after %.1fs; "
                        "restarting in %.1fs",
                        slot.index,
                        proc.pid,
                        code,
                        ran,
                        delay,
                        extra={"event": "child_died"},
                    )
                elif slot.restart_at is not None and now >= slot.restart_at:
                    slot.restarts += 1
                    self._start(slot)
            self._wake.wait(_TICK)
            self._wake.clear()
        return None

    def _forward(self, signum: int) -> None:
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is None:
                with _suppress_lookup():
                    slot.proc.send_signal(signum)

    def _shutdown(self) -> None:
        first = self._signals[0]
        logger.info(
            "supervisor: %s: stopping %d worker processes gracefully (again to stop hard)",
            signal.Signals(first).name,
            len(self.pids),
            extra={"event": "supervisor_stopping"},
        )
        forwarded = 1
        self._forward(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        while self.pids and time.monotonic() < deadline:
            if len(self._signals) > forwarded:
                forwarded = len(self._signals)
                logger.warning(
                    "supervisor: second signal: stopping worker processes hard",
                    extra={"event": "supervisor_hard_stop"},
                )
                self._forward(signal.SIGTERM)
            self._wake.wait(_TICK)
            self._wake.clear()
        if self.pids:
            logger.error(
                "supervisor: %d worker processes still running after %.0fs; killing them",
                len(self.pids),
                self._stop_timeout,
                extra={"event": "supervisor_kill"},
            )

    def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pids and time.monotonic() < deadline:
            time.sleep(_TICK)

    def _kill_all(self) -> None:
        for slot in self._slots:
            proc = slot.proc
            if proc is None:
                continue
            if proc.poll() is None:
                with _suppress_lookup():
                    proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores KILL
                logger.error(
                    "supervisor: pid %d did not exit", proc.pid, extra={"event": "supervisor_kill"}
                )


class _suppress_lookup:
    """Ignore a child that exited between the check and the signal."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ProcessLookupError)


def watch_supervisor(on_gone: Callable[[], None], interval: float = 1.0) -> threading.Thread | None:
    """In a supervised child: call ``on_gone`` once if the supervisor process disappears."""
    text = os.environ.get(SUPERVISOR_PID_ENV)
    if not text or not text.isdigit():
        return None
    supervisor_pid = int(text)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != supervisor_pid:
                logger.warning(
                    "supervisor (pid %d) is gone: stopping",
                    supervisor_pid,
                    extra={"event": "supervisor_gone"},
                )
                on_gone()
                return

    thread = threading.Thread(target=watch, name="sa_river.supervisor-watch", daemon=True)
    thread.start()
    return thread
