"""The periodic job enqueuer: turns each due run of a :class:`~sa_river.PeriodicJob` into a job.

Leader only, and durable through leadership changes and restarts because it keeps no state that
matters outside the database:

- every run is inserted as a **unique job** keyed by ``(kind, periodic name, run time)`` —
  ``sha256("&kind=<kind>&periodic=<name>&at=<RFC 3339 UTC>")`` — with ``unique_states`` set to
  all eight states, so while a run's row exists no one can enqueue that run again, whoever
  tries and however often (two leaders in a split brain, a retry after a lost commit...);
- each round reads, per periodic job, the latest run already in the table
  (``max(scheduled_at)`` of its jobs, found through the metadata ``{"periodic_job": name}``)
  and enqueues every run due after it up to the database's ``now()``, at most ``max_backfill``
  (the latest ones). A new leader thus picks up exactly where the old one stopped: the runs
  due in between are backfilled, none is enqueued twice;
- a periodic job with no run in the table starts from this enqueuer's start: its first run is
  the next one due (with ``run_on_start``, one run at the start time, truncated to the second).

``is_leader()`` is checked before the round and again right before every insert. Each periodic
job's due runs go in as one ``INSERT`` (one statement, one transaction); a run already present
comes back as a skipped duplicate and is not counted.

Known limit: the history is the table. A periodic job whose period is longer than the cleaner's
retention of its finished runs can lose its history between runs; it then restarts from the
enqueuer's start (the next due run still happens; nothing is enqueued twice while the
enqueuer that saw the last run keeps leading, since it also remembers what it enqueued).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from sqlalchemy import Engine

from sa_river.args import encode_json
from sa_river.enqueue import prepare
from sa_river.errors import ConfigError, SaRiverError
from sa_river.maintenance import MaintenanceService
from sa_river.options import InsertOpts
from sa_river.periodic import PeriodicJob, validate_periodic_jobs
from sa_river.queries.job_insert import JobInsertParams, job_insert_many
from sa_river.queries.periodic import PERIODIC_METADATA_KEY, periodic_last_runs
from sa_river.types import JobState
from sa_river.unique import states_bitmask

__all__ = [
    "ALL_STATES",
    "PeriodicJobEnqueuer",
    "format_run_time",
    "run_unique_key",
    "run_unique_key_prehash",
]

logger = logging.getLogger("sa_river.maintenance.periodic")

ALL_STATES = states_bitmask(JobState)
"""``'11111111'``: a run's key is held by its row in every state, finalised ones included."""


def format_run_time(run_at: datetime) -> str:
    """RFC 3339 in UTC: ``2024-01-01T12:00:00Z`` (with ``.ffffff`` only when not whole)."""
    utc = run_at.astimezone(timezone.utc)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def run_unique_key_prehash(kind: str, name: str, run_at: datetime) -> str:
    """The string whose sha256 is the unique key of one run of a periodic job."""
    return f"&kind={kind}&periodic={name}&at={format_run_time(run_at)}"


def run_unique_key(kind: str, name: str, run_at: datetime) -> bytes:
    """The unique key of one run: the sha256 of :func:`run_unique_key_prehash`."""
    return hashlib.sha256(run_unique_key_prehash(kind, name, run_at).encode("utf-8")).digest()


