"""The cleaner: deletes finalised jobs past their retention (leader only).

Completed, cancelled and discarded jobs are kept for a while for inspection (River UI, retries
by hand) and then deleted, so that ``river_job`` does not grow without bound and every other
query stays fast: bloat is a bug of its own. Deletes go in batches of at most
``batch_size`` rows, each its own short transaction found through the partial index
``river_job_state_and_finalized_at_index``; a retention of 0 keeps that state for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine

from sa_river.maintenance import MaintenanceService
from sa_river.queries.maintenance import job_delete_finalized
from sa_river.types import JobState

__all__ = ["JobCleaner"]

logger = logging.getLogger("sa_river.maintenance.cleaner")


class JobCleaner(MaintenanceService):
    """Every ``interval`` seconds, delete finalised jobs older than their state's retention."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float,
        is_leader: Callable[[], bool],
        completed_retention: float,
        cancelled_retention: float,
        discarded_retention: float,
        batch_size: int = 10_000,
    ) -> None:
        super().__init__("cleaner", engine, interval=interval, is_leader=is_leader)
        retentions = {
            JobState.COMPLETED: completed_retention,
            JobState.CANCELLED: cancelled_retention,
            JobState.DISCARDED: discarded_retention,
        }
        for state, seconds in retentions.items():
            if seconds < 0:
                raise ValueError(f"{state.value}_retention must not be negative, got {seconds!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.retentions = retentions
        self.batch_size = batch_size
        self.deleted: dict[JobState, int] = dict.fromkeys(retentions, 0)
        """Running totals per state, for tests and ``status``."""

    def run_once(self) -> int:
        total = 0
        for state, retention in self.retentions.items():
            if retention == 0:
                continue  # kept for ever
            while self.is_leader():
                with self.engine.begin() as conn:
                    deleted = job_delete_finalized(
                        conn, state=state, older_than_seconds=retention, limit=self.batch_size
                    )
                total += deleted
                self.deleted[state] += deleted
                if deleted < self.batch_size:
                    break
        return total
