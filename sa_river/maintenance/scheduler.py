"""The scheduler: makes due ``scheduled`` and ``retryable`` jobs ``available`` (leader only).

Workers fetch only ``available`` jobs, so a job inserted for later, snoozed, or waiting out a
retry backoff runs only once the scheduler moves it. Running it on the leader alone keeps one
actor in charge of the promotion, and of its unique-key decisions: a promoted unique job whose
key another live job holds is discarded as a duplicate, and the check never matches a job
against itself (River 0.12.0 discarded every new unique job that way; ``docs/design.md``,
"The scheduler").
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine

from sa_river.maintenance import MaintenanceService
from sa_river.queries.maintenance import job_schedule

__all__ = ["JobScheduler"]

logger = logging.getLogger("sa_river.maintenance.scheduler")


class JobScheduler(MaintenanceService):
    """Every ``interval`` seconds, promote jobs due within ``lookahead`` seconds.

    Works in batches of ``batch_size`` (one transaction and one statement each) until a batch
    comes back short, checking leadership before every batch.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float,
        is_leader: Callable[[], bool],
        lookahead: float,
        batch_size: int = 10_000,
    ) -> None:
        super().__init__("scheduler", engine, interval=interval, is_leader=is_leader)
        if lookahead < 0:
            raise ValueError(f"lookahead must not be negative, got {lookahead!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.lookahead = lookahead
        self.batch_size = batch_size

    def run_once(self) -> int:
        changed = 0
        while self.is_leader():
            with self.engine.begin() as conn:
                result = job_schedule(conn, lookahead_seconds=self.lookahead, limit=self.batch_size)
            changed += result.changed
            if result.discarded_ids:
                logger.warning(
                    "scheduler: discarded %d unique duplicates: %s",
                    len(result.discarded_ids),
                    result.discarded_ids,
                    extra={"event": "scheduler_discarded_duplicates"},
                )
            if result.changed < self.batch_size:
                break
        return changed
