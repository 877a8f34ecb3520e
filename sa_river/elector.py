"""Elector: one leader among every worker runner that shares the schema.

State diagram::

                 elect() won
      FOLLOWER ───────────────▶ LEADER ──┐ renew every interval
         ▲  ▲                     │  │   │ (guard: stored leader_id AND term)
         │  └── trust window ─────┘  │ ◀─┘
         │      ran out / renew      │
         │      found no row         │ stop(): resign (DELETE this term
         └───────────────────────────┘         + NOTIFY followers)

A **follower** tries to elect itself every ``interval`` seconds plus 0 to 1 s of jitter, and at
once when a leader announces it resigned (NOTIFY ``<schema>.river_leadership``). Electing is
one transaction on ``river_leader``: delete a term whose ``expires_at`` has passed, then
``INSERT ... ON CONFLICT DO NOTHING RETURNING``. A returned row means this runner won a new
term, identified by its ``elected_at``.

A **leader** renews every ``interval``: an UPDATE guarded by the row *stored* in the table
(``leader_id`` = mine and ``elected_at`` = my term, not expired). No row back means the term
is gone: the leader steps down without resigning (there is nothing of its own to delete).

**Trust window.** A leader believes it leads until ``attempt_start + ttl - 1 s`` on the
monotonic clock, where ``attempt_start`` is taken *before* the statement that set
``expires_at = now() + ttl`` was sent. The database's ``now()`` at that statement is no earlier
than ``attempt_start``, so the leader stops believing at least a second before its term can
expire in the database, and before any follower can delete it: at most one runner believes it
leads at any instant, even when renewals fail (database down, pool exhausted).

**Failures.** Each attempt runs on a connection from the runner's own pool (never the
application's, which a busy application can exhaust) with a bounded pool wait and
``statement_timeout``. Errors are logged once per streak with the pool's state and never crash
the runner; the leader keeps its trust window and steps down when it runs out.

**Subscribers** are called on the elector thread, in order, with every transition (``True``
on gaining, ``False`` on losing), as often as leadership moves.

The reasons behind these rules: ``docs/design.md``, "Leadership".
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sa_river.errors import one_line
from sa_river.queries.leader import (
    LeaderTerm,
    leader_attempt_elect,
    leader_attempt_reelect,
    leader_resign,
    set_local_statement_timeout,
)
from sa_river.service import Service

__all__ = ["Elector"]

logger = logging.getLogger("sa_river.elector")

TRUST_MARGIN = 1.0
"""Seconds a leader stops trusting itself before its term could expire in the database."""


class Elector(Service):
    """Runs the election loop for one runner (``leader_id``) on ``engine``."""

    def __init__(
        self,
        engine: Engine,
        *,
        leader_id: str,
        interval: float = 5.0,
        ttl: float = 15.0,
        attempt_timeout: float = 5.0,
        follower_jitter: float = 1.0,
    ) -> None:
        super().__init__("elector")
        self._engine = engine
        self.leader_id = leader_id
        self.interval = interval
        self.ttl = ttl
        self.attempt_timeout = attempt_timeout
        self.follower_jitter = follower_jitter
        self._term: LeaderTerm | None = None
        self._trusted_until = 0.0
        self._announced = False  # subscribers were told of the current term
        self._subscribers: list[Callable[[bool], None]] = []
        self._wake = threading.Event()
        self._failures = 0

    # -- public ---------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(leading)`` on every transition (subscribe before ``start``)."""
        self._subscribers.append(callback)

    def is_leader(self) -> bool:
        """True while this runner holds a term and is inside its trust window."""
        return self._term is not None and time.monotonic() < self._trusted_until

    @property
    def term(self) -> LeaderTerm | None:
        return self._term

    def on_leadership_notification(self, payload: dict[str, object] | None) -> None:
        """Notifier subscriber: a leader resigned (or we reconnected): try at once."""
        if payload is None or payload.get("action") == "resigned":
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- loop -----------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stopping:
            if self._term is None:
                self._attempt_elect()
                delay = self.interval + random.uniform(0, self.follower_jitter)
            else:
                self._attempt_reelect()
                delay = self.interval
            if self._term is not None:
                # Wake in time to step down if renewals keep failing.
                delay = min(delay, max(0.0, self._trusted_until - time.monotonic()))
            self._wake.wait(delay)
            self._wake.clear()
            if self.stopping:
                break  # a term still held is resigned below, not stepped down from
            if self._term is not None and not self.is_leader():
                self._step_down("trust window ran out")
        self._resign()

    def _attempt_elect(self) -> None:
        started = time.monotonic()
        try:
            with self._engine.begin() as conn:
                set_local_statement_timeout(conn, self.attempt_timeout)
                term = leader_attempt_elect(conn, leader_id=self.leader_id, ttl=self.ttl)
        except SQLAlchemyError as exc:
            self._failed("elect", exc)
            return
        self._succeeded()
        if term is None:
            return
        self._term = term
        if self.stopping:
            # Won while being stopped: keep the term only for run() to resign it at once, or
            # the seat stays taken by nobody until the term expires (a whole TTL of no leader).
            return
        self._trusted_until = started + self.ttl - TRUST_MARGIN
        self._announced = True
        logger.info(
            "elector %s: gained leadership (term %s)",
            self.leader_id,
            term.elected_at.isoformat(),
            extra={"event": "leader_elected", "client_id": self.leader_id},
        )
        self._publish(True)

    def _attempt_reelect(self) -> None:
        term = self._term
        assert term is not None
        started = time.monotonic()
        try:
            with self._engine.begin() as conn:
                set_local_statement_timeout(conn, self.attempt_timeout)
                renewed = leader_attempt_reelect(
                    conn, leader_id=self.leader_id, term=term.elected_at, ttl=self.ttl
                )
        except SQLAlchemyError as exc:
            self._failed("renew", exc)
            return
        self._succeeded()
        if renewed is None:
            self._step_down("term lost")
            return
        self._term = renewed
        self._trusted_until = started + self.ttl - TRUST_MARGIN

    def _step_down(self, why: str) -> None:
        if self._term is None:
            return
        self._term = None
        self._trusted_until = 0.0
        self._announced = False
        logger.warning(
            "elector %s: lost leadership (%s)",
            self.leader_id,
            why,
            extra={"event": "leader_lost", "client_id": self.leader_id},
        )
        self._publish(False)

    def _resign(self) -> None:
        term = self._term
        if term is None:
            return
        self._term = None
        self._trusted_until = 0.0
        if self._announced:
            self._announced = False
            self._publish(False)
        try:
            with self._engine.begin() as conn:
                set_local_statement_timeout(conn, self.attempt_timeout)
                leader_resign(conn, leader_id=self.leader_id, term=term.elected_at)
            logger.info(
                "elector %s: resigned",
                self.leader_id,
                extra={"event": "leader_resigned", "client_id": self.leader_id},
            )
        except SQLAlchemyError as exc:
            logger.warning(
                "elector %s: could not resign (%s); the term expires on its own",
                self.leader_id,
                one_line(exc),
                extra={"event": "elector_error", "client_id": self.leader_id},
            )

    def _publish(self, leading: bool) -> None:
        for callback in self._subscribers:
            try:
                callback(leading)
            except Exception:
                logger.exception(
                    "elector: leadership subscriber failed", extra={"event": "subscriber_failed"}
                )

    def _failed(self, what: str, exc: SQLAlchemyError) -> None:
        self._failures += 1
        if self._failures == 1:
            pool = self._engine.pool
            logger.warning(
                "elector %s: %s attempt failed (%s); the runner's own pool: %s. Retrying every "
                "%.0fs; a leader keeps its trust window meanwhile",
                self.leader_id,
                what,
                one_line(exc),
                pool.status(),
                self.interval,
                extra={"event": "elector_error", "client_id": self.leader_id},
            )

    def _succeeded(self) -> None:
        if self._failures:
            logger.info(
                "elector %s: database reachable again after %d failed attempts",
                self.leader_id,
                self._failures,
                extra={"event": "elector_recovered", "client_id": self.leader_id},
            )
            self._failures = 0
