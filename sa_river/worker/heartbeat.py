"""Heartbeat: records that this runner and its queues are alive (internal).

Every ``interval`` seconds the runner touches ``river_queue.updated_at`` of its queues (as
River's producers do, so River UI lists them and the queue cleaner keeps them).
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sa_river.queries.queue import queue_create_or_set_updated_at
from sa_river.service import Service

__all__ = ["Heartbeat"]

logger = logging.getLogger("sa_river.heartbeat")


class Heartbeat(Service):
    def __init__(self, engine: Engine, *, client_id: str, queues: list[str], interval: float):
        super().__init__("heartbeat")
        self._engine = engine
        self._client_id = client_id
        self._queues = queues
        self._interval = interval

    def beat(self) -> None:
        with self._engine.begin() as conn:
            queue_create_or_set_updated_at(conn, self._queues)

    def run(self) -> None:
        failing = False
        while True:
            try:
                self.beat()
                failing = False
            except SQLAlchemyError as exc:
                if not failing:
                    logger.warning("heartbeat failed (%s); retrying", exc)
                failing = True
            if self.sleep(self._interval):
                return
