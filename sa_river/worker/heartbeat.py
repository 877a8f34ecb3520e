"""Heartbeat: records that this runner and its queues are alive (internal).

Every ``interval`` seconds the runner upserts its row in ``sa_river_client`` (sa_river's own
table: id, host, pid, queues, ``heartbeat_at``) and touches ``river_queue.updated_at`` of its
queues, as River's producers do, so River UI lists them and the queue cleaner keeps them. A
running job whose ``attempted_by`` runner has no recent heartbeat belongs to a dead worker:
that is what the rescuer looks for. A clean stop deletes the row.
"""

from __future__ import annotations

import logging
import os
import socket

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sa_river.queries.client import client_delete, client_heartbeat
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
        self._hostname = socket.gethostname()
        self._pid = os.getpid()

    def beat(self) -> None:
        with self._engine.begin() as conn:
            client_heartbeat(
                conn,
                client_id=self._client_id,
                hostname=self._hostname,
                pid=self._pid,
                queues=self._queues,
            )
            queue_create_or_set_updated_at(conn, self._queues)

    def run(self) -> None:
        failing = False
        while True:
            try:
                self.beat()
                failing = False
            except SQLAlchemyError as exc:
                if not failing:
                    logger.warning(
                        "heartbeat failed (%s); retrying", exc, extra={"event": "heartbeat_error"}
                    )
                failing = True
            if self.sleep(self._interval):
                break
        try:
            with self._engine.begin() as conn:
                client_delete(conn, self._client_id)
        except SQLAlchemyError as exc:
            logger.warning("could not remove heartbeat row (%s)", exc)
