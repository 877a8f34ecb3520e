"""Periodic jobs: a job enqueued on a schedule by the elected leader.

>>> report = PeriodicJob("0 * * * *", lambda: ("report", {}))                # doctest: +SKIP
>>> ping = PeriodicJob(timedelta(seconds=30), Ping, run_on_start=True)          # doctest: +SKIP
>>> sa_river.Worker(url, workers, periodic_jobs=[report, ping])                 # doctest: +SKIP

A schedule is either

- a :class:`~datetime.timedelta`: runs at every multiple of the interval counted from the Unix
  epoch (UTC), so every runner computes the same run times whatever its start time
  (``timedelta(hours=1)`` runs on the hour, ``timedelta(minutes=15)`` at :00, :15, :30, :45);
- a 5-field cron expression (minute, hour, day of month, month, day of week), evaluated in UTC
  by `cronsim <https://pypi.org/project/cronsim/>`_.

Each run is a unique job keyed by the periodic job's ``name`` and its run time, so however
leadership moves, a run is enqueued once (see :mod:`sa_river.maintenance.periodic`). The name is
the periodic job's identity across restarts: it defaults to ``"<kind>@<schedule>"``, so changing
the schedule starts a new series; pass ``name=`` to keep one across schedule changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from cronsim import CronSim, CronSimError

from sa_river.args import ArgsLike
from sa_river.errors import ConfigError, InvalidJobError
from sa_river.options import InsertOpts

__all__ = ["PeriodicJob", "validate_periodic_jobs"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_CRON_FIELDS = 5
_NAME_MAX_LENGTH = 255

ArgsFactory = Callable[[], ArgsLike]


class PeriodicJob:
    """A job to enqueue on ``schedule``; pass a list of them as ``Worker(periodic_jobs=...)``.

    - ``schedule``: a positive ``timedelta`` (runs at multiples of it since the Unix epoch, UTC)
      or a 5-field cron expression (UTC);
    - ``args_factory``: a zero-argument callable returning the args of one run (a
      :class:`~sa_river.JobArgs` instance or a ``(kind, dict)`` tuple). It is called once here,
      to learn and check the kind, then once per run;
    - ``opts``: :class:`~sa_river.InsertOpts` for every run (queue, priority, tags, metadata...).
      ``scheduled_at`` and ``unique`` are the schedule's to set and must be left unset;
    - ``run_on_start``: also enqueue one run whenever an enqueuer starts (each time a runner
      gains leadership), keyed by its start time truncated to the second;
    - ``name``: the identity of this periodic job (default ``"<kind>@<schedule>"``); runner-wide
      unique.

    Invalid values raise :class:`~sa_river.errors.ConfigError` naming the field.
    """

    def __init__(
        self,
        schedule: timedelta | str,
        args_factory: ArgsFactory,
        opts: InsertOpts | None = None,
        *,
        run_on_start: bool = False,
        name: str | None = None,
    ) -> None:
        self._interval_us: int | None = None
        self._cron: str | None = None
        if isinstance(schedule, timedelta):
            if schedule <= timedelta(0):
                raise ConfigError("schedule", f"an interval must be positive, got {schedule!r}")
            self._interval_us = schedule // _MICROSECOND
        elif isinstance(schedule, str):
            self._cron = _validate_cron(schedule)
        else:
            raise ConfigError(
                "schedule",
                "must be a datetime.timedelta (an interval) or a 5-field cron expression, "
                f"got {type(schedule).__name__}",
            )
        self.schedule: timedelta | str = schedule

        if not callable(args_factory):
            raise ConfigError(
                "args_factory",
                "must be a zero-argument callable returning JobArgs or a (kind, dict) tuple, "
                f"got {type(args_factory).__name__}",
            )
        self.args_factory = args_factory

        if opts is not None and not isinstance(opts, InsertOpts):
            raise ConfigError("opts", f"must be an InsertOpts, got {type(opts).__name__}")
        if opts is not None and opts.unique is not None:
            raise ConfigError(
                "opts.unique",
                "a periodic job is already unique per run (keyed by its name and run time); "
                "leave unique unset",
            )
        if opts is not None and opts.scheduled_at is not None:
            raise ConfigError("opts.scheduled_at", "each run is scheduled at its run time")
        self.opts = opts
        self.run_on_start = bool(run_on_start)

        self.kind = self._learn_kind()
        if name is None:
            name = f"{self.kind}@{self.schedule_text}"
        self.name = _validate_name(name)

    def _learn_kind(self) -> str:
        from sa_river.enqueue import prepare  # enqueue imports SQLAlchemy's async layer

        try:
            args = self.args_factory()
        except Exception as exc:
            raise ConfigError("args_factory", f"raised {exc!r} when called") from exc
        try:
            sample = dataclasses.replace(self.opts or InsertOpts(), scheduled_at=EPOCH)
            return prepare(args, sample).kind
        except InvalidJobError as exc:
            message = str(exc).split(": ", 1)[-1]
            if exc.field.split(".", 1)[0].split("[", 1)[0] in ("args", "kind"):
                raise ConfigError("args_factory", f"returned bad {exc.field}: {message}") from exc
            raise ConfigError(f"opts.{exc.field}", message) from exc

    @property
    def interval(self) -> timedelta | None:
        """The interval of an interval schedule, else ``None``."""
        return None if self._interval_us is None else timedelta(microseconds=self._interval_us)

    @property
    def cron(self) -> str | None:
        """The cron expression (whitespace normalised) of a cron schedule, else ``None``."""
        return self._cron

    @property
    def schedule_text(self) -> str:
        """``"every 1h30m"`` for an interval, the expression itself for cron."""
        if self._cron is not None:
            return self._cron
        assert self._interval_us is not None
        return f"every {_duration_text(self._interval_us)}"

    def next_run(self, after: datetime) -> datetime:
        """The first run time strictly after ``after`` (an aware datetime), in UTC."""
        start = _utc(after, "after")
        if self._interval_us is not None:
            elapsed = (start - EPOCH) // _MICROSECOND
            return _at(self._interval_us * (elapsed // self._interval_us + 1))
        assert self._cron is not None
        return next(iter(CronSim(self._cron, start)))

    def runs_between(self, after: datetime, until: datetime, limit: int = 100) -> list[datetime]:
        """Run times ``t`` with ``after < t <= until``, ascending, in UTC.

        At most ``limit``; when more are due, the latest ``limit`` of them (a backfill after a
        long outage catches up on the most recent runs, not the oldest).
        """
        low = _utc(after, "after")
        high = _utc(until, "until")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
        if limit == 0 or high <= low:
            return []
        if self._interval_us is not None:
            step = self._interval_us
            first = ((low - EPOCH) // _MICROSECOND) // step + 1
            last = ((high - EPOCH) // _MICROSECOND) // step
            return [_at(k * step) for k in range(max(first, last - limit + 1), last + 1)]
        assert self._cron is not None
        runs: list[datetime] = []
        # Walk back from the first whole minute after ``until`` (cron times are whole
        # minutes). cronsim's versions differ on a start with seconds, and on whether a start
        # that matches is itself returned: the start is whole, and what is later is skipped.
        start = high.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for t in CronSim(self._cron, start, reverse=True):
            if t > high:
                continue
            if t <= low or len(runs) == limit:
                break
            runs.append(t)
        runs.reverse()
        return runs

    def __repr__(self) -> str:
        schedule = repr(self.schedule) if self._cron is None else repr(self._cron)
        extra = ", run_on_start=True" if self.run_on_start else ""
        return f"PeriodicJob({schedule}, name={self.name!r}{extra})"


def validate_periodic_jobs(
    jobs: Sequence[PeriodicJob], *, field: str = "periodic_jobs"
) -> list[PeriodicJob]:
    """Check that ``jobs`` is a list of :class:`PeriodicJob` with distinct names.

    Raises :class:`~sa_river.errors.ConfigError` naming the offending item, e.g.
    ``periodic_jobs[2].name``.
    """
    if isinstance(jobs, str | bytes) or not isinstance(jobs, Sequence):
        raise ConfigError(field, f"must be a list of PeriodicJob, got {type(jobs).__name__}")
    seen: dict[str, int] = {}
    for index, job in enumerate(jobs):
        if not isinstance(job, PeriodicJob):
            raise ConfigError(
                f"{field}[{index}]", f"must be a PeriodicJob, got {type(job).__name__}"
            )
        if job.name in seen:
            raise ConfigError(
                f"{field}[{index}].name",
                f"duplicate periodic job name {job.name!r} (also {field}[{seen[job.name]}]); "
                "give each periodic job a distinct name=",
            )
        seen[job.name] = index
    return list(jobs)


def _validate_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != _CRON_FIELDS:
        raise ConfigError(
            "schedule",
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)} in {expression!r}",
        )
    normalised = " ".join(fields)
    try:
        next(iter(CronSim(normalised, EPOCH)))
    except (CronSimError, ValueError, StopIteration) as exc:
        raise ConfigError("schedule", f"bad cron expression {expression!r}: {exc}") from exc
    return normalised


def _validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise ConfigError("name", f"must be a string, got {type(name).__name__}")
    if not name.strip():
        raise ConfigError("name", "must not be empty")
    if "\x00" in name:
        raise ConfigError("name", "must not contain a NUL character (U+0000)")
    if len(name) > _NAME_MAX_LENGTH:
        raise ConfigError("name", f"must be at most {_NAME_MAX_LENGTH} characters, got {len(name)}")
    return name


def _utc(moment: datetime, what: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(timezone.utc)


def _at(microseconds_since_epoch: int) -> datetime:
    return EPOCH + timedelta(microseconds=microseconds_since_epoch)


def _duration_text(microseconds: int) -> str:
    """``5400 s`` -> ``"1h30m"``, ``0.5 s`` -> ``"0.5s"`` (the default name's schedule part)."""
    seconds, micros = divmod(microseconds, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if micros:
        parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
    elif seconds:
        parts.append(f"{seconds}s")
    return "".join(parts)
