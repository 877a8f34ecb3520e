"""Retry policy: when a failed job runs again.

The default is River's: ``attempt ** 4`` seconds with ±10% jitter (1 s, 16 s, 81 s, 256 s, ...;
with the default 25 attempts, the last one runs about three weeks after the first). A policy is
any callable taking the failed attempt number and returning the delay; set one per kind with
``@workers.handler(..., retry=...)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

__all__ = ["FALLBACK_RETRY_SECONDS", "RetryPolicy", "default_retry_policy", "fallback_retry_policy"]

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
