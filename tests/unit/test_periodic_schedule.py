"""Schedule math and validation of PeriodicJob (no database)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from sa_river import InsertOpts, JobArgs, UniqueOpts
from sa_river.errors import ConfigError
from sa_river.maintenance.periodic import (
    ALL_STATES,
    format_run_time,
    run_unique_key,
    run_unique_key_prehash,
)
from sa_river.periodic import EPOCH, PeriodicJob, validate_periodic_jobs

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def tick() -> tuple[str, dict[str, int]]:
    return ("tick", {})


class Report(JobArgs, kind="report"):
    day: str = "today"


# --- interval schedules --------------------------------------------------------------------


def test_interval_runs_are_multiples_of_the_interval_since_the_epoch() -> None:
    job = PeriodicJob(timedelta(minutes=15), tick)
    runs = job.runs_between(at("2024-03-01 10:07:12"), at("2024-03-01 11:00:00"))
    assert runs == [
        at("2024-03-01 10:15"),
        at("2024-03-01 10:30"),
        at("2024-03-01 10:45"),
        at("2024-03-01 11:00"),  # until is inclusive
    ]
    for t in runs:
        assert (t - EPOCH) % timedelta(minutes=15) == timedelta(0)
        assert t.tzinfo is not None
        assert t.utcoffset() == timedelta(0)


def test_interval_that_does_not_divide_a_day_still_counts_from_the_epoch() -> None:
    job = PeriodicJob(timedelta(seconds=7), tick)
    runs = job.runs_between(at("2024-01-01 00:00:00"), at("2024-01-01 00:00:30"))
    # 2024-01-01T00:00:00Z is 1704067200 s after the epoch, 3 s past a multiple of 7.
    assert runs == [at("2024-01-01 00:00:00") + timedelta(seconds=s) for s in (4, 11, 18, 25)]


def test_interval_after_is_exclusive_until_is_inclusive() -> None:
    job = PeriodicJob(timedelta(seconds=1), tick)
    t0 = at("2024-01-01 00:00:00")
    assert job.runs_between(t0, t0 + timedelta(seconds=2)) == [
        t0 + timedelta(seconds=1),
        t0 + timedelta(seconds=2),
    ]
    assert job.runs_between(t0, t0) == []
    assert job.runs_between(t0, t0 + timedelta(milliseconds=999)) == []
    assert job.runs_between(t0 + timedelta(seconds=5), t0) == []


def test_limit_keeps_the_latest_runs() -> None:
    job = PeriodicJob(timedelta(seconds=1), tick)
    t0 = at("2024-01-01 00:00:00")
    runs = job.runs_between(t0, t0 + timedelta(days=365), limit=3)
    end = t0 + timedelta(days=365)
    assert runs == [end - timedelta(seconds=2), end - timedelta(seconds=1), end]
    assert job.runs_between(t0, end, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        job.runs_between(t0, end, limit=-1)


def test_sub_second_interval() -> None:
    job = PeriodicJob(timedelta(milliseconds=250), tick)
    t0 = at("2024-01-01 00:00:00")
    assert job.runs_between(t0, t0 + timedelta(seconds=1)) == [
        t0 + timedelta(milliseconds=ms) for ms in (250, 500, 750, 1000)
    ]
    assert job.name == "tick@every 0.25s"


def test_next_run_interval() -> None:
    job = PeriodicJob(timedelta(hours=1), tick)
    assert job.next_run(at("2024-01-01 10:00:00")) == at("2024-01-01 11:00:00")
    assert job.next_run(at("2024-01-01 10:59:59.999999")) == at("2024-01-01 11:00:00")


def test_other_time_zones_are_converted_to_utc() -> None:
    job = PeriodicJob(timedelta(hours=1), tick)
    plus2 = timezone(timedelta(hours=2))
    runs = job.runs_between(
        datetime(2024, 1, 1, 12, 30, tzinfo=plus2), datetime(2024, 1, 1, 14, 0, tzinfo=plus2)
    )
    assert runs == [at("2024-01-01 11:00"), at("2024-01-01 12:00")]
    assert all(t.tzinfo == UTC for t in runs)


def test_naive_datetimes_are_refused() -> None:
    job = PeriodicJob(timedelta(hours=1), tick)
    with pytest.raises(ValueError, match="after must be timezone-aware"):
        job.runs_between(datetime(2024, 1, 1), at("2024-01-02 00:00"))
    with pytest.raises(ValueError, match="until must be timezone-aware"):
        job.runs_between(at("2024-01-01 00:00"), datetime(2024, 1, 2))


# --- cron schedules --------------------------------------------------------------------------


def test_cron_every_minute() -> None:
    job = PeriodicJob("* * * * *", tick)
    assert job.runs_between(at("2024-01-01 00:00:30"), at("2024-01-01 00:03:00")) == [
        at("2024-01-01 00:01"),
        at("2024-01-01 00:02"),
        at("2024-01-01 00:03"),
    ]
    # exclusive lower bound on an exact minute, inclusive upper bound
    assert job.runs_between(at("2024-01-01 00:01:00"), at("2024-01-01 00:02:00")) == [
        at("2024-01-01 00:02")
    ]
    assert job.runs_between(at("2024-01-01 00:01:00"), at("2024-01-01 00:01:59.999999")) == []
    assert job.next_run(at("2024-01-01 00:00:59.500000")) == at("2024-01-01 00:01")
    assert job.next_run(at("2024-01-01 00:01:00")) == at("2024-01-01 00:02")


def test_cron_limit_keeps_the_latest_runs_without_walking_the_whole_gap() -> None:
    job = PeriodicJob("* * * * *", tick)
    runs = job.runs_between(at("2000-01-01 00:00"), at("2024-06-01 12:00:30"), limit=2)
    assert runs == [at("2024-06-01 11:59"), at("2024-06-01 12:00")]


def test_cron_is_evaluated_in_utc() -> None:
    job = PeriodicJob("0 9 * * MON", tick)
    runs = job.runs_between(at("2024-01-01 00:00"), at("2024-01-31 00:00"))
    assert runs == [at(f"2024-01-{d:02d} 09:00") for d in (1, 8, 15, 22, 29)]
    assert job.next_run(at("2024-01-01 09:00")) == at("2024-01-08 09:00")


def test_cron_step_and_month_boundaries() -> None:
    job = PeriodicJob("*/20 23 31 * *", tick)
    runs = job.runs_between(at("2024-01-31 22:00"), at("2024-03-31 23:59"))
    assert runs == [
        at("2024-01-31 23:00"),
        at("2024-01-31 23:20"),
        at("2024-01-31 23:40"),
        at("2024-03-31 23:00"),
        at("2024-03-31 23:20"),
        at("2024-03-31 23:40"),
    ]


def test_cron_whitespace_is_normalised() -> None:
    job = PeriodicJob("  0   *  * * * ", tick)
    assert job.cron == "0 * * * *"
    assert job.name == "tick@0 * * * *"


# --- names and keys --------------------------------------------------------------------------


def test_default_names() -> None:
    assert PeriodicJob(timedelta(seconds=1), tick).name == "tick@every 1s"
    assert PeriodicJob(timedelta(minutes=90), tick).name == "tick@every 1h30m"
    assert PeriodicJob(timedelta(days=1), Report).name == "report@every 24h"
    assert PeriodicJob("0 * * * *", Report).name == "report@0 * * * *"
    assert PeriodicJob("0 * * * *", Report, name="hourly").name == "hourly"
    assert PeriodicJob("0 * * * *", Report).kind == "report"


def test_run_unique_key() -> None:
    t = at("2024-01-01 12:00:00")
    prehash = run_unique_key_prehash("tick", "tick@every 1s", t)
    assert prehash == "&kind=tick&periodic=tick@every 1s&at=2024-01-01T12:00:00Z"
    assert run_unique_key("tick", "tick@every 1s", t) == hashlib.sha256(prehash.encode()).digest()
    assert run_unique_key("tick", "a", t) != run_unique_key("tick", "b", t)
    assert run_unique_key("tick", "a", t) != run_unique_key("tick", "a", t + timedelta(seconds=1))
    assert format_run_time(t + timedelta(milliseconds=250)) == "2024-01-01T12:00:00.25Z"
    plus2 = timezone(timedelta(hours=2))
    assert format_run_time(datetime(2024, 1, 1, 14, tzinfo=plus2)) == "2024-01-01T12:00:00Z"
    assert ALL_STATES == "11111111"


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("61 * * * *", "bad cron expression"),
        ("* * 30 2 *", "bad cron expression"),
        ("every minute", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("@hourly", "5 fields"),
        ("", "5 fields"),
    ],
)
def test_bad_cron_expression(expression: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        PeriodicJob(expression, tick)
    assert info.value.field == "schedule"


@pytest.mark.parametrize("interval", [timedelta(0), timedelta(seconds=-1)])
def test_non_positive_interval(interval: timedelta) -> None:
    with pytest.raises(ConfigError, match="positive") as info:
        PeriodicJob(interval, tick)
    assert info.value.field == "schedule"


def test_schedule_of_the_wrong_type() -> None:
    with pytest.raises(ConfigError, match="timedelta") as info:
        PeriodicJob(60, tick)  # type: ignore[arg-type]
    assert info.value.field == "schedule"


def test_bad_args_factory() -> None:
    with pytest.raises(ConfigError, match="callable") as info:
        PeriodicJob(timedelta(seconds=1), ("tick", {}))  # type: ignore[arg-type]
    assert info.value.field == "args_factory"

    def broken() -> tuple[str, dict[str, int]]:
        raise RuntimeError("boom")

    with pytest.raises(ConfigError, match="boom") as info:
        PeriodicJob(timedelta(seconds=1), broken)
    assert info.value.field == "args_factory"
    with pytest.raises(ConfigError, match="kind") as info:
        PeriodicJob(timedelta(seconds=1), lambda: ("", {}))
    assert info.value.field == "args_factory"
    with pytest.raises(ConfigError, match="JobArgs") as info:
        PeriodicJob(timedelta(seconds=1), lambda: 42)  # type: ignore[arg-type,return-value]
    assert info.value.field == "args_factory"


def test_bad_opts() -> None:
    with pytest.raises(ConfigError) as info:
        PeriodicJob(timedelta(seconds=1), tick, InsertOpts(unique=UniqueOpts()))
    assert info.value.field == "opts.unique"
    with pytest.raises(ConfigError) as info:
        PeriodicJob(timedelta(seconds=1), tick, InsertOpts(scheduled_at=at("2024-01-01 00:00")))
    assert info.value.field == "opts.scheduled_at"
    with pytest.raises(ConfigError) as info:
        PeriodicJob(timedelta(seconds=1), tick, InsertOpts(priority=9))
    assert info.value.field == "opts.priority"
    with pytest.raises(ConfigError) as info:
        PeriodicJob(timedelta(seconds=1), tick, {"queue": "x"})  # type: ignore[arg-type]
    assert info.value.field == "opts"


def test_bad_name() -> None:
    for bad in ("", "  ", "a\x00b", "x" * 300, 5):
        with pytest.raises(ConfigError) as info:
            PeriodicJob(timedelta(seconds=1), tick, name=bad)  # type: ignore[arg-type]
        assert info.value.field == "name"


def test_duplicate_names() -> None:
    one = PeriodicJob(timedelta(seconds=1), tick)
    same_default = PeriodicJob(timedelta(seconds=1), tick, InsertOpts(queue="other"))
    with pytest.raises(ConfigError, match="duplicate periodic job name 'tick@every 1s'") as info:
        validate_periodic_jobs([one, same_default])
    assert info.value.field == "periodic_jobs[1].name"
    named = PeriodicJob(timedelta(seconds=1), tick, name="tick-2")
    assert validate_periodic_jobs([one, named]) == [one, named]
    with pytest.raises(ConfigError) as info:
        validate_periodic_jobs([one, "tick"], field="jobs")  # type: ignore[list-item]
    assert info.value.field == "jobs[1]"
