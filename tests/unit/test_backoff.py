"""The one backoff of sa_river's own retry loops (fetcher, completer, LISTEN, supervisor)."""

from __future__ import annotations

import pytest

from sa_river.retry import Backoff


def test_doubles_from_start_up_to_the_cap_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(0.5, cap=30.0)
    assert [backoff.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    backoff.reset()
    assert [backoff.next() for _ in range(2)] == [0.5, 1.0]


@pytest.mark.parametrize(("start", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_rejects_a_start_that_is_not_positive_or_above_the_cap(start: float, cap: float) -> None:
    with pytest.raises(ValueError, match="start"):
        Backoff(start, cap=cap)
