"""Notifier: one LISTEN connection for a whole worker runner, fanned out to subscribers.

The connection is a plain psycopg connection of its own (never a pooled one: it is held for
the runner's lifetime). When it drops, the notifier reconnects with backoff and then wakes
every subscriber, because notifications sent while it was away are lost and a fetch is the
cheap way to catch up.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from sa_river.errors import one_line
from sa_river.queries.notify import CURRENT_SCHEMA_SQL, listen_statement
from sa_river.retry import Backoff
from sa_river.service import Service
from sa_river.urls import libpq_dsn

__all__ = ["Notifier"]

logger = logging.getLogger("sa_river.notifier")

Subscriber = Callable[[dict[str, Any] | None], None]
"""Called on the notifier thread with the decoded payload, or ``None`` after a reconnect."""

_WAIT_SLICE = 0.25
_BACKOFF_START = 0.1
_BACKOFF_MAX = 5.0


class Notifier(Service):
    """LISTENs on ``<schema>.<topic>`` for each subscribed topic.

    ``url`` is the runner's: the LISTEN connection goes where its Engine's connections go.
    """

    def __init__(self, url: URL, *, connect_timeout: float = 5.0) -> None:
        super().__init__("notifier")
        self._dsn = libpq_dsn(url)
        self._connect_timeout = connect_timeout
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()

    def subscribe(self, topic: str, callback: Subscriber) -> None:
        """Call ``callback`` for every notification on ``topic`` (subscribe before start)."""
        with self._lock:
            self._subscribers.setdefault(topic, []).append(callback)

    def _dispatch(self, topic: str, payload: dict[str, Any] | None) -> None:
        for callback in self._subscribers.get(topic, ()):
            try:
                callback(payload)
            except Exception:
                logger.exception(
                    "notifier: subscriber of %s failed", topic, extra={"event": "subscriber_failed"}
                )

    def run(self) -> None:
        backoff = Backoff(_BACKOFF_START, cap=_BACKOFF_MAX)
        failures = 0
        while not self.stopping:
            try:
                with psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
                ) as conn:
                    row = conn.execute(CURRENT_SCHEMA_SQL).fetchone()
                    schema = str(row[0]) if row else "public"
                    channels = {f"{schema}.{topic}": topic for topic in self._subscribers}
                    for channel in channels:
                        conn.execute(listen_statement(channel))
                    if failures:
                        logger.info(
                            "notifier: listening again after %d failed attempts",
                            failures,
                            extra={"event": "notifier_reconnected"},
                        )
                        for topic in self._subscribers:
                            self._dispatch(topic, None)
                    failures = 0
                    backoff.reset()
                    self.connected.set()
                    while not self.stopping:
                        for note in conn.notifies(timeout=_WAIT_SLICE):
                            heard = channels.get(note.channel)
                            if heard is not None:
                                self._dispatch(heard, _decode(note.payload))
            except psycopg.Error as exc:
                self.connected.clear()
                if failures == 0:
                    logger.warning(
                        "notifier: LISTEN connection failed (%s); retrying with backoff, workers "
                        "fall back to polling meanwhile",
                        one_line(exc),
                        extra={"event": "notifier_error"},
                    )
                failures += 1
                self.sleep(backoff.next())
        self.connected.clear()


def _decode(payload: str) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
