"""The rescuer: takes back running jobs whose worker is gone (leader only).

A worker killed mid-job (SIGKILL, OOM, lost host) leaves its jobs ``running`` for ever. Every
sa_river runner heartbeats in ``sa_river_client``; a running job whose runner's heartbeat went
stale becomes ``retryable`` (or ``discarded`` when out of attempts) with the error "rescued:
worker lost". A job whose runner is alive is never touched however long it runs: re-running a
live job is the bug that time-only rescuers ship (DESIGN lesson 6). Only for jobs of runners
that never heartbeat here (River's Go workers) does elapsed time alone decide, after
``stuck_after``. The old worker finishing late cannot overwrite the rescue: completion only
changes rows still ``running`` (lesson 5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine

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
    all counts as stuck.
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

    def run_once(self) -> int:
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
