"""Decoding ``river_job`` rows into :class:`~sa_river.types.JobRow` (internal).

Shared by the statements of the ``job_*`` modules that return whole rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy import (
    Row,
    Table,
)

from sa_river.models import RiverJob
from sa_river.types import AttemptError, JobRow, JobState
from sa_river.unique import bitmask_states

__all__ = [
    "job_row_from_row",
    "job_row_from_values",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]


def job_row_from_row(row: Row[Any] | Mapping[str, Any]) -> JobRow:
    """Decode a ``river_job`` result row into a :class:`~sa_river.types.JobRow`."""
    m = row._mapping if isinstance(row, Row) else row
    unique_states = m["unique_states"]
    return JobRow(
        id=m["id"],
        state=JobState(m["state"]),
        attempt=m["attempt"],
        max_attempts=m["max_attempts"],
        attempted_at=m["attempted_at"],
        created_at=m["created_at"],
        finalized_at=m["finalized_at"],
        scheduled_at=m["scheduled_at"],
        priority=m["priority"],
        args=m["args"],
        attempted_by=list(m["attempted_by"] or ()),
        errors=[AttemptError.from_json(e) for e in m["errors"] or ()],
        kind=m["kind"],
        metadata=m["metadata"],
        queue=m["queue"],
        tags=list(m["tags"] or ()),
        unique_key=bytes(m["unique_key"]) if m["unique_key"] is not None else None,
        unique_states=bitmask_states(unique_states) if unique_states is not None else None,
    )


_JOB_COLUMNS = tuple(c.key for c in job_table.c)
_JOB_ROW_FIELDS = tuple(f.name for f in fields(JobRow))
assert (*_JOB_ROW_FIELDS[:13], "metadata", *_JOB_ROW_FIELDS[14:]) == _JOB_COLUMNS, _JOB_COLUMNS
_new_job_row = object.__new__


def job_row_from_values(values: Sequence[Any]) -> JobRow:
    """:func:`job_row_from_row` for a row whose first columns are ``river_job``'s, in table order
    (``select(job_table)``, ``RETURNING *``): the hot paths' decoder.

    Positional, and it fills the frozen dataclass's ``__dict__`` directly instead of going
    through the generated ``__init__`` (18 ``object.__setattr__`` calls): the same object,
    about three times cheaper. Columns are already Python values (the state enum is decoded by
    its SQLAlchemy type).
    """
    (
        id_,
        state,
        attempt,
        max_attempts,
        attempted_at,
        created_at,
        finalized_at,
        scheduled_at,
        priority,
        args,
        attempted_by,
        errors,
        kind,
        metadata,
        queue,
        tags,
        unique_key,
        unique_states,
    ) = values[:18]
    row = _new_job_row(JobRow)
    row.__dict__.update(
        id=id_,
        state=state if state.__class__ is JobState else JobState(state),
        attempt=attempt,
        max_attempts=max_attempts,
        attempted_at=attempted_at,
        created_at=created_at,
        finalized_at=finalized_at,
        scheduled_at=scheduled_at,
        priority=priority,
        args=args,
        attempted_by=attempted_by if attempted_by is not None else [],
        errors=[AttemptError.from_json(e) for e in errors] if errors else [],
        kind=kind,
        metadata=metadata,
        queue=queue,
        tags=tags if tags is not None else [],
        unique_key=bytes(unique_key) if unique_key is not None else None,
        unique_states=bitmask_states(unique_states) if unique_states is not None else None,
    )
    return row
