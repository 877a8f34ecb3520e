"""The runner: ``Worker`` fetches, runs and completes jobs on an Engine of its own.

>>> worker = sa_river.Worker("postgresql+psycopg://app@db/app", workers,
...                          queues={"default": 10, "mail": 5})        # doctest: +SKIP
>>> worker.run()          # blocks; SIGTERM/SIGINT stop it gracefully  # doctest: +SKIP

or, embedded in an application::

    worker.start()
    ...
    worker.stop()         # finishes running jobs (up to shutdown_timeout), then returns

The runner never uses the application's connection pool: it builds its own Engine from the
URL (or from an Engine's URL), sized to its own services, so an application that holds every
connection of its pool cannot stop jobs from being fetched or completed (``docs/design.md``,
"Why the runner has its own pool").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from sa_river.config import QUEUES_DEFAULT, WorkerConfig
from sa_river.elector import Elector
from sa_river.errors import ConfigError, LifespanError, SchemaNotReadyError, one_line
from sa_river.hooks import add_hook, remove_hook
from sa_river.maintenance import QueueMaintainer
from sa_river.notifier import Notifier
from sa_river.periodic import PeriodicJob, validate_periodic_jobs
from sa_river.queries.client import missing_tables
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.queries.notify import TOPIC_CONTROL, TOPIC_INSERT, TOPIC_LEADERSHIP
from sa_river.retry import default_retry_policy
from sa_river.service import Service
from sa_river.urls import runner_url
from sa_river.worker.completer import BatchCompleter
from sa_river.worker.executor import Executor
from sa_river.worker.heartbeat import Heartbeat
from sa_river.worker.invocation import HandlerSessions
from sa_river.worker.producer import Producer
from sa_river.workers import Workers

__all__ = ["Worker", "runner_pool_size"]

_REQUIRED_TABLES = ("river_job", "river_leader", "river_queue", "sa_river_client")

logger = logging.getLogger("sa_river.worker")

_FIXED_CONNECTIONS = 6
"""Connections of the runner's pool besides one per producer: the completer, the heartbeat,
the elector, two for the leader's maintenance services (each holds one only for its statement,
and they seldom run at once), and one for a release or schema check at start and stop."""

_POOL_OVERFLOW = 4
"""Extra connections for a burst (maintenance services running together, a reconnect while an
old connection is still being closed), closed again when returned."""


def runner_pool_size(config: WorkerConfig) -> int:
    """Connections the runner keeps in its own pool: one per queue's producer (each holds its
    connection between fetches) plus :data:`_FIXED_CONNECTIONS`."""
    return len(config.queues) + _FIXED_CONNECTIONS


class Worker:
    """Runs the jobs of ``queues`` with the handlers in ``workers``.

    ``database`` is a URL or an Engine; the runner builds an Engine of its own either way.
    Settings are :class:`~sa_river.config.WorkerConfig` fields, given as ``config=`` or as
    keyword arguments (``job_timeout=``, ``poll_only=``, ``shutdown_timeout=``...). What the
    registry carries (periodic jobs, retry policy, hooks, middleware, error handler, lifespan,
    session factory) applies too; ``periodic_jobs`` and ``retry_policy`` may be given here or
    there, not both.
    """

    def __init__(
        self,
        database: str | URL | Engine,
        workers: Workers,
        queues: Mapping[str, int] | None = None,
        *,
        config: WorkerConfig | None = None,
        periodic_jobs: Sequence[PeriodicJob] = (),
        **settings: Any,
    ) -> None:
        if config is None:
            # An empty mapping or a non-mapping is WorkerConfig's to reject (naming "queues"),
            # not to be replaced by the default or to fail inside dict().
            chosen: Any = dict(QUEUES_DEFAULT) if queues is None else queues
            if isinstance(chosen, Mapping):
                chosen = dict(chosen)
            config = WorkerConfig(queues=chosen, **settings)
        elif queues is not None or settings:
            raise ConfigError("config", "pass either config= or queues/settings, not both")
        if periodic_jobs and workers.periodic_jobs:
            raise ConfigError(
                "periodic_jobs", "given to both Workers(...) and Worker(...): give them once"
            )
        if workers.retry_policy is not None:
            if config.retry_policy is not default_retry_policy:
                raise ConfigError(
                    "retry_policy", "given to both Workers(...) and Worker(...): give it once"
                )
            config = dataclasses.replace(config, retry_policy=workers.retry_policy)
        self.config = config
        self.workers = workers
        self.url = runner_url(database)
        self._periodic_jobs = validate_periodic_jobs(periodic_jobs or workers.periodic_jobs)
        if self._periodic_jobs and not config.maintenance:
            raise ConfigError("periodic_jobs", "periodic jobs need maintenance=True (a leader)")
        self._engine = create_engine(
            self.url,
            pool_size=runner_pool_size(config),
            max_overflow=_POOL_OVERFLOW,
            pool_timeout=config.pool_timeout,
            pool_pre_ping=True,
        )
        self._completer = BatchCompleter(
            self._engine,
            flush_interval=config.completer_flush_interval,
            batch_size=config.completer_batch_size,
            give_up_after=config.shutdown_timeout,
        )
        self._sessions = HandlerSessions(self.url, workers.session_factory, config.total_slots)
        self._executor = Executor(
            workers,
            self._completer.add,
            threads=config.total_slots,
            default_timeout=config.job_timeout,
            retry_policy=config.retry_policy,
            scheduler_interval=config.scheduler_interval,
            sessions=self._sessions,
        )
        self._lifespan: Any = None  # the entered context manager, until stop
        self._producers = {
            queue: Producer(
                self._engine,
                queue=queue,
                limit=limit,
                client_id=config.client_id,
                execute=self._executor.execute_many,
                poll_interval=config.fetch_poll_interval,
                cooldown=config.fetch_cooldown,
            )
            for queue, limit in config.queues.items()
        }
        self._heartbeat = Heartbeat(
            self._engine,
            client_id=config.client_id,
            queues=list(config.queues),
            interval=config.heartbeat_interval,
            on_registered=self._start_producers,
            on_superseded=self._on_superseded,
        )
        # Both None without maintenance: this runner then never leads.
        self._elector: Elector | None = None
        self._maintainer: QueueMaintainer | None = None
        if config.maintenance:
            self._elector = Elector(
                self._engine,
                leader_id=config.client_id,
                interval=config.elect_interval,
                ttl=config.leader_ttl,
                attempt_timeout=min(5.0, config.leader_ttl / 3),
            )
            self._maintainer = QueueMaintainer(self._maintenance_services)
            self._elector.subscribe(self._maintainer.on_leadership)
        # None in poll-only mode: producers then wake on their poll interval alone.
        self._notifier: Notifier | None = None
        if not config.poll_only:
            self._notifier = Notifier(self.url, connect_timeout=config.pool_timeout)
            self._notifier.subscribe(TOPIC_INSERT, self._on_insert)
            self._notifier.subscribe(TOPIC_CONTROL, self._on_control)
            if self._elector is not None:
                self._notifier.subscribe(TOPIC_LEADERSHIP, self._elector.on_leadership_notification)
        # Reentrant: start() holds it throughout, and its first heartbeat starts the producers
        # (_start_producers) on the same thread. A stop() arriving mid-start (a signal) waits
        # for the start to finish, then undoes all of it.
        self._state_lock = threading.RLock()
        self._started = False
        self._stopping = False
        self._hard_stop = threading.Event()
        self.stopped = threading.Event()

    @property
    def engine(self) -> Engine:
        """The runner's own Engine: its pool serves only this runner's services (warm it, or
        read ``engine.pool.status()``; enqueue through the application's engine instead)."""
        return self._engine

    @property
    def client_id(self) -> str:
        """This runner's id, recorded in ``attempted_by`` of every job it fetches."""
        return self.config.client_id

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start fetching and working in background threads; returns at once.

        Raises :class:`~sa_river.SchemaNotReadyError` if the river tables are missing. An
        unreachable database does not stop the start: every loop retries with backoff.
        """
        with self._state_lock:
            if self._started or self._stopping:
                return
            self._check_schema()
            self._executor.start()
            try:
                self._enter_lifespan()
            except BaseException:
                self._executor.shutdown()
                self._engine.dispose()
                raise
            for hook in self.workers.hooks:
                add_hook(hook)
            self._started = True
            self._start_services()

    def _enter_lifespan(self) -> None:
        """Enter the registry's lifespan: a sync one here, an async one on the event loop
        async handlers run on (so what it opens belongs to that loop); its value becomes
        every job's ``context``."""
        lifespan = self.workers.lifespan
        if lifespan is None:
            return
        name = getattr(lifespan, "__qualname__", repr(lifespan))
        try:
            manager = lifespan()
            if hasattr(manager, "__aenter__"):
                value = self._executor.run_coroutine(manager.__aenter__())
            elif hasattr(manager, "__enter__"):
                value = manager.__enter__()
            else:
                raise TypeError(
                    f"it returned {type(manager).__name__}, not a context manager (decorate it "
                    "with @contextlib.contextmanager or @contextlib.asynccontextmanager)"
                )
        except Exception as exc:
            raise LifespanError(
                f"the lifespan {name} failed as the worker started: {type(exc).__name__}: {exc}"
            ) from exc
        self._lifespan = manager
        self._executor.context = value

    def _exit_lifespan(self) -> None:
        manager, self._lifespan = self._lifespan, None
        if manager is None:
            return
        try:
            if hasattr(manager, "__aexit__"):
                self._executor.run_coroutine(manager.__aexit__(None, None, None))
            else:
                manager.__exit__(None, None, None)
        except Exception:
            logger.exception(
                "worker %s: the lifespan raised as it ended",
                self.client_id,
                extra={"event": "lifespan_failed"},
            )

    def _start_services(self) -> None:
        config = self.config
        self._completer.start()
        if self._notifier is not None:
            self._notifier.start()
        try:
            # Register before fetching (the producers start once it has succeeded): a job
            # fetched before this start's row exists would look like a dead predecessor's.
            self._heartbeat.beat()
        except SQLAlchemyError as exc:
            logger.warning(
                "first heartbeat failed (%s); the heartbeat thread retries, and fetching "
                "starts once it succeeds",
                one_line(exc),
                extra={"event": "heartbeat_error"},
            )
        self._heartbeat.start()
        if self._elector is not None:
            self._elector.start()
        logger.info(
            "worker %s started: queues %s, %d handlers",
            self.client_id,
            dict(config.queues),
            len(self.workers),
            extra={"event": "worker_started"},
        )

    def _start_producers(self) -> None:
        """Called by the heartbeat once this start is registered (on its thread or ours)."""
        with self._state_lock:
            if self._stopping:
                return
            for producer in self._producers.values():
                producer.start()

    def _on_superseded(self) -> None:
        # A newer process registered this runner's id: the jobs this one started before
        # then are being rescued, so it must take no more under a name it no longer owns.
        threading.Thread(target=self.stop, name="sa_river.stopper", daemon=True).start()

    def wait_listening(self, timeout: float = 5.0) -> bool:
        """Wait until the LISTEN connection is up (true at once in poll-only mode)."""
        return self._notifier is None or self._notifier.connected.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: no new fetches, running jobs get ``shutdown_timeout`` to finish,
        then unfinished ones are cancelled and returned to ``available`` (attempt not
        counted), outcomes are flushed and connections closed.
        """
        with self._state_lock:
            if self._stopping or not self._started:
                already = self._stopping
                self._stopping = True
                if not already and not self._started:
                    self._close()
                    return
            else:
                self._stopping = True
                already = False
        if already:
            self.stopped.wait(timeout)
            return
        grace = self.config.shutdown_timeout if timeout is None else timeout
        for producer in self._producers.values():
            producer.stop(0)
        for producer in self._producers.values():
            # A fetch in flight is bounded by the pool and statement timeouts: wait for it,
            # or its jobs would land after the release below and stay running.
            producer.stop(self.config.pool_timeout + 30)
        # Resign early so another runner takes over leadership while our jobs finish.
        self._stop_leadership()
        deadline = time.monotonic() + grace
        while not self._executor.wait_idle(0.05):
            if self._hard_stop.is_set() or time.monotonic() >= deadline:
                break
        released = self._executor.release_all()
        self._completer.stop(grace + 5)
        left_running = bool(released) and not self._release(released)
        abandoned = self._completer.abandoned_count + sum(
            p.abandoned_count for p in self._producers.values()
        )
        if left_running or abandoned:
            self._heartbeat.keep_registration()
        self._close()
        logger.info("worker %s stopped", self.client_id, extra={"event": "worker_stopped"})

    def stop_hard(self) -> None:
        """Stop now: running jobs are cancelled and returned to ``available`` at once."""
        self._hard_stop.set()
        self.stop()

    def _release(self, released: list[AttemptOutcome]) -> bool:
        """Give unfinished jobs back; false if that could not be written."""
        try:
            with self._engine.begin() as conn:
                # Fenced by attempt: a job rescued and re-fetched elsewhere is left alone.
                job_set_state_if_running_many(conn, released)
        except SQLAlchemyError as exc:
            logger.error(
                "worker %s: could not return %d running jobs (%s); the rescuer will, once "
                "this runner's heartbeat is stale",
                self.client_id,
                len(released),
                one_line(exc),
                extra={"event": "jobs_release_failed"},
            )
            return False
        logger.warning(
            "worker %s: %d unfinished jobs returned to available",
            self.client_id,
            len(released),
            extra={"event": "jobs_released"},
        )
        return True

    def _stop_leadership(self) -> None:
        if self._elector is not None:
            self._elector.stop(self.config.leader_ttl)
        if self._maintainer is not None:
            self._maintainer.stop()

    def _check_schema(self) -> None:
        try:
            with self._engine.connect() as conn:
                missing = missing_tables(conn, _REQUIRED_TABLES)
        except SQLAlchemyError as exc:
            logger.warning(
                "could not check the river tables (%s); starting anyway, connections are retried",
                one_line(exc),
                extra={"event": "schema_check_failed"},
            )
            return
        if missing:
            self._engine.dispose()
            raise SchemaNotReadyError(
                f"the river tables are missing from {self.url.render_as_string()} "
                f"({', '.join(missing)}): run python -m sa_river migrate up"
            )

    def is_leader(self) -> bool:
        """True while this runner is the elected leader (and runs the maintenance)."""
        return self._elector is not None and self._elector.is_leader()

    def running_job_ids(self) -> list[int]:
        """Ids of the jobs this runner has in flight (fetched, outcome not yet reported)."""
        return self._executor.running_ids()

    def _maintenance_services(self) -> list[Service]:
        from sa_river.maintenance.cleaner import JobCleaner
        from sa_river.maintenance.queue_cleaner import QueueCleaner
        from sa_river.maintenance.rescuer import JobRescuer
        from sa_river.maintenance.scheduler import JobScheduler

        config = self.config
        is_leader = self.is_leader
        services: list[Service] = [
            JobScheduler(
                self._engine,
                interval=config.scheduler_interval,
                is_leader=is_leader,
                lookahead=config.scheduler_interval,
            ),
            JobRescuer(
                self._engine,
                interval=config.rescuer_interval,
                is_leader=is_leader,
                heartbeat_ttl=config.rescue_heartbeat_ttl,
                stuck_after=config.rescue_stuck_after,
                last_database_trouble=lambda: self._heartbeat.last_failure,
            ),
            JobCleaner(
                self._engine,
                interval=config.cleaner_interval,
                is_leader=is_leader,
                completed_retention=config.completed_retention,
                cancelled_retention=config.cancelled_retention,
                discarded_retention=config.discarded_retention,
            ),
            QueueCleaner(
                self._engine,
                interval=config.queue_cleaner_interval,
                is_leader=is_leader,
                retention=config.queue_retention,
            ),
        ]
        if self._periodic_jobs:
            from sa_river.maintenance.periodic import PeriodicJobEnqueuer

            services.append(
                PeriodicJobEnqueuer(self._engine, jobs=self._periodic_jobs, is_leader=is_leader)
            )
        return services

    def _close(self) -> None:
        self._stop_leadership()
        if self._notifier is not None:
            self._notifier.stop(2)
        self._heartbeat.stop(5)
        self._exit_lifespan()
        for hook in self.workers.hooks:
            remove_hook(hook)
        with contextlib.suppress(Exception):
            self._executor.run_coroutine(self._sessions.close_async())
        self._sessions.close()
        self._executor.shutdown()
        self._engine.dispose()
        self.stopped.set()

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Start and block until stopped. The first SIGINT/SIGTERM stops gracefully, a second
        one stops hard. Signal handlers are installed only on the main thread.
        """
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            previous = {
                sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
            }
        else:
            previous = {}
        try:
            self.start()
            while not self.stopped.wait(0.2):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            logger.warning("second signal: stopping hard", extra={"event": "worker_hard_stop"})
            self._hard_stop.set()
            return
        logger.info(
            "signal %s: stopping gracefully (again to stop hard)",
            signal.Signals(signum).name,
            extra={"event": "worker_soft_stop"},
        )
        threading.Thread(target=self.stop, name="sa_river.stopper", daemon=True).start()

    # -- notifications --------------------------------------------------------------------

    def _on_insert(self, payload: dict[str, Any] | None) -> None:
        if payload is None:
            for producer in self._producers.values():
                producer.notify_insert()
            return
        woken = self._producers.get(str(payload.get("queue")))
        if woken is not None:
            woken.notify_insert()

    def _on_control(self, payload: dict[str, Any] | None) -> None:
        if payload is None:
            return
        action = payload.get("action")
        if action == "cancel":
            job_id = payload.get("job_id")
            if isinstance(job_id, int):
                self._executor.cancel(job_id)
        elif action == "resume":
            resumed = self._producers.get(str(payload.get("queue")))
            if resumed is not None:
                resumed.notify_insert()
