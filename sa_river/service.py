"""One lifecycle for every background thread of sa_river (internal).

A :class:`Service` runs :meth:`Service.run` on a named daemon thread. ``start()`` returns at
once; ``stop()`` is idempotent and safe before ``start()``; ``stopping`` tells the loop to end;
``sleep()`` waits but wakes at once on stop.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["Service"]

logger = logging.getLogger("sa_river.service")


class Service:
    """Base class of the elector, notifier, producers, completer and maintenance services."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop_event = threading.Event()
        self.started = threading.Event()
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None
        # start() and stop() may race (a signal's stopper thread against a start in
        # progress): a thread is created and started as one step, as stop() sees it.
        self._lifecycle = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def start(self) -> None:
        with self._lifecycle:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._main, name=f"sa_river.{self.name}", daemon=True
            )
            self._thread.start()
        self.started.wait()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to end and wait up to ``timeout``; true when it has ended."""
        self._stop_event.set()
        self.wake()
        with self._lifecycle:
            thread = self._thread
        if thread is None:
            self.stopped.set()
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()

    def wake(self) -> None:
        """Interrupt a wait in :meth:`run` (subclasses with their own waits extend this)."""

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; true if the service is stopping."""
        return self._stop_event.wait(seconds)

    def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _main(self) -> None:
        self.started.set()
        try:
            self.run()
        except Exception:
            logger.exception(
                "%s: stopped by an unexpected error", self.name, extra={"event": "service_crashed"}
            )
        finally:
            self.stopped.set()
