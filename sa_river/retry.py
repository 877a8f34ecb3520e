"""Retry policy: when a failed job runs again; and :class:`Backoff`, how sa_river's own loops
wait between attempts to reach the database.

The default is River's: ``attempt ** 4`` seconds with ±10% jitter (1 s, 16 s, 81 s, 256 s, ...;
with the default 25 attempts, the last one runs about three weeks after the first). A policy is
any callable taking the failed attempt number and returning the delay; set one per kind with
``@workers.handler(..., retry=...)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

__all__ = [
    "FALLBACK_RETRY_SECONDS",
    "Backoff",
    "RetryPolicy",
    "default_retry_policy",
    "fallback_retry_policy",
]

RetryPolicy = Callable[[int], timedelta]
"""Maps the attempt that just failed (1 for the first) to the delay before the next one."""

_JITTER = 0.10
# Past this many attempts the polynomial outgrows a sensible delay; River caps it too.
_MAX_ATTEMPT_FOR_BACKOFF = 100


def default_retry_policy(attempt: int) -> timedelta:
    """``attempt ** 4`` seconds, ±10% jitter."""
    base = float(min(max(attempt, 1), _MAX_ATTEMPT_FOR_BACKOFF) ** 4)
    return timedelta(seconds=base * random.uniform(1 - _JITTER, 1 + _JITTER))


FALLBACK_RETRY_SECONDS = 60.0
"""When sa_river itself cannot record an attempt's outcome (a retry policy that raised, an
outcome the database refused, a row that could not be decoded), the attempt ends with an
error of sa_river's and its retry is due after this long."""


def fallback_retry_policy(attempt: int) -> timedelta:
    """The policy behind :data:`FALLBACK_RETRY_SECONDS`."""
    return timedelta(seconds=FALLBACK_RETRY_SECONDS)


class Backoff:
    """Delays that double from ``start`` up to ``cap``, for a loop retrying the database (the
    fetcher, the completer, the LISTEN connection, a supervisor restarting a child); back to
    ``start`` after :meth:`reset`.

    >>> backoff = Backoff(0.1, cap=0.5)
    >>> [backoff.next() for _ in range(5)]
    [0.1, 0.2, 0.4, 0.5, 0.5]
    """

    def __init__(self, start: float, *, cap: float) -> None:
        if not 0 < start <= cap:
            raise ValueError(f"need 0 < start <= cap, got start={start!r} cap={cap!r}")
        self.start = start
        self.cap = cap
        self._next = start

    def next(self) -> float:
        """The delay to wait now; the following one doubles (up to the cap)."""
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.start
