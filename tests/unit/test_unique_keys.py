"""Unique keys and state bitmasks, checked against River's shared test vectors."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sa_river import InvalidJobError, JobArgs, JobState, UniqueOpts
from sa_river.options import DEFAULT_UNIQUE_STATES, REQUIRED_UNIQUE_STATES
from sa_river.unique import (
    bitmask_states,
    states_bitmask,
    truncate_to_period,
    unique_key,
    unique_key_prehash,
)

# Test vectors of River's Go client (pre-hash strings, their sha256, state bitmasks), kept in
# the repository so the suite runs on a clone with nothing beside it.
VECTORS_PATH = Path(__file__).parents[1] / "data" / "unique_keys.json"


def _load_vectors() -> dict[str, Any]:
    # Fail loudly (a collection error), never skip: these vectors are the River contract.
    if not VECTORS_PATH.is_file():
        raise FileNotFoundError(
            f"unique key vectors not found at {VECTORS_PATH}: tests/data is part of the repository"
        )
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return data


VECTORS = _load_vectors()
KEY_VECTORS: list[dict[str, Any]] = VECTORS["unique_keys"]
BITMASK_VECTORS: list[dict[str, Any]] = VECTORS["unique_states_bitmasks"]
UTC = timezone.utc


def _unique_opts(spec: dict[str, Any]) -> UniqueOpts:
    known = {"by_args", "by_period_seconds", "by_queue", "by_state", "exclude_kind"}
    unknown = set(spec) - known
    assert not unknown, f"vector uses options this test does not understand: {unknown}"
    period = spec.get("by_period_seconds")
    return UniqueOpts(
        by_args=spec.get("by_args", False),
        by_period=None if period is None else timedelta(seconds=period),
        by_queue=spec.get("by_queue", False),
        by_state=spec.get("by_state"),
        exclude_kind=spec.get("exclude_kind", False),
    )


def _scheduled_at(vector: dict[str, Any]) -> datetime | None:
    raw = vector.get("scheduled_at")
    return None if raw is None else datetime.fromisoformat(raw.replace("Z", "+00:00"))


def _key_inputs(vector: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": vector["kind"],
        "encoded_args": vector["encoded_args"],
        "queue": vector["queue"],
        "scheduled_at": _scheduled_at(vector),
    }


def test_vectors_file_is_not_empty() -> None:
    assert len(KEY_VECTORS) >= 10
    assert len(BITMASK_VECTORS) >= 3
    assert len({v["name"] for v in KEY_VECTORS}) == len(KEY_VECTORS), "vector names are unique"


@pytest.mark.parametrize("vector", KEY_VECTORS, ids=[v["name"] for v in KEY_VECTORS])
class TestUniqueKeyVectors:
    def test_prehash_string_matches_river(self, vector: dict[str, Any]) -> None:
        opts = _unique_opts(vector["unique"])
        opts.validate()
        assert unique_key_prehash(opts, **_key_inputs(vector)) == vector["expected"]

    def test_sha256_matches_river(self, vector: dict[str, Any]) -> None:
        opts = _unique_opts(vector["unique"])
        key = unique_key(opts, **_key_inputs(vector))
        assert len(key) == 32
        assert key.hex() == vector["sha256_hex"]

    def test_vector_is_self_consistent(self, vector: dict[str, Any]) -> None:
        digest = hashlib.sha256(vector["expected"].encode("utf-8")).hexdigest()
        assert digest == vector["sha256_hex"]


SCHEDULED_VECTORS = [v for v in KEY_VECTORS if v.get("scheduled_at")]


@pytest.mark.parametrize("vector", SCHEDULED_VECTORS, ids=[v["name"] for v in SCHEDULED_VECTORS])
def test_key_uses_scheduled_at_not_now(vector: dict[str, Any]) -> None:
    opts = _unique_opts(vector["unique"])
    far_away = datetime(1999, 1, 1, tzinfo=UTC)
    assert unique_key_prehash(opts, **_key_inputs(vector), now=far_away) == vector["expected"]


def test_unique_key_from_job_args_encoding_matches_vector() -> None:
    class Email(JobArgs, kind="worker_1"):
        subject: str
        recipient: str

    encoded = Email(subject="Test Email", recipient="user@example.com").encode()
    assert encoded == '{"subject":"Test Email","recipient":"user@example.com"}'
    key = unique_key(
        UniqueOpts(by_args=True),
        kind=Email.kind,
        encoded_args=encoded,
        queue="default",
        scheduled_at=None,
    )
    assert key.hex() == "924d0ae47cfc7fa39a6ac83c366368583aa6406612772dd007cad2527989ed80"


def test_by_period_without_scheduled_at_uses_now() -> None:
    opts = UniqueOpts(by_period=timedelta(hours=1))
    now = datetime(2024, 9, 15, 10, 37, 12, tzinfo=UTC)
    prehash = unique_key_prehash(
        opts, kind="worker_4", encoded_args="{}", queue="default", scheduled_at=None, now=now
    )
    assert prehash == "&kind=worker_4&period=2024-09-15T10:00:00Z"


def test_by_args_sorts_keys_that_need_escaping_as_go_does() -> None:
    prehash = unique_key_prehash(
        UniqueOpts(by_args=True),
        kind="k",
        encoded_args='{"b\\u003c":1,"a":2}',
        queue="default",
        scheduled_at=None,
    )
    assert prehash == '&kind=k&args={"a":2,"b\\u003c":1}'


def test_default_unique_options_are_kind_only() -> None:
    prehash = unique_key_prehash(
        UniqueOpts(), kind="only_kind", encoded_args='{"x":1}', queue="q", scheduled_at=None
    )
    assert prehash == "&kind=only_kind"


# --- unique_states bitmasks --------------------------------------------------------------------


@pytest.mark.parametrize("vector", BITMASK_VECTORS, ids=[v["bit8"] for v in BITMASK_VECTORS])
def test_states_bitmask_matches_vector(vector: dict[str, Any]) -> None:
    states = [JobState(s) for s in vector["states"]]
    assert states_bitmask(states) == vector["bit8"]
    assert states_bitmask(reversed(states)) == vector["bit8"], "order does not matter"
    assert bitmask_states(vector["bit8"]) == frozenset(states)


def test_default_unique_states_bitmask_is_first_vector() -> None:
    assert BITMASK_VECTORS[0]["bit8"] == "11110101"
    assert states_bitmask(DEFAULT_UNIQUE_STATES) == "11110101"
    assert states_bitmask(UniqueOpts().states()) == "11110101"


@pytest.mark.parametrize(
    ("state", "bit"),
    [
        (JobState.AVAILABLE, 7),
        (JobState.CANCELLED, 6),
        (JobState.COMPLETED, 5),
        (JobState.DISCARDED, 4),
        (JobState.PENDING, 3),
        (JobState.RETRYABLE, 2),
        (JobState.RUNNING, 1),
        (JobState.SCHEDULED, 0),
    ],
)
def test_each_state_sets_its_get_bit_index(state: JobState, bit: int) -> None:
    # PostgreSQL's get_bit(bitmask, i) reads the i-th character from the left.
    expected = ["0"] * 8
    expected[bit] = "1"
    assert states_bitmask([state]) == "".join(expected)


def test_states_bitmask_accepts_state_names() -> None:
    assert states_bitmask(["available", "scheduled"]) == "10000001"  # type: ignore[list-item]


def test_empty_bitmask() -> None:
    assert states_bitmask([]) == "00000000"
    assert bitmask_states("00000000") == frozenset()


def test_bitmask_round_trips_for_every_subset_of_states() -> None:
    all_states = list(JobState)
    for mask in range(256):
        subset = frozenset(s for i, s in enumerate(all_states) if mask >> i & 1)
        text = states_bitmask(subset)
        assert len(text) == 8
        assert bitmask_states(text) == subset
        assert states_bitmask(bitmask_states(text)) == text


@pytest.mark.parametrize("bad", ["", "1111010", "111101011", "1111010x", "11 10101"])
def test_bitmask_states_rejects_non_bit8_text(bad: str) -> None:
    with pytest.raises(ValueError, match="bit"):
        bitmask_states(bad)


# --- truncate_to_period ------------------------------------------------------------------------


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "period", "expected"),
    [
        pytest.param(
            _utc(2024, 9, 15, 10, 0, 0), timedelta(hours=1), _utc(2024, 9, 15, 10), id="on-boundary"
        ),
        pytest.param(
            _utc(2024, 9, 15, 10, 59, 59, 999999),
            timedelta(hours=1),
            _utc(2024, 9, 15, 10),
            id="last-microsecond-of-period",
        ),
        pytest.param(
            _utc(2024, 9, 15, 11, 0, 0, 1),
            timedelta(hours=1),
            _utc(2024, 9, 15, 11),
            id="first-microsecond-of-next-period",
        ),
        pytest.param(
            _utc(2024, 9, 15, 10, 37, 12, 500000),
            timedelta(seconds=1),
            _utc(2024, 9, 15, 10, 37, 12),
            id="one-second-drops-microseconds",
        ),
        pytest.param(
            _utc(2024, 9, 15, 23, 59, 59),
            timedelta(days=1),
            _utc(2024, 9, 15),
            id="one-day",
        ),
        pytest.param(
            # Year one began on a Monday, so weeks counted from it start on Mondays.
            _utc(2024, 9, 15, 10),
            timedelta(weeks=1),
            _utc(2024, 9, 9),
            id="week-from-year-one-not-unix-epoch",
        ),
        pytest.param(
            _utc(2024, 9, 16, 0, 0, 0),
            timedelta(weeks=1),
            _utc(2024, 9, 16),
            id="week-on-monday-boundary",
        ),
        pytest.param(
            _utc(2024, 1, 1, 0, 0, 0),
            timedelta(seconds=11),
            # 2024-01-01 is 63,839,664,000 s after year one: 2 s past a multiple of 11 s.
            _utc(2023, 12, 31, 23, 59, 58),
            id="period-not-dividing-a-day-crosses-year",
        ),
        pytest.param(
            _utc(1, 1, 1, 0, 0, 0),
            timedelta(hours=1),
            _utc(1, 1, 1, 0, 0, 0),
            id="year-one-itself",
        ),
    ],
)
def test_truncate_to_period(moment: datetime, period: timedelta, expected: datetime) -> None:
    assert truncate_to_period(moment, period) == expected


def test_truncate_to_period_is_absolute_not_local_time() -> None:
    # Go's Truncate works on absolute time: 10:37+05:30 is 05:07Z, which truncates to 05:00Z,
    # not to 10:00 local time.
    local = datetime(2024, 9, 15, 10, 37, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    result = truncate_to_period(local, timedelta(hours=1))
    assert result == _utc(2024, 9, 15, 5)
    assert result.utcoffset() == timedelta(0)


def test_by_period_prehash_formats_in_utc_for_non_utc_scheduled_at() -> None:
    scheduled = datetime(2024, 9, 15, 12, 37, 12, tzinfo=timezone(timedelta(hours=2)))
    prehash = unique_key_prehash(
        UniqueOpts(by_period=timedelta(hours=1)),
        kind="worker_4",
        encoded_args="{}",
        queue="default",
        scheduled_at=scheduled,
    )
    assert prehash == "&kind=worker_4&period=2024-09-15T10:00:00Z"


# --- UniqueOpts validation ---------------------------------------------------------------------


@pytest.mark.parametrize("left_out", sorted(REQUIRED_UNIQUE_STATES), ids=str)
def test_by_state_leaving_out_a_required_state_is_rejected(left_out: JobState) -> None:
    states = [s for s in JobState if s is not left_out]
    opts = UniqueOpts(by_state=states)
    with pytest.raises(InvalidJobError) as info:
        opts.validate()
    assert info.value.field == "unique.by_state"
    assert "unique.by_state" in str(info.value)
    assert left_out.value in str(info.value)
    assert isinstance(info.value, ValueError)


def test_required_unique_states_are_available_pending_running_scheduled() -> None:
    assert {s.value for s in REQUIRED_UNIQUE_STATES} == {
        "available",
        "pending",
        "running",
        "scheduled",
    }


def test_by_state_with_only_required_states_is_accepted() -> None:
    opts = UniqueOpts(by_state=["available", "pending", "running", "scheduled"])
    opts.validate()
    assert states_bitmask(opts.states()) == "11010001"


def test_by_state_accepts_every_state() -> None:
    opts = UniqueOpts(by_state=list(JobState))
    opts.validate()
    assert states_bitmask(opts.states()) == "11111111"


def test_by_state_unknown_state_names_the_value() -> None:
    opts = UniqueOpts(by_state=["available", "pending", "running", "scheduled", "finished"])
    with pytest.raises(InvalidJobError, match="finished") as info:
        opts.validate()
    assert info.value.field == "unique.by_state"
    assert "unique.by_state" in str(info.value)


def test_by_state_as_a_string_is_rejected() -> None:
    with pytest.raises(InvalidJobError) as info:
        UniqueOpts(by_state="available").validate()
    assert info.value.field == "unique.by_state"


@pytest.mark.parametrize(
    "period",
    [timedelta(0), timedelta(milliseconds=999), timedelta(microseconds=1), timedelta(seconds=-5)],
    ids=str,
)
def test_by_period_under_one_second_is_rejected(period: timedelta) -> None:
    with pytest.raises(InvalidJobError) as info:
        UniqueOpts(by_period=period).validate()
    assert info.value.field == "unique.by_period"
    assert "unique.by_period" in str(info.value)


def test_by_period_of_one_second_is_accepted() -> None:
    UniqueOpts(by_period=timedelta(seconds=1)).validate()


def test_by_period_must_be_a_timedelta() -> None:
    with pytest.raises(InvalidJobError) as info:
        UniqueOpts(by_period=3600).validate()  # type: ignore[arg-type]
    assert info.value.field == "unique.by_period"


@pytest.mark.parametrize("by_args", ["subject", [1, 2]], ids=["string", "non-string-keys"])
def test_by_args_must_be_bool_or_list_of_names(by_args: Any) -> None:
    with pytest.raises(InvalidJobError) as info:
        UniqueOpts(by_args=by_args).validate()
    assert info.value.field == "unique.by_args"
