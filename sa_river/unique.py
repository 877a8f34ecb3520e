"""Unique keys and state bitmasks, byte-compatible with River's Go client.

A unique key is the sha256 of a pre-hash string built from the parts the options turn on, in
this order: ``&kind=<kind>`` (unless ``exclude_kind``), ``&args=<object>``, ``&period=<time>``,
``&queue=<queue>``. For ``args`` the top-level keys are sorted and each value keeps its encoded
text exactly; ``by_args=[names]`` keeps only those keys (missing ones are left out). The period
is ``scheduled_at`` (or now) truncated to a multiple of the period counted from
0001-01-01T00:00:00Z, as Go's ``time.Truncate`` does, formatted ``YYYY-MM-DDTHH:MM:SSZ``.

States are not part of the key: they go into ``unique_states``, a ``bit(8)`` in which the
database function ``river_job_state_in_bitmask`` reads ``get_bit(i)`` with i = 7 available,
6 cancelled, 5 completed, 4 discarded, 3 pending, 2 retryable, 1 running, 0 scheduled. The
partial unique index ``river_job_unique_idx`` then allows one live row per key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sa_river.args import encode_json
from sa_river.errors import InvalidJobError
from sa_river.options import UniqueOpts
from sa_river.types import JobState

__all__ = [
    "bitmask_states",
    "states_bitmask",
    "truncate_to_period",
    "unique_key",
    "unique_key_prehash",
]

# get_bit() index of each state in unique_states (bit 0 is the leftmost character).
_STATE_BIT: dict[JobState, int] = {
    JobState.AVAILABLE: 7,
    JobState.CANCELLED: 6,
    JobState.COMPLETED: 5,
    JobState.DISCARDED: 4,
    JobState.PENDING: 3,
    JobState.RETRYABLE: 2,
    JobState.RUNNING: 1,
    JobState.SCHEDULED: 0,
}

_YEAR_ONE = datetime(1, 1, 1, tzinfo=timezone.utc)


def states_bitmask(states: Iterable[JobState]) -> str:
    """The ``bit(8)`` text for ``states``, e.g. ``'11110101'`` for the default unique states."""
    if isinstance(states, frozenset):
        return _frozen_states_bitmask(states)
    return _bitmask(states)


@functools.lru_cache(maxsize=64)
def _frozen_states_bitmask(states: frozenset[JobState]) -> str:
    # A unique job's states are one of a few sets, asked for on every insert.
    return _bitmask(states)


def _bitmask(states: Iterable[JobState]) -> str:
    bits = ["0"] * 8
    for state in states:
        bits[_STATE_BIT[JobState(state)]] = "1"
    return "".join(bits)


def bitmask_states(bitmask: str) -> frozenset[JobState]:
    """The states set in a ``bit(8)`` text (the inverse of :func:`states_bitmask`)."""
    if len(bitmask) != 8 or set(bitmask) - {"0", "1"}:
        raise ValueError(f"not a bit(8) string: {bitmask!r}")
    return frozenset(state for state, bit in _STATE_BIT.items() if bitmask[bit] == "1")


def truncate_to_period(moment: datetime, period: timedelta) -> datetime:
    """``moment`` rounded down to a multiple of ``period`` counted from year one (Go's rule)."""
    since_year_one = moment.astimezone(timezone.utc) - _YEAR_ONE
    period_us = period // timedelta(microseconds=1)
    elapsed_us = since_year_one // timedelta(microseconds=1)
    return _YEAR_ONE + timedelta(microseconds=elapsed_us - elapsed_us % period_us)


def _sorted_args(encoded_args: str, only: list[str] | None) -> str:
    """Top-level keys sorted, each value's encoded text kept byte for byte."""
    decoder = json.JSONDecoder()
    text = encoded_args.strip()
    if not text.startswith("{"):
        raise InvalidJobError("unique.by_args", "args must be a JSON object")
    raw: dict[str, str] = {}
    pos = 1
    while True:
        pos = _skip_ws(text, pos)
        if text[pos] == "}":
            break
        key, pos = decoder.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        if text[pos] != ":":
            raise InvalidJobError("unique.by_args", "args are not a valid JSON object")
        start = _skip_ws(text, pos + 1)
        _, end = decoder.raw_decode(text, start)
        raw[key] = text[start:end]
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos += 1
    keys = sorted(raw) if only is None else sorted(k for k in set(only) if k in raw)
    # Keys are re-encoded the way Go does, so a key that needs escaping stays byte-compatible.
    return "{" + ",".join(f"{encode_json(k)}:{raw[k]}" for k in keys) + "}"


def _skip_ws(text: str, pos: int) -> int:
    while text[pos] in " \t\n\r":
        pos += 1
    return pos


def unique_key_prehash(
    opts: UniqueOpts,
    *,
    kind: str,
    encoded_args: str,
    queue: str,
    scheduled_at: datetime | None,
    now: datetime | None = None,
) -> str:
    """The string whose sha256 is the unique key (exposed for River compatibility tests)."""
    parts: list[str] = []
    if not opts.exclude_kind:
        parts.append(f"&kind={kind}")
    if opts.by_args:
        only = None if opts.by_args is True else list(opts.by_args)
        parts.append(f"&args={_sorted_args(encoded_args, only)}")
    if opts.by_period is not None:
        moment = scheduled_at or now or datetime.now(timezone.utc)
        period = truncate_to_period(moment, opts.by_period)
        parts.append(f"&period={period.strftime('%Y-%m-%dT%H:%M:%SZ')}")
    if opts.by_queue:
        parts.append(f"&queue={queue}")
    return "".join(parts)


def unique_key(
    opts: UniqueOpts,
    *,
    kind: str,
    encoded_args: str,
    queue: str,
    scheduled_at: datetime | None,
    now: datetime | None = None,
) -> bytes:
    """The 32-byte sha256 unique key River stores in ``river_job.unique_key``."""
    prehash = unique_key_prehash(
        opts,
        kind=kind,
        encoded_args=encoded_args,
        queue=queue,
        scheduled_at=scheduled_at,
        now=now,
    )
    return hashlib.sha256(prehash.encode("utf-8")).digest()