class PeriodicJobEnqueuer(MaintenanceService):
    """Every ``interval`` seconds, enqueue the due runs of ``jobs`` (leader only).

    ``max_backfill`` bounds how many missed runs of one periodic job a round enqueues after
    an outage (the latest ones). Raises :class:`~sa_river.errors.ConfigError` for duplicate
    names or bad settings.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        jobs: Sequence[PeriodicJob],
        is_leader: Callable[[], bool],
        interval: float = 1.0,
        max_backfill: int = 100,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ConfigError("interval", f"must be a positive number of seconds, got {interval!r}")
        if isinstance(max_backfill, bool) or not isinstance(max_backfill, int) or max_backfill < 1:
            raise ConfigError("max_backfill", f"must be an integer >= 1, got {max_backfill!r}")
        super().__init__("periodic", engine, interval=float(interval), is_leader=is_leader)
        self.jobs = validate_periodic_jobs(jobs, field="jobs")
        self.max_backfill = max_backfill
        self.started_at: datetime | None = None
        """Database time of this enqueuer's first round as leader (its start)."""
        self._start_runs_pending = {job.name for job in self.jobs if job.run_on_start}
        self._enqueued_up_to: dict[str, datetime] = {}
        self._failing: set[str] = set()

    def run_once(self) -> int:
        """Enqueue every due run of every periodic job; return how many jobs were inserted."""
        if not self.is_leader():
            return 0
        with self.engine.connect() as conn:
            now, last_runs = periodic_last_runs(conn, [(job.kind, job.name) for job in self.jobs])
        if self.started_at is None:
            self.started_at = now
        inserted = 0
        for job, last_run in zip(self.jobs, last_runs, strict=True):
            due = self._due_runs(job, now, last_run)
            if not due:
                continue
            params = self._prepare_runs(job, due)
            if params is None:
                continue
            if not self.is_leader():  # re-checked right before every insert
                break
            with self.engine.begin() as conn:
                results = job_insert_many(conn, params)
            fresh = [row for row, skipped in results if not skipped]
            inserted += len(fresh)
            self._start_runs_pending.discard(job.name)
            self._enqueued_up_to[job.name] = max(due)
            if fresh:
                logger.debug(
                    "periodic %s: enqueued runs %s",
                    job.name,
                    ", ".join(format_run_time(row.scheduled_at) for row in fresh),
                    extra={"event": "periodic_enqueued"},
                )
        return inserted

    def _due_runs(
        self, job: PeriodicJob, now: datetime, last_run: datetime | None
    ) -> list[datetime]:
        assert self.started_at is not None
        known = [t for t in (last_run, self._enqueued_up_to.get(job.name)) if t is not None]
        after = max(known) if known else self.started_at
        runs = job.runs_between(after, now, self.max_backfill + 1)
        if len(runs) > self.max_backfill:
            runs = runs[-self.max_backfill :]
            logger.warning(
                "periodic %s: more than %d runs were due since %s; enqueueing the latest %d, "
                "from %s",
                job.name,
                self.max_backfill,
                format_run_time(after),
                self.max_backfill,
                format_run_time(runs[0]),
                extra={"event": "periodic_backfill_truncated"},
            )
        if job.name in self._start_runs_pending:
            runs.append(self.started_at.replace(microsecond=0))
        return sorted(set(runs))

    def _prepare_runs(
        self, job: PeriodicJob, due: Sequence[datetime]
    ) -> list[JobInsertParams] | None:
        """The insert parameters of each run, or ``None`` (logged) if its args can't be made."""
        params = []
        try:
            for run_at in due:
                args = job.args_factory()
                p = prepare(
                    args, dataclasses.replace(job.opts or InsertOpts(), scheduled_at=run_at)
                )
                if p.kind != job.kind:
                    raise ConfigError(
                        "args_factory",
                        f"returned kind {p.kind!r}, but this periodic job's kind is {job.kind!r}",
                    )
                metadata = json.loads(p.metadata)
                metadata[PERIODIC_METADATA_KEY] = job.name
                params.append(
                    dataclasses.replace(
                        p,
                        metadata=encode_json(metadata, field="metadata"),
                        unique_key=run_unique_key(job.kind, job.name, run_at),
                        unique_states=ALL_STATES,
                    )
                )
        except Exception as exc:  # a user's factory: never let it stop the other jobs
            if job.name not in self._failing:
                logger.error(
                    "periodic %s: cannot build its args (%s); retrying next round",
                    job.name,
                    exc,
                    exc_info=not isinstance(exc, SaRiverError),
                    extra={"event": "periodic_args_error"},
                )
            self._failing.add(job.name)
            return None
        self._failing.discard(job.name)
        return params
