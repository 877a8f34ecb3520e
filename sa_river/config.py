"""Worker settings, their defaults, and validation that names the bad field (internal)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sa_river.errors import ConfigError, InvalidJobError
from sa_river.options import validate_queue
from sa_river.retry import RetryPolicy, default_retry_policy

__all__ = [
    "COMPLETER_BATCH_SIZE_DEFAULT",
    "COMPLETER_FLUSH_INTERVAL_DEFAULT",
    "FETCH_COOLDOWN_DEFAULT",
    "FETCH_POLL_INTERVAL_DEFAULT",
    "HEARTBEAT_INTERVAL_DEFAULT",
    "JOB_TIMEOUT_DEFAULT",
    "POOL_TIMEOUT_DEFAULT",
    "QUEUES_DEFAULT",
    "SCHEDULER_INTERVAL_DEFAULT",
    "SHUTDOWN_TIMEOUT_DEFAULT",
    "WorkerConfig",
    "new_client_id",
]

QUEUES_DEFAULT: Mapping[str, int] = {"default": 100}
"""One queue, ``default``, with 100 slots, as River's own examples configure it: a fetch takes
up to as many jobs as there are free slots, so fewer slots mean more, smaller fetches (10
slots drain a backlog at under half the rate of 100). Threads for sync handlers are made only
as jobs need them; lower it for handlers that each hold scarce resources."""
FETCH_POLL_INTERVAL_DEFAULT = 1.0
FETCH_COOLDOWN_DEFAULT = 0.05
JOB_TIMEOUT_DEFAULT: timedelta | None = timedelta(seconds=60)
SHUTDOWN_TIMEOUT_DEFAULT = 30.0
COMPLETER_FLUSH_INTERVAL_DEFAULT = 0.1
COMPLETER_BATCH_SIZE_DEFAULT = 100
HEARTBEAT_INTERVAL_DEFAULT = 5.0
POOL_TIMEOUT_DEFAULT = 5.0
ELECT_INTERVAL_DEFAULT = 5.0
LEADER_TTL_DEFAULT = 15.0
RESCUER_INTERVAL_DEFAULT = 30.0
RESCUE_HEARTBEAT_TTL_DEFAULT = 30.0
RESCUE_STUCK_AFTER_DEFAULT = 3600.0
CLEANER_INTERVAL_DEFAULT = 30.0
COMPLETED_RETENTION_DEFAULT = 24 * 3600.0
CANCELLED_RETENTION_DEFAULT = 24 * 3600.0
DISCARDED_RETENTION_DEFAULT = 7 * 24 * 3600.0
QUEUE_CLEANER_INTERVAL_DEFAULT = 60.0
QUEUE_RETENTION_DEFAULT = 24 * 3600.0
# A retry or snooze due sooner than this is stored as ``available`` (with its future
# ``scheduled_at``) instead of waiting for the leader's scheduler, as River does.
SCHEDULER_INTERVAL_DEFAULT = 5.0


def new_client_id() -> str:
    """A unique, readable id for one worker runner: ``host_pid_random``."""
    host = socket.gethostname()[:80] or "host"
    return f"{host}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a :class:`~sa_river.Worker` can be tuned with; times are in seconds.

    - ``queues``: queue name → how many of its jobs run at once;
    - ``fetch_poll_interval``: fetch at least this often even when no NOTIFY arrives;
    - ``fetch_cooldown``: with a backlog, the shortest pause between two fetches of a queue;
    - ``poll_only``: never LISTEN (for PgBouncer in transaction mode);
    - ``job_timeout``: default per-attempt timeout (``None``: no timeout);
    - ``shutdown_timeout``: how long ``stop()`` lets running jobs finish;
    - ``completer_flush_interval`` / ``completer_batch_size``: completion batching;
    - ``heartbeat_interval``: how often the runner records that it is alive;
    - ``pool_timeout``: how long any internal service waits for a pooled connection;
    - ``retry_policy``: default backoff for failed jobs;
    - ``elect_interval`` / ``leader_ttl``: how often the elector tries or renews, and how long
      a term lasts without renewal;
    - ``scheduler_interval``: how often the leader makes due scheduled/retryable jobs available
      (and the horizon under which a retry is stored ``available`` straight away);
    - ``rescuer_interval``, ``rescue_heartbeat_ttl`` (a running job whose worker has not
      heartbeated for this long is rescued), ``rescue_stuck_after`` (for a running job whose
      worker never heartbeated in ``sa_river_client``, e.g. a River Go client);
    - ``cleaner_interval`` and ``completed_retention`` / ``cancelled_retention`` /
      ``discarded_retention`` (seconds; 0 keeps such jobs forever);
    - ``queue_cleaner_interval`` / ``queue_retention``: idle ``river_queue`` rows removed;
    - ``maintenance``: run the leader election and leader-only services at all.
    """

    queues: Mapping[str, int] = field(default_factory=lambda: dict(QUEUES_DEFAULT))
    fetch_poll_interval: float = FETCH_POLL_INTERVAL_DEFAULT
    fetch_cooldown: float = FETCH_COOLDOWN_DEFAULT
    poll_only: bool = False
    job_timeout: timedelta | None = JOB_TIMEOUT_DEFAULT
    shutdown_timeout: float = SHUTDOWN_TIMEOUT_DEFAULT
    completer_flush_interval: float = COMPLETER_FLUSH_INTERVAL_DEFAULT
    completer_batch_size: int = COMPLETER_BATCH_SIZE_DEFAULT
    heartbeat_interval: float = HEARTBEAT_INTERVAL_DEFAULT
    pool_timeout: float = POOL_TIMEOUT_DEFAULT
    scheduler_interval: float = SCHEDULER_INTERVAL_DEFAULT
    elect_interval: float = ELECT_INTERVAL_DEFAULT
    leader_ttl: float = LEADER_TTL_DEFAULT
    rescuer_interval: float = RESCUER_INTERVAL_DEFAULT
    rescue_heartbeat_ttl: float = RESCUE_HEARTBEAT_TTL_DEFAULT
    rescue_stuck_after: float = RESCUE_STUCK_AFTER_DEFAULT
    cleaner_interval: float = CLEANER_INTERVAL_DEFAULT
    completed_retention: float = COMPLETED_RETENTION_DEFAULT
    cancelled_retention: float = CANCELLED_RETENTION_DEFAULT
    discarded_retention: float = DISCARDED_RETENTION_DEFAULT
    queue_cleaner_interval: float = QUEUE_CLEANER_INTERVAL_DEFAULT
    queue_retention: float = QUEUE_RETENTION_DEFAULT
    maintenance: bool = True
    retry_policy: RetryPolicy = default_retry_policy
    client_id: str = field(default_factory=new_client_id)

    def __post_init__(self) -> None:
        if not isinstance(self.queues, Mapping) or not self.queues:
            raise ConfigError("queues", "give at least one queue, e.g. {'default': 10}")
        for name, limit in self.queues.items():
            try:
                validate_queue(name)
            except InvalidJobError as exc:
                raise ConfigError("queues", f"bad queue name {name!r}: {exc}") from None
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigError(
                    "queues", f"limit of queue {name!r} must be a positive integer, got {limit!r}"
                )
        for name in (
            "fetch_poll_interval",
            "fetch_cooldown",
            "shutdown_timeout",
            "completer_flush_interval",
            "heartbeat_interval",
            "pool_timeout",
            "scheduler_interval",
            "elect_interval",
            "leader_ttl",
            "rescuer_interval",
            "rescue_heartbeat_ttl",
            "rescue_stuck_after",
            "cleaner_interval",
            "completed_retention",
            "cancelled_retention",
            "discarded_retention",
            "queue_cleaner_interval",
            "queue_retention",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(name, f"must be a non-negative number, got {value!r}")
        if self.fetch_poll_interval <= 0:
            raise ConfigError("fetch_poll_interval", "must be positive")
        for name in (
            "heartbeat_interval",
            "elect_interval",
            "rescuer_interval",
            "cleaner_interval",
            "queue_cleaner_interval",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)!r}")
        if self.rescue_heartbeat_ttl < 3 * self.heartbeat_interval:
            raise ConfigError(
                "rescue_heartbeat_ttl",
                f"must be at least 3 x heartbeat_interval ({3 * self.heartbeat_interval:g}s), "
                f"got {self.rescue_heartbeat_ttl:g}s: live workers' jobs would be rescued",
            )
        if self.leader_ttl <= self.elect_interval + 1:
            raise ConfigError(
                "leader_ttl",
                f"must exceed elect_interval + 1 s so a leader renews before its term ends, "
                f"got ttl={self.leader_ttl} interval={self.elect_interval}",
            )
        if self.completer_batch_size < 1:
            raise ConfigError("completer_batch_size", "must be at least 1")
        if self.job_timeout is not None and self.job_timeout <= timedelta(0):
            raise ConfigError("job_timeout", f"must be positive or None, got {self.job_timeout}")
        if not 0 < len(self.client_id) < 128:
            raise ConfigError("client_id", "must be 1..127 characters")

    @property
    def total_slots(self) -> int:
        return sum(self.queues.values())
