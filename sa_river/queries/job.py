"""Statements on ``river_job`` (internal)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    LargeBinary,
    Row,
    SmallInteger,
    Table,
    Text,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIT, JSONB, TIMESTAMP
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import bindparam

from sa_river.models import JOB_STATE_ENUM, UNIQUE_INDEX_PREDICATE, RiverJob
from sa_river.queries.notify import TOPIC_INSERT, channel_expr
from sa_river.types import AttemptError, JobRow, JobState

__all__ = [
    "JobInsertParams",
    "job_get",
    "job_insert_copy",
    "job_insert_many",
    "job_row_from_row",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class JobInsertParams:
    """One validated job to insert; JSON values are already encoded text."""

    kind: str
    args: str
    queue: str
    priority: int
    max_attempts: int
    metadata: str
    tags: Sequence[str]
    scheduled_at: datetime | None
    pending: bool
    unique_key: bytes | None = None
    unique_states: str | None = None


def _insert_many_statement() -> Any:
    source = (
        func.unnest(
            bindparam("args", type_=ARRAY(Text)),
            bindparam("kind", type_=ARRAY(Text)),
            bindparam("max_attempts", type_=ARRAY(SmallInteger)),
            bindparam("metadata", type_=ARRAY(Text)),
            bindparam("priority", type_=ARRAY(SmallInteger)),
            bindparam("queue", type_=ARRAY(Text)),
            bindparam("scheduled_at", type_=ARRAY(TIMESTAMP(timezone=True))),
            bindparam("pending", type_=ARRAY(Boolean)),
            # River's trick: unnest flattens 2-D arrays, so tags travel comma-joined (a tag can't
            # contain a comma) and are split again here.
            bindparam("tags", type_=ARRAY(Text)),
            bindparam("unique_key", type_=ARRAY(LargeBinary)),
            bindparam("unique_states", type_=ARRAY(Text)),
        )
        .table_valued(
            "args",
            "kind",
            "max_attempts",
            "metadata",
            "priority",
            "queue",
            "scheduled_at",
            "pending",
            "tags",
            "unique_key",
            "unique_states",
            with_ordinality="ordinality",
            name="input",
        )
        .render_derived()
    )
    now = func.now()
    rows = select(
        cast(source.c.args, JSONB),
        source.c.kind,
        source.c.max_attempts,
        cast(source.c.metadata, JSONB),
        source.c.priority,
        source.c.queue,
        func.coalesce(source.c.scheduled_at, now),
        cast(
            case(
                (source.c.pending, literal("pending", Text)),
                (source.c.scheduled_at > now, literal("scheduled", Text)),
                else_=literal("available", Text),
            ),
            JOB_STATE_ENUM,
        ),
        func.string_to_array(source.c.tags, literal(",", Text)),
        source.c.unique_key,
        cast(source.c.unique_states, BIT(8)),
    ).order_by(source.c.ordinality)
    plain_insert = pg_insert(job_table).from_select(
        [
            "args",
            "kind",
            "max_attempts",
            "metadata",
            "priority",
            "queue",
            "scheduled_at",
            "state",
            "tags",
            "unique_key",
            "unique_states",
        ],
        rows,
    )
    # DO UPDATE (not DO NOTHING) so the existing duplicate comes back in RETURNING; xmax is
    # non-zero exactly for those rows.
    insert = plain_insert.on_conflict_do_update(
        index_elements=[job_table.c.unique_key],
        index_where=text(UNIQUE_INDEX_PREDICATE),
        set_={"kind": plain_insert.excluded.kind},
    ).returning(
        *job_table.c,
        literal_column("(xmax <> 0)", Boolean).label("unique_skipped_as_duplicate"),
    )
    inserted = insert.cte("inserted")
    # One notification per queue that received a new available job, sent in the inserting
    # transaction so listeners hear of it only on commit.
    woken = (
        select(inserted.c.queue)
        .where(
            inserted.c.state == JobState.AVAILABLE,
            inserted.c.unique_skipped_as_duplicate.is_(False),
        )
        .distinct()
        .subquery("woken")
    )
    notified = select(
        func.count(
            func.pg_notify(
                channel_expr(TOPIC_INSERT),
                cast(func.json_build_object(literal("queue", Text), woken.c.queue), Text),
            )
        )
    ).scalar_subquery()
    return select(inserted, notified.label("notified"))


_INSERT_MANY = _insert_many_statement()


def job_insert_many(
    conn: Connection, params: Sequence[JobInsertParams]
) -> list[tuple[JobRow, bool]]:
    """Insert jobs in one round trip; return ``(row, skipped_as_duplicate)`` in input order.

    Unique conflicts return the live duplicate instead of inserting. ``params`` must not hold
    two jobs with the same unique key (the caller folds those).
    """
    if not params:
        return []
    result = conn.execute(
        _INSERT_MANY,
        {
            "args": [p.args for p in params],
            "kind": [p.kind for p in params],
            "max_attempts": [p.max_attempts for p in params],
            "metadata": [p.metadata for p in params],
            "priority": [p.priority for p in params],
            "queue": [p.queue for p in params],
            "scheduled_at": [p.scheduled_at for p in params],
            "pending": [p.pending for p in params],
            "tags": [",".join(p.tags) for p in params],
            "unique_key": [p.unique_key for p in params],
            "unique_states": [p.unique_states for p in params],
        },
    ).all()
    if len(result) != len(params):
        raise RuntimeError(f"inserted {len(params)} jobs but {len(result)} rows came back")
    # New rows get ids in input order (the SELECT is ordered); duplicates are matched by key.
    duplicates = {r.unique_key: r for r in result if r.unique_skipped_as_duplicate}
    fresh = iter(sorted((r for r in result if not r.unique_skipped_as_duplicate), key=_id))
    out: list[tuple[JobRow, bool]] = []
    for p in params:
        if p.unique_key is not None and p.unique_key in duplicates:
            out.append((job_row_from_row(duplicates[p.unique_key]), True))
        else:
            out.append((job_row_from_row(next(fresh)), False))
    return out


def _id(row: Row[Any]) -> int:
    return int(row.id)


COPY_COLUMNS = (
    "args",
    "kind",
    "max_attempts",
    "metadata",
    "priority",
    "queue",
    "scheduled_at",
    "state",
    "tags",
)
COPY_STATEMENT = f"COPY river_job ({', '.join(COPY_COLUMNS)}) FROM STDIN"


def copy_rows(params: Sequence[JobInsertParams], now: datetime) -> list[tuple[Any, ...]]:
    """Rows for :data:`COPY_STATEMENT`; ``now`` is the database's transaction time."""
    rows = []
    for p in params:
        scheduled_at = p.scheduled_at or now
        if p.pending:
            state = JobState.PENDING.value
        elif scheduled_at > now:
            state = JobState.SCHEDULED.value
        else:
            state = JobState.AVAILABLE.value
        rows.append(
            (
                p.args,
                p.kind,
                p.max_attempts,
                p.metadata,
                p.priority,
                p.queue,
                scheduled_at,
                state,
                list(p.tags),
            )
        )
    return rows


