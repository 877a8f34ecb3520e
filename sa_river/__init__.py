"""sa_river: a PostgreSQL job queue that lives inside SQLAlchemy, on River's tables.

Only the names in ``__all__`` are public; every other module is internal.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sa_river.args import JobArgs
from sa_river.config import WorkerConfig
from sa_river.control import (
    JobFilters,
    cancel_job,
    cancel_job_async,
    cancel_jobs,
    cancel_jobs_async,
    complete_in,
    complete_in_async,
    delete_job,
    delete_job_async,
    delete_jobs,
    delete_jobs_async,
    get_job,
    get_job_async,
    list_jobs,
    list_jobs_async,
    pause_queue,
    pause_queue_async,
    resume_queue,
    resume_queue_async,
    retry_job,
    retry_job_async,
    retry_jobs,
    retry_jobs_async,
)
from sa_river.enqueue import (
    InsertManyParams,
    insert,
    insert_async,
    insert_many,
    insert_many_async,
    insert_many_fast,
    insert_many_fast_async,
)
from sa_river.errors import (
    ConfigError,
    FieldError,
    InvalidJobError,
    JobRunningError,
    JobWaitTimeout,
    LifespanError,
    SaRiverError,
    SchemaNotReadyError,
    UnknownJobKindError,
    UnserializableArgsError,
)
from sa_river.hooks import (
    Hook,
    InsertingJob,
    WorkOutcome,
    add_hook,
    hooks_installed,
    remove_hook,
)
from sa_river.middleware import Middleware
from sa_river.options import InsertOpts, UniqueOpts
from sa_river.periodic import PeriodicJob
from sa_river.retry import RetryPolicy, default_retry_policy
from sa_river.staging import StagedJob, enable_insert_on_flush, insert_on_flush
from sa_river.types import AttemptError, InsertResult, JobRow, JobState
from sa_river.waiting import wait_for, wait_for_async
from sa_river.worker import Worker
from sa_river.workers import Job, JobCancel, JobDiscard, JobRetry, JobSnooze, Workers

try:
    __version__ = version("sa_river")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AttemptError",
    "ConfigError",
    "FieldError",
    "Hook",
    "InsertManyParams",
    "InsertOpts",
    "InsertResult",
    "InsertingJob",
    "InvalidJobError",
    "Job",
    "JobArgs",
    "JobCancel",
    "JobDiscard",
    "JobFilters",
    "JobRetry",
    "JobRow",
    "JobRunningError",
    "JobSnooze",
    "JobState",
    "JobWaitTimeout",
    "LifespanError",
    "Middleware",
    "PeriodicJob",
    "RetryPolicy",
    "SaRiverError",
    "SchemaNotReadyError",
    "StagedJob",
    "UniqueOpts",
    "UnknownJobKindError",
    "UnserializableArgsError",
    "WorkOutcome",
    "Worker",
    "WorkerConfig",
    "Workers",
    "__version__",
    "add_hook",
    "cancel_job",
    "cancel_job_async",
    "cancel_jobs",
    "cancel_jobs_async",
    "complete_in",
    "complete_in_async",
    "default_retry_policy",
    "delete_job",
    "delete_job_async",
    "delete_jobs",
    "delete_jobs_async",
    "enable_insert_on_flush",
    "get_job",
    "get_job_async",
    "hooks_installed",
    "insert",
    "insert_async",
    "insert_many",
    "insert_many_async",
    "insert_many_fast",
    "insert_many_fast_async",
    "insert_on_flush",
    "list_jobs",
    "list_jobs_async",
    "pause_queue",
    "pause_queue_async",
    "remove_hook",
    "resume_queue",
    "resume_queue_async",
    "retry_job",
    "retry_job_async",
    "retry_jobs",
    "retry_jobs_async",
    "wait_for",
    "wait_for_async",
]
