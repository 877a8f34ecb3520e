"""Leader-only maintenance: services that only the elected leader runs.

:class:`QueueMaintainer` listens to the elector. On every gain of leadership it builds fresh
service instances and starts them in order; on every loss it stops them in reverse order, as
many times as leadership moves back and forth. Every service also re-checks
``is_leader()`` right before each action, so a leader that lost its term between two checks
does nothing.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sa_river.errors import one_line
from sa_river.service import Service

__all__ = ["MaintenanceService", "QueueMaintainer"]

logger = logging.getLogger("sa_river.maintenance")


class MaintenanceService(Service):
    """A leader-only service that runs :meth:`run_once` every ``interval`` seconds.

    The first run happens after a short random delay (so a new leader's services don't all
    hit the database at once); each run is skipped when ``is_leader()`` is false.
    """

    def __init__(
        self,
        name: str,
        engine: Engine,
        *,
        interval: float,
        is_leader: Callable[[], bool],
    ) -> None:
        super().__init__(name)
        self.engine = engine
        self.interval = interval
        self.is_leader = is_leader
        self.runs = 0
        self.ran = threading.Event()

    def run_once(self) -> int:
        """Do one round of work; return how many rows it changed."""
        raise NotImplementedError

    def run(self) -> None:
        if self.sleep(random.uniform(0, min(0.1, self.interval))):
            return
        failing = False
        while True:
            if self.is_leader():
                try:
                    changed = self.run_once()
                    if changed:
                        logger.info(
                            "%s: %d jobs", self.name, changed, extra={"event": f"{self.name}_ran"}
                        )
                    failing = False
                except SQLAlchemyError as exc:
                    if not failing:
                        logger.warning(
                            "%s failed (%s); retrying next interval",
                            self.name,
                            one_line(exc),
                            extra={"event": f"{self.name}_error"},
                        )
                    failing = True
                self.runs += 1
                self.ran.set()
            if self.sleep(self.interval):
                return


ServiceFactory = Callable[[], Sequence[Service]]


class QueueMaintainer:
    """Starts the leader-only services when elected and stops them when not."""

    def __init__(self, factory: ServiceFactory, *, stop_timeout: float = 10.0) -> None:
        self._factory = factory
        self._stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self.services: list[Service] = []
        self.transitions: list[bool] = []

    def on_leadership(self, leading: bool) -> None:
        """The elector's subscriber: called in order on every transition."""
        with self._lock:
            self.transitions.append(leading)
            if leading and not self.services:
                self.services = list(self._factory())
                for service in self.services:
                    service.start()
                logger.info(
                    "leader: started %s",
                    ", ".join(s.name for s in self.services),
                    extra={"event": "maintenance_started"},
                )
            elif not leading and self.services:
                self._stop_all()

    def stop(self) -> None:
        with self._lock:
            self._stop_all()

    def _stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop(0)
        for service in reversed(self.services):
            service.stop(self._stop_timeout)
        if self.services:
            logger.info("maintenance services stopped", extra={"event": "maintenance_stopped"})
        self.services = []

    @property
    def running(self) -> bool:
        return bool(self.services)
