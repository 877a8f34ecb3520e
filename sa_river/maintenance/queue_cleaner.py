"""The queue cleaner: removes ``river_queue`` rows no worker has touched lately (leader only).

Workers record their queues in ``river_queue`` (refreshing ``updated_at`` on every heartbeat)
so River UI and ``status`` can list them. A queue that nobody works any more would stay listed
for ever; after ``retention`` seconds of silence its row is deleted (a worker that comes back
creates it again).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from sa_river.maintenance import MaintenanceService
from sa_river.queries.maintenance import queue_delete_idle

__all__ = ["QueueCleaner"]


class QueueCleaner(MaintenanceService):
    """Every ``interval`` seconds, delete queues idle for ``retention`` seconds (0 keeps all)."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float,
        is_leader: Callable[[], bool],
        retention: float,
        batch_size: int = 1000,
    ) -> None:
        super().__init__("queue_cleaner", engine, interval=interval, is_leader=is_leader)
        if retention < 0:
            raise ValueError(f"retention must not be negative, got {retention!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.retention = retention
        self.batch_size = batch_size

    def run_once(self) -> int:
        if self.retention == 0:
            return 0
        total = 0
        while self.is_leader():
            with self.engine.begin() as conn:
                deleted = queue_delete_idle(
                    conn, older_than_seconds=self.retention, limit=self.batch_size
                )
            total += deleted
            if deleted < self.batch_size:
                break
        return total