def db_now_statement() -> Any:
    return select(func.now())


def notify_insert_statement() -> Any:
    """Notify each queue in the bound ``queues`` array once (after a COPY)."""
    queues = (
        func.unnest(bindparam("queues", type_=ARRAY(Text))).table_valued("queue").render_derived()
    )
    return select(
        func.count(
            func.pg_notify(
                channel_expr(TOPIC_INSERT),
                cast(func.json_build_object(literal("queue", Text), queues.c.queue), Text),
            )
        )
    )


def job_insert_copy(conn: Connection, params: Sequence[JobInsertParams]) -> int:
    """Insert jobs without unique options through ``COPY``; return how many were written."""
    if not params:
        return 0
    now = conn.execute(db_now_statement()).scalar_one()
    rows = copy_rows(params, now)
    driver_conn = conn.connection.driver_connection
    with driver_conn.cursor() as cursor, cursor.copy(COPY_STATEMENT) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)
    conn.execute(notify_insert_statement(), {"queues": available_queues(rows)})
    return len(rows)


def available_queues(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    state_at = COPY_COLUMNS.index("state")
    queue_at = COPY_COLUMNS.index("queue")
    return sorted({r[queue_at] for r in rows if r[state_at] == JobState.AVAILABLE.value})


def job_get(conn: Connection, job_id: int) -> JobRow | None:
    """The job with ``job_id``, or ``None``."""
    row = conn.execute(select(job_table).where(job_table.c.id == job_id)).first()
    return None if row is None else job_row_from_row(row)


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
        unique_states=_bitmask_states(unique_states) if unique_states is not None else None,
    )


def _bitmask_states(bitmask: str) -> frozenset[JobState]:
    from sa_river.unique import bitmask_states

    return bitmask_states(bitmask)
