"""Prometheus metrics for sa_river: ``pip install 'sa_river[prometheus]'``.

Importing this module without ``prometheus_client`` raises an ``ImportError`` that says which
``pip install`` provides it.

Serving metrics
---------------

From the command line, ``--metrics-port`` serves ``http://HOST:PORT/metrics`` for as long as
the worker runs (``--metrics-host``, formerly ``--metrics-addr``, defaults to ``0.0.0.0``: every
interface, where a Prometheus on another machine can reach it; ``127.0.0.1`` keeps it local)::

    python -m sa_river worker --app myapp.jobs:workers --metrics-port 9100

The port is bound before the worker starts fetching, so a port already in use is a one-line
error (exit code 1) and no job is touched; the server stops when the worker has stopped.
``--metrics-port 0`` picks a free port; the address actually served is printed at start-up
(``metrics on http://0.0.0.0:PORT/metrics``). With ``--processes N`` each worker process
serves its own metrics: process ``i`` (0 to N-1) listens on ``PORT + i``, so scrape the N
ports as N targets (a restarted process listens on the same port again). Without
``prometheus_client`` installed, ``--metrics-port`` is a one-line error naming the extra.

In your own process, :func:`start_metrics_server` does the same for a :class:`~sa_river.Worker`
you run yourself::

    from sa_river.contrib.prometheus import start_metrics_server

    worker = sa_river.Worker(url, workers)
    metrics = start_metrics_server(9100, worker=worker)
    try:
        worker.run()
    finally:
        metrics.stop()

An application that already serves Prometheus metrics can use the pieces instead, in the
registry it serves::

    from prometheus_client import REGISTRY

    sa_river.add_hook(PrometheusMetrics())               # job counters and durations
    REGISTRY.register(WorkerCollector(worker))          # sa_river_leader, sa_river_jobs_running
    REGISTRY.register(QueueDepthCollector(engine))      # sa_river_queue_jobs

Metrics
-------

Counters and the histogram count what happens *in this process* (each process of a
deployment is its own scrape target; sum over them). Labels ``kind`` and ``queue`` take every
job kind and queue name you use, so keep those a bounded set (no ids in kinds or queue names).
prometheus_client also serves a ``..._created`` sample (the creation time) beside each
counter and histogram series.

``sa_river_jobs_inserted_total{kind, queue}`` (counter)
    Jobs inserted by ``sa_river.insert*`` calls made in this process. A unique job skipped
    as a duplicate is not counted (nothing was written); an insert that raised is not counted.
    An insert made on a session or connection is counted when the call returns, before the
    caller's transaction commits (and even if it is later rolled back).
``sa_river_jobs_worked_total{kind, queue, result}`` (counter)
    Attempts worked by this process, by how they ended: ``result`` is ``completed``,
    ``retried`` (failed and will run again), ``snoozed``, ``cancelled`` or ``discarded``
    (failed for the last time), as in :class:`~sa_river.WorkOutcome`.
``sa_river_jobs_failed_total{kind, queue}`` (counter)
    Attempts that ended with an error (the handler raised, timed out, or its job could not be
    decoded): the ``retried`` and ``discarded`` attempts together. Snoozes and cancellations
    are not failures.
``sa_river_jobs_retried_total{kind, queue}`` (counter)
    Failed attempts whose job will run again (the ``retried`` ones).
``sa_river_job_duration_seconds{kind, queue}`` (histogram)
    How long each attempt ran, from the handler's start to its outcome (from the fetch, for a
    job whose handler could not be found), whatever the outcome. Buckets from 5 ms to 30
    minutes (:data:`DURATION_BUCKETS`).
``sa_river_jobs_running`` (gauge)
    Attempts this process's worker has in flight: fetched and not yet finished.
``sa_river_leader`` (gauge)
    1 while this process's worker is the elected leader (and runs the maintenance services),
    else 0. At most one worker of a deployment believes it leads at any instant, so the sum
    over processes is 1 (0 while no one leads; since the processes are scraped at different
    moments, a hand-over can briefly show 0 or 2).
``sa_river_queue_jobs{queue, state}`` (gauge)
    Jobs not yet finalized, per queue and ``state`` (``available``, ``pending``,
    ``retryable``, ``running``, ``scheduled``), read from the database: the whole
    deployment's backlog, so every process reports the same numbers (aggregate with ``max``,
    not ``sum``). Every queue in ``river_queue`` (the queues workers registered) or holding
    unfinished jobs is listed with all five states, zeros included.
``sa_river_queue_jobs_query_failures_total`` (counter)
    Counting queries for ``sa_river_queue_jobs`` that failed (timed out, database down). After
    a failure the gauge is left out of the scrapes (until the next count, up to
    ``queue_depth_interval`` seconds later) rather than reported stale.

Cost of the queue gauge: the count runs at most once per ``queue_depth_interval`` seconds
(default 5) however often Prometheus scrapes, under a ``statement_timeout`` of
``queue_depth_timeout`` seconds (default 3), on a one-connection pool of its own (never the
worker's). It counts only unfinished jobs, reading the entries of their states in the
``river_job_prioritized_fetching_index`` (``state`` is its first column; an index-only scan),
so finalized rows kept for retention cost nothing: 8 ms for 30,000 unfinished jobs beside
1,000,000 completed ones on PostgreSQL 15. The cost grows with the backlog, a few tenths of a
second per million unfinished jobs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client import start_http_server as _start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sa_river.contrib.prometheus needs prometheus_client, which is not installed: "
        "pip install 'sa_river[prometheus]'"
    ) from _missing

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import SQLAlchemyError

from sa_river.hooks import Hook, InsertingJob, WorkOutcome, add_hook, remove_hook
from sa_river.queries.job_admin import job_count_by_queue_and_state
from sa_river.queries.leader import set_local_statement_timeout
from sa_river.queries.metrics import UNFINALIZED_STATES, queue_list_names
from sa_river.types import InsertResult, JobState

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from sa_river.worker import Worker
    from sa_river.workers import Job

__all__ = [
    "DURATION_BUCKETS",
    "MetricsServer",
    "PrometheusMetrics",
    "QueueDepthCollector",
    "WorkerCollector",
    "start_metrics_server",
]

logger = logging.getLogger("sa_river.contrib.prometheus")

DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)
"""Upper bounds (seconds) of ``sa_river_job_duration_seconds``: milliseconds to half an hour."""


class PrometheusMetrics(Hook):
    """A :class:`~sa_river.Hook` that counts inserts and attempts in Prometheus metrics.

    Creating it registers ``sa_river_jobs_inserted_total``, ``sa_river_jobs_worked_total``,
    ``sa_river_jobs_failed_total``, ``sa_river_jobs_retried_total`` and
    ``sa_river_job_duration_seconds`` in ``registry`` (default: prometheus_client's global
    ``REGISTRY``); it records nothing until registered with :func:`sa_river.add_hook`.
    One instance per registry: a second one raises prometheus_client's ``ValueError`` about
    duplicated timeseries (call :meth:`unregister` on the first to replace it)::

        metrics = sa_river.add_hook(PrometheusMetrics())
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = REGISTRY if registry is None else registry
        labels = ("kind", "queue")
        self.inserted = Counter(
            "sa_river_jobs_inserted",
            "Jobs inserted by this process (unique duplicates skipped are not counted).",
            labels,
            registry=None,
        )
        self.worked = Counter(
            "sa_river_jobs_worked",
            "Attempts worked by this process, by result "
            "(completed, retried, snoozed, cancelled, discarded).",
            (*labels, "result"),
            registry=None,
        )
        self.failed = Counter(
            "sa_river_jobs_failed",
            "Attempts worked by this process that ended with an error (retried or discarded).",
            labels,
            registry=None,
        )
        self.retried = Counter(
            "sa_river_jobs_retried",
            "Failed attempts worked by this process whose job will run again.",
            labels,
            registry=None,
        )
        self.duration = Histogram(
            "sa_river_job_duration_seconds",
            "How long each attempt worked by this process ran, whatever its result.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self._collectors = (self.inserted, self.worked, self.failed, self.retried, self.duration)
        registered: list[Any] = []
        try:
            for collector in self._collectors:
                self.registry.register(collector)
                registered.append(collector)
        except ValueError:
            for collector in registered:
                self.registry.unregister(collector)
            raise

    def unregister(self) -> None:
        """Remove this hook's metrics from its registry (unregister the hook separately)."""
        for collector in self._collectors:
            _unregister(self.registry, collector)

    def after_insert(
        self,
        jobs: Sequence[InsertingJob],
        results: Sequence[InsertResult],
        error: BaseException | None,
    ) -> None:
        """Count the jobs written (``results`` is empty for ``insert_many_fast``: all were)."""
        if error is not None:
            return
        if not results:
            for job in jobs:
                self.inserted.labels(job.kind, job.queue).inc()
            return
        for job, result in zip(jobs, results, strict=False):
            if not result.unique_skipped_as_duplicate:
                self.inserted.labels(job.kind, job.queue).inc()

    def after_work(self, job: Job[Any], outcome: WorkOutcome) -> None:
        """Count the attempt by result and record its duration."""
        kind, queue, result = job.kind, job.queue, outcome.result
        self.worked.labels(kind, queue, result).inc()
        self.duration.labels(kind, queue).observe(max(outcome.duration, 0.0))
        if outcome.failed:
            self.failed.labels(kind, queue).inc()
            if result == "retried":
                self.retried.labels(kind, queue).inc()


class WorkerCollector:
    """Collects ``sa_river_leader`` and ``sa_river_jobs_running`` of one worker on each scrape.

    Register it in a registry (``registry.register(WorkerCollector(worker))``); one per
    registry. Reading both is free: no database query.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def describe(self) -> Iterable[Metric]:
        """The metric families collected, without samples (for the registry's checks)."""
        return [
            GaugeMetricFamily("sa_river_leader", _LEADER_HELP),
            GaugeMetricFamily("sa_river_jobs_running", _RUNNING_HELP),
        ]

    def collect(self) -> Iterable[Metric]:
        """The current values."""
        running = len(self.worker.running_job_ids())
        yield GaugeMetricFamily(
            "sa_river_leader", _LEADER_HELP, value=1.0 if self.worker.is_leader() else 0.0
        )
        yield GaugeMetricFamily("sa_river_jobs_running", _RUNNING_HELP, value=float(running))


_LEADER_HELP = "1 while this process's worker is the elected leader, else 0."
_RUNNING_HELP = "Attempts this process's worker has in flight (fetched, not yet finished)."
_QUEUE_JOBS_HELP = (
    "Jobs not yet finalized, per queue and state, counted in the database "
    "(the same for every process: aggregate with max)."
)
_QUEUE_FAILURES_HELP = "Queries counting sa_river_queue_jobs that failed (timeout, database down)."


class QueueDepthCollector:
    """Collects ``sa_river_queue_jobs{queue, state}`` from the database on scrape.

    The count runs at most once per ``interval`` seconds (scrapes in between reuse its answer,
    and concurrent scrapes wait for one query rather than each running its own), bounded by a
    ``statement_timeout`` of ``timeout`` seconds. A failed count is logged, counted in
    ``sa_river_queue_jobs_query_failures_total``, and leaves the gauge out of the scrape; it
    too is remembered for ``interval`` seconds, so a struggling database is not hammered.

    ``engine`` should be one of its own (a small pool, a ``connect_timeout``):
    :func:`start_metrics_server` builds such an engine when given only a worker.
    """

    def __init__(self, engine: Engine, *, interval: float = 5.0, timeout: float = 3.0) -> None:
        if interval < 0 or timeout <= 0:
            raise ValueError("interval must be >= 0 and timeout > 0")
        self.engine = engine
        self.interval = interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._counts: dict[str, dict[JobState, int]] | None = None
        self._counted_at: float | None = None
        self._failures = 0

    def describe(self) -> Iterable[Metric]:
        """The metric families collected, without samples (no query is run)."""
        return [
            GaugeMetricFamily("sa_river_queue_jobs", _QUEUE_JOBS_HELP, labels=("queue", "state")),
            CounterMetricFamily("sa_river_queue_jobs_query_failures", _QUEUE_FAILURES_HELP),
        ]

    def collect(self) -> Iterable[Metric]:
        """The counts (from the database, or from a count less than ``interval`` old)."""
        counts = self.counts()
        if counts is not None:
            family = GaugeMetricFamily(
                "sa_river_queue_jobs", _QUEUE_JOBS_HELP, labels=("queue", "state")
            )
            for queue in sorted(counts):
                by_state = counts[queue]
                for state in UNFINALIZED_STATES:
                    family.add_metric([queue, state.value], float(by_state.get(state, 0)))
            yield family
        yield CounterMetricFamily(
            "sa_river_queue_jobs_query_failures", _QUEUE_FAILURES_HELP, value=self._failures
        )

    def counts(self) -> dict[str, dict[JobState, int]] | None:
        """``queue -> state -> count`` of unfinished jobs, None if the last count failed.

        Every queue of ``river_queue`` is present, with an empty mapping if it has no jobs.
        """
        # A scrape that cannot get the lock while another one counts reuses the last answer.
        if not self._lock.acquire(timeout=self.timeout + 1.0):
            return self._counts
        try:
            now = time.monotonic()
            if self._counted_at is not None and now - self._counted_at < self.interval:
                return self._counts
            try:
                with self.engine.begin() as conn:
                    set_local_statement_timeout(conn, self.timeout)
                    counts = job_count_by_queue_and_state(conn, states=UNFINALIZED_STATES)
                    for name in queue_list_names(conn):
                        counts.setdefault(name, {})
            except SQLAlchemyError as exc:
                self._failures += 1
                counts = None
                logger.warning(
                    "could not count the jobs per queue for sa_river_queue_jobs: %s",
                    exc,
                    extra={"event": "metrics_query_failed"},
                )
            self._counts = counts
            self._counted_at = time.monotonic()
            return counts
        finally:
            self._lock.release()


class MetricsServer:
    """A running ``/metrics`` endpoint, as returned by :func:`start_metrics_server`.

    :meth:`stop` (or leaving a ``with`` block) shuts the server down, unregisters the hook
    and removes the metrics it added from the registry.
    """

    def __init__(
        self,
        httpd: WSGIServer,
        thread: threading.Thread,
        *,
        registry: CollectorRegistry,
        hook: PrometheusMetrics,
        collectors: Sequence[WorkerCollector | QueueDepthCollector],
        own_engine: Engine | None,
    ) -> None:
        self.registry = registry
        self.hook = hook
        self._httpd = httpd
        self._thread = thread
        self._collectors = tuple(collectors)
        self._own_engine = own_engine
        self._stopped = False
        self._stop_lock = threading.Lock()

    @property
    def host(self) -> str:
        """The address served (as given, e.g. ``0.0.0.0``)."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port served (the one picked by the system when 0 was asked for)."""
        return int(self._httpd.server_port)

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and undo what :func:`start_metrics_server` registered; idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        remove_hook(self.hook)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)
        for collector in self._collectors:
            _unregister(self.registry, collector)
        self.hook.unregister()
        if self._own_engine is not None:
            self._own_engine.dispose()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _unregister(registry: CollectorRegistry, collector: Any) -> None:
    with contextlib.suppress(KeyError):  # already removed
        registry.unregister(collector)


def start_metrics_server(
    port: int,
    addr: str = "0.0.0.0",
    *,
    worker: Worker | None = None,
    engine: Engine | None = None,
    registry: CollectorRegistry | None = None,
    queue_depth_interval: float = 5.0,
    queue_depth_timeout: float = 3.0,
) -> MetricsServer:
    """Serve ``http://addr:port/metrics`` on a background thread; returns the running server.

    Installs a :class:`PrometheusMetrics` hook (job counters and durations) and, with
    ``worker``, a :class:`WorkerCollector` (``sa_river_leader``, ``sa_river_jobs_running``).
    ``sa_river_queue_jobs`` is collected from ``engine`` if given, else, with a ``worker``,
    from a one-connection engine of its own on the worker's database (``connect_timeout``
    set, disposed by :meth:`MetricsServer.stop`); with neither, it is not collected.
    ``registry`` defaults to prometheus_client's global ``REGISTRY`` (which also carries the
    process and Python metrics); pass a fresh ``CollectorRegistry`` to serve only these.

    ``port`` 0 picks a free port (see :attr:`MetricsServer.port`). A port that cannot be bound
    raises ``OSError`` and leaves nothing registered. Call :meth:`MetricsServer.stop` when done
    (e.g. after ``worker.run()`` returns); one server per registry at a time.
    """
    chosen = REGISTRY if registry is None else registry
    own_engine: Engine | None = None
    if engine is None and worker is not None:
        own_engine = engine = create_engine(
            worker.url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=queue_depth_timeout,
            pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, round(queue_depth_timeout))},
        )
    collectors: list[WorkerCollector | QueueDepthCollector] = []
    if worker is not None:
        collectors.append(WorkerCollector(worker))
    if engine is not None:
        collectors.append(
            QueueDepthCollector(engine, interval=queue_depth_interval, timeout=queue_depth_timeout)
        )
    hook = PrometheusMetrics(chosen)
    registered: list[WorkerCollector | QueueDepthCollector] = []
    try:
        for collector in collectors:
            chosen.register(collector)
            registered.append(collector)
        httpd, thread = _start_http_server(port, addr, registry=chosen)
    except BaseException:
        for collector in registered:
            _unregister(chosen, collector)
        hook.unregister()
        if own_engine is not None:
            own_engine.dispose()
        raise
    add_hook(hook)
    server = MetricsServer(
        httpd, thread, registry=chosen, hook=hook, collectors=collectors, own_engine=own_engine
    )
    logger.info(
        "serving metrics on %s",
        server.url,
        extra={"event": "metrics_serving"},
    )
    return server
