"""Heartbeat: records that this runner and its queues are alive (internal).

Every ``interval`` seconds the runner upserts its row in ``sa_river_client`` (sa_river's own
table: id, host, pid, queues, ``started_at``, ``heartbeat_at``) and touches
``river_queue.updated_at`` of its queues, as River's producers do, so River UI lists them and
the queue cleaner keeps them. A clean stop deletes the row, unless the runner leaves jobs
running behind it (:meth:`Heartbeat.keep_registration`).

What the rescuer reads here is the *incarnation*, not just the id. Ids are often fixed (a
systemd unit, a StatefulSet pod, ``--id``, a supervised child restarted as ``s-1`` again), so
a worker killed and started again under the same id must not vouch for the jobs of the process
that died. The first beat of every start *registers*: it stamps the row with this process and
a new ``started_at`` (database time). A running job whose attempt began before its runner's
``started_at`` belongs to a dead incarnation and is rescued at once; a job whose runner's
heartbeat went stale belongs to a dead runner and is rescued after the TTL.

The runner fetches nothing before it has registered (:attr:`Heartbeat.registered`): a job it
took before stamping its ``started_at`` would look like its predecessor's.

Ids must be unique among *live* runners. When a second live process starts with the id of a
first, the newest start owns the id: the older one's beats are refused from then on, it is told
through ``on_superseded`` (the worker stops fetching and stops), and the jobs it started before
the newer one registered are rescued. Why: ``docs/design.md``, "Fencing by attempt".
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sa_river.errors import one_line
from sa_river.queries.client import (
    ClientRegistration,
    client_delete,
    client_heartbeat,
    client_register,
)
from sa_river.queries.queue import queue_create_or_set_updated_at
from sa_river.service import Service

__all__ = ["Heartbeat"]

logger = logging.getLogger("sa_river.heartbeat")


class Heartbeat(Service):
    def __init__(
        self,
        engine: Engine,
        *,
        client_id: str,
        queues: list[str],
        interval: float,
        on_registered: Callable[[], None] | None = None,
        on_superseded: Callable[[], None] | None = None,
    ):
        super().__init__("heartbeat")
        self._engine = engine
        self._client_id = client_id
        self._queues = queues
        self._interval = interval
        self._hostname = socket.gethostname()
        self._pid = os.getpid()
        self._on_registered = on_registered
        self._on_superseded = on_superseded
        self.started_at: datetime | None = None
        """This incarnation's start, database time; ``None`` until the first beat succeeds."""
        self.registered = threading.Event()
        self.superseded = threading.Event()
        self.last_failure: float | None = None
        """When a beat last failed (``time.monotonic()``): this process lost the database."""
        self._keep_row = False

    def keep_registration(self) -> None:
        """Leave this runner's row in place at stop, to go stale, instead of deleting it.

        For a runner that stops with jobs still ``running`` in its name (their outcomes or
        their release could not be written): with its row gone, the rescuer would take them
        for a runner it never knew and wait ``rescue_stuck_after`` (an hour by default); with
        a stale row it rescues them once the heartbeat TTL has passed.
        """
        self._keep_row = True

    def beat(self) -> None:
        """Register (first success) or refresh this runner's row, in one transaction."""
        if self.superseded.is_set():
            return
        registration: ClientRegistration | None = None
        with self._engine.begin() as conn:
            if self.started_at is None:
                registration = client_register(
                    conn,
                    client_id=self._client_id,
                    hostname=self._hostname,
                    pid=self._pid,
                    queues=self._queues,
                )
                owned = True
            else:
                owned = client_heartbeat(
                    conn,
                    client_id=self._client_id,
                    started_at=self.started_at,
                    hostname=self._hostname,
                    pid=self._pid,
                    queues=self._queues,
                )
            if owned:
                queue_create_or_set_updated_at(conn, self._queues)
        if not owned:
            self._supersede()
        elif registration is not None:
            self.started_at = registration.started_at
            self._log_registration(registration)
            self.registered.set()
            if self._on_registered is not None:
                self._on_registered()

    def _log_registration(self, registration: ClientRegistration) -> None:
        if registration.previous_pid is None:
            return
        # A clean stop deletes the row: one left behind means the last process of this id
        # died (or is still alive). Its running jobs are rescued at the leader's next round
        # instead of waiting for its heartbeat to go stale.
        logger.warning(
            "worker id %s was last used by pid %s on %s (last heartbeat %.0f s ago); this start "
            "replaces it and the jobs that process left running will be rescued (if it is "
            "still alive, give each runner its own id)",
            self._client_id,
            registration.previous_pid,
            registration.previous_hostname,
            registration.previous_heartbeat_age or 0.0,
            extra={"event": "client_id_reused"},
        )

    def _supersede(self) -> None:
        self.superseded.set()
        logger.error(
            "worker id %s was registered by a newer process: this runner no longer owns it and "
            "stops; give each live runner its own id",
            self._client_id,
            extra={"event": "client_id_superseded"},
        )
        if self._on_superseded is not None:
            self._on_superseded()

    def run(self) -> None:
        failing = False
        while not self.superseded.is_set():
            try:
                self.beat()
                failing = False
            except SQLAlchemyError as exc:
                self.last_failure = time.monotonic()
                if not failing:
                    logger.warning(
                        "heartbeat failed (%s); retrying",
                        one_line(exc),
                        extra={"event": "heartbeat_error"},
                    )
                failing = True
            if self.sleep(self._interval):
                break
        if self.superseded.is_set() or self.started_at is None:
            return  # the row is not ours to delete
        if self._keep_row:
            logger.warning(
                "keeping this runner's heartbeat row: it stops with jobs still running, which "
                "the rescuer takes back once the row is stale",
                extra={"event": "heartbeat_kept"},
            )
            return
        try:
            with self._engine.begin() as conn:
                client_delete(conn, self._client_id, started_at=self.started_at)
        except SQLAlchemyError as exc:
            logger.warning(
                "could not remove heartbeat row (%s)",
                one_line(exc),
                extra={"event": "heartbeat_error"},
            )
