"""The rescuer: takes back running jobs whose worker is gone (leader only).

A worker killed mid-job (SIGKILL, OOM, lost host) leaves its jobs ``running`` for ever. Every
sa_river runner heartbeats in ``sa_river_client``; a running job becomes ``retryable`` (or
``discarded`` when out of attempts) with the error "rescued: worker lost" when its runner

- stopped heartbeating ``heartbeat_ttl`` seconds ago, or
- was started again under the same id after the job's attempt began: the new process
  registered a newer ``started_at`` and vouches only for its own jobs (see
  :mod:`sa_river.worker.heartbeat`).

A job whose runner is alive is never touched however long it runs: re-running a live job is
the bug that time-only rescuers ship. Only for jobs of runners that never heartbeat here
(River's Go workers) does elapsed time alone decide, after ``stuck_after``. The old worker
finishing late cannot overwrite the rescue: every outcome is fenced by state and attempt.

**Silence is only evidence when the runners could have spoken.** After a database outage
every heartbeat is older than the TTL, yet the workers are alive and still running their
jobs; rescuing them then would run those jobs twice at once. So the rescuer holds back for a
full ``heartbeat_ttl``

- after this leader's term began (its services are built anew on every election),
- after any of its own statements, or this process's heartbeat, failed (the database, or
  this leader's link to it, was down: so probably were the runners'), and
- after the database server itself started (checked in the statement).

Runners heartbeat every ``heartbeat_interval`` (at most a third of the TTL), so by then every
live one has been heard from again. The cost is that rescue waits up to one TTL longer after a
leader change or an outage. The whole failure model: ``docs/design.md``, "The failure model".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sa_river.maintenance import MaintenanceService
from sa_river.queries.maintenance import client_delete_stale, job_rescue

__all__ = ["STALE_CLIENT_FACTOR", "JobRescuer"]

logger = logging.getLogger("sa_river.maintenance.rescuer")

STALE_CLIENT_FACTOR = 10
"""Heartbeat rows silent for this many heartbeat TTLs (and naming no running job) are deleted."""


class JobRescuer(MaintenanceService):
    """Every ``interval`` seconds, rescue abandoned running jobs in batches of ``batch_size``.

    ``heartbeat_ttl``: seconds without a heartbeat after which a runner counts as gone;
    ``stuck_after``: seconds after which a running job of a runner with no heartbeat row at
    all counts as stuck; ``initial_hold_back``: seconds from construction (the term's start)
    before the first rescue, ``heartbeat_ttl`` unless given; ``last_database_trouble``: when
    (``time.monotonic()``) this process last failed to reach the database, e.g. its own
    heartbeat, which fails within a heartbeat interval of any outage long enough to make
    another runner's heartbeat look stale.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float,
        is_leader: Callable[[], bool],
        heartbeat_ttl: float,
        stuck_after: float,
        batch_size: int = 1000,
        initial_hold_back: float | None = None,
        last_database_trouble: Callable[[], float | None] = lambda: None,
    ) -> None:
        super().__init__("rescuer", engine, interval=interval, is_leader=is_leader)
        if heartbeat_ttl <= 0:
            raise ValueError(f"heartbeat_ttl must be positive, got {heartbeat_ttl!r}")
        if stuck_after <= 0:
            raise ValueError(f"stuck_after must be positive, got {stuck_after!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.heartbeat_ttl = heartbeat_ttl
        self.stuck_after = stuck_after
        self.batch_size = batch_size
        # Built anew for every term: the term's start opens the first hold-back.
        hold = heartbeat_ttl if initial_hold_back is None else initial_hold_back
        self._hold_until = time.monotonic() + hold
        self._last_database_trouble = last_database_trouble

    @property
    def holding_back(self) -> bool:
        """True while runners may not yet have had the time to heartbeat (see the module)."""
        now = time.monotonic()
        trouble = self._last_database_trouble()
        return now < self._hold_until or (
            trouble is not None and now < trouble + self.heartbeat_ttl
        )

    def run_once(self) -> int:
        if self.holding_back:
            return 0
        try:
            return self._rescue()
        except SQLAlchemyError:
            self._hold_until = time.monotonic() + self.heartbeat_ttl
            raise

    def _rescue(self) -> int:
        rescued = 0
        while self.is_leader():
            with self.engine.begin() as conn:
                batch = job_rescue(
                    conn,
                    heartbeat_ttl_seconds=self.heartbeat_ttl,
                    stuck_after_seconds=self.stuck_after,
                    limit=self.batch_size,
                )
            if batch:
                logger.warning(
                    "rescuer: took back %d running jobs of lost workers: %s",
                    len(batch),
                    ", ".join(f"{job_id}->{state.value}" for job_id, state in batch),
                    extra={"event": "rescuer_rescued"},
                )
            rescued += len(batch)
            if len(batch) < self.batch_size:
                break
        if self.is_leader():
            with self.engine.begin() as conn:
                gone = client_delete_stale(
                    conn, older_than_seconds=self.heartbeat_ttl * STALE_CLIENT_FACTOR
                )
            if gone:
                logger.info(
                    "rescuer: removed %d stale worker heartbeat rows",
                    gone,
                    extra={"event": "rescuer_clients_removed"},
                )
        return rescued
