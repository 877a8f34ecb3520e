"""sa_river: a PostgreSQL job queue that lives inside SQLAlchemy, on River's tables.

Only the names in ``__all__`` are public; every other module is internal.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from sa_river.args import JobArgs
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
    InvalidJobError,
    SaRiverError,
    SchemaNotReadyError,
    UnknownJobKindError,
    UnserializableArgsError,
)
from sa_river.options import InsertOpts, UniqueOpts
from sa_river.types import AttemptError, InsertResult, JobRow, JobState

try:
    __version__ = version("sa_river")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AttemptError",
    "InsertManyParams",
    "InsertOpts",
    "InsertResult",
    "InvalidJobError",
    "JobArgs",
    "JobRow",
    "JobState",
    "SaRiverError",
    "SchemaNotReadyError",
    "UniqueOpts",
    "UnknownJobKindError",
    "UnserializableArgsError",
    "__version__",
    "insert",
    "insert_async",
    "insert_many",
    "insert_many_async",
    "insert_many_fast",
    "insert_many_fast_async",
]
