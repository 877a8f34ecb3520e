"""Statements on ``river_job`` (internal)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Float,
    LargeBinary,
    Row,
    SmallInteger,
    Table,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIT, JSONB, TIMESTAMP
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import bindparam

from sa_river.models import JOB_STATE_ENUM, UNIQUE_INDEX_PREDICATE, RiverJob, RiverQueue
from sa_river.queries.notify import TOPIC_CONTROL, channel_expr, notify_insert
from sa_river.types import AttemptError, JobRow, JobState
from sa_river.unique import bitmask_states

__all__ = [
    "JobInsertParams",
    "job_get",
    "job_insert_copy",
    "job_insert_many",
    "job_row_from_row",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]
queue_table: Table = RiverQueue.__table__  # type: ignore[assignment]


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
        # Empty metadata and tags travel as NULL: psycopg quotes and escapes every text array
        # element with a regular expression, and "{}" and "" both need quoting.
        func.coalesce(cast(source.c.metadata, JSONB), literal_column("'{}'::jsonb")),
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
        func.coalesce(
            func.string_to_array(source.c.tags, literal(",", Text)),
            literal_column("'{}'::varchar[]"),
        ),
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
    # non-zero exactly for those rows. The update writes the row's own kind back: with
    # exclude_kind the duplicate may be of another kind, and EXCLUDED.kind would hand the
    # existing job to a different handler.
    insert = plain_insert.on_conflict_do_update(
        index_elements=[job_table.c.unique_key],
        index_where=text(UNIQUE_INDEX_PREDICATE),
        set_={"kind": job_table.c.kind},
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
    notified = select(func.count(notify_insert(woken.c.queue))).scalar_subquery()
    return select(inserted, notified.label("notified"))


_INSERT_MANY = _insert_many_statement()


def _insert_one_statement() -> Any:
    """One job as a plain ``INSERT ... VALUES``: the web-request case.

    The same columns, state rule, ``ON CONFLICT`` clause and notification as
    :func:`_insert_many_statement`, without the 11-array ``unnest`` a single row does not need.
    A job without a unique key never matches the unique index's predicate, so the clause costs
    nothing for it.
    """
    now = func.now()
    scheduled_at = bindparam("scheduled_at", type_=TIMESTAMP(timezone=True))
    state = case(
        (bindparam("pending", type_=Boolean), literal("pending", Text)),
        (scheduled_at > now, literal("scheduled", Text)),
        else_=literal("available", Text),
    )
    insert = (
        pg_insert(job_table)
        .values(
            args=cast(bindparam("args", type_=Text), JSONB),
            kind=bindparam("kind", type_=Text),
            max_attempts=bindparam("max_attempts", type_=SmallInteger),
            metadata=cast(bindparam("metadata", type_=Text), JSONB),
            priority=bindparam("priority", type_=SmallInteger),
            queue=bindparam("queue", type_=Text),
            scheduled_at=func.coalesce(scheduled_at, now),
            state=cast(state, JOB_STATE_ENUM),
            tags=bindparam("tags", type_=ARRAY(Text)),
            unique_key=bindparam("unique_key", type_=LargeBinary),
            unique_states=cast(bindparam("unique_states", type_=Text), BIT(8)),
        )
        .on_conflict_do_update(
            index_elements=[job_table.c.unique_key],
            index_where=text(UNIQUE_INDEX_PREDICATE),
            set_={"kind": job_table.c.kind},
        )
        .returning(
            job_table.c.id,
            job_table.c.state,
            job_table.c.created_at,
            job_table.c.scheduled_at,
            job_table.c.queue,
            literal_column("(xmax <> 0)", Boolean).label("unique_skipped_as_duplicate"),
        )
    )
    inserted = insert.cte("inserted")
    notified = (
        select(notify_insert(inserted.c.queue))
        .where(
            inserted.c.state == JobState.AVAILABLE,
            inserted.c.unique_skipped_as_duplicate.is_(False),
        )
        .scalar_subquery()
    )
    return select(
        inserted.c.id,
        inserted.c.state,
        inserted.c.created_at,
        inserted.c.scheduled_at,
        inserted.c.unique_skipped_as_duplicate,
        notified.label("notified"),
    )


_INSERT_ONE = _insert_one_statement()


def job_insert_one(conn: Connection, p: JobInsertParams) -> tuple[JobRow, bool]:
    """Insert one job in one round trip; ``(row, skipped_as_duplicate)``."""
    row = conn.execute(
        _INSERT_ONE,
        {
            "args": p.args,
            "kind": p.kind,
            "max_attempts": p.max_attempts,
            "metadata": p.metadata,
            "priority": p.priority,
            "queue": p.queue,
            "scheduled_at": p.scheduled_at,
            "pending": p.pending,
            "tags": list(p.tags),
            "unique_key": p.unique_key,
            "unique_states": p.unique_states,
        },
    ).one()
    job_id, state, created_at, scheduled_at, skipped = row[:5]
    if skipped:
        # The live duplicate: nothing was written, and its row is not the one we sent.
        duplicate = job_get(conn, job_id)
        if duplicate is None:  # pragma: no cover - it was just returned in this transaction
            raise RuntimeError(f"unique duplicate {job_id} vanished")
        return duplicate, True
    # A new row holds exactly what was sent plus the server's defaults: returning only those
    # keeps the result to five columns (its description and decoding are a large share of a
    # single insert's client-side cost).
    new = _new_job_row(JobRow)
    new.__dict__.update(
        id=job_id,
        state=state,
        attempt=0,
        max_attempts=p.max_attempts,
        attempted_at=None,
        created_at=created_at,
        finalized_at=None,
        scheduled_at=scheduled_at,
        priority=p.priority,
        args=json.loads(p.args),
        attempted_by=[],
        errors=[],
        kind=p.kind,
        metadata=json.loads(p.metadata) if p.metadata != "{}" else {},
        queue=p.queue,
        tags=list(p.tags),
        unique_key=p.unique_key,
        unique_states=None if p.unique_states is None else bitmask_states(p.unique_states),
    )
    return new, False


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
            "metadata": [None if p.metadata == "{}" else p.metadata for p in params],
            "priority": [p.priority for p in params],
            "queue": [p.queue for p in params],
            "scheduled_at": [p.scheduled_at for p in params],
            "pending": [p.pending for p in params],
            "tags": [",".join(p.tags) if p.tags else None for p in params],
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
            out.append((_job_row(duplicates[p.unique_key]), True))
        else:
            out.append((_job_row(next(fresh)), False))
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
    return select(func.count(notify_insert(queues.c.queue)))


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
        unique_states=bitmask_states(unique_states) if unique_states is not None else None,
    )


_JOB_COLUMNS = tuple(c.key for c in job_table.c)
_JOB_ROW_FIELDS = tuple(f.name for f in fields(JobRow))
assert (*_JOB_ROW_FIELDS[:13], "metadata", *_JOB_ROW_FIELDS[14:]) == _JOB_COLUMNS, _JOB_COLUMNS
_new_job_row = object.__new__


def _job_row(values: Sequence[Any]) -> JobRow:
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


# --- working jobs ------------------------------------------------------------------------

FINALIZED_STATE_VALUES = ("cancelled", "completed", "discarded")


def running_values() -> dict[str, Any]:
    """SET values that start an attempt: running, attempt + 1, now, the bound ``client_id``."""
    return {
        "state": JobState.RUNNING,
        "attempt": job_table.c.attempt + 1,
        "attempted_at": func.now(),
        "attempted_by": func.array_append(
            job_table.c.attempted_by, bindparam("client_id", type_=Text)
        ),
    }


def _fetch_statement() -> Any:
    paused = (
        select(literal(1))
        .select_from(queue_table)
        .where(queue_table.c.name == bindparam("fetch_queue"), queue_table.c.paused_at.isnot(None))
        .exists()
    )
    locked = (
        select(job_table.c.id)
        .where(
            job_table.c.state == JobState.AVAILABLE,
            job_table.c.queue == bindparam("fetch_queue"),
            job_table.c.scheduled_at <= func.now(),
            ~paused,
        )
        .order_by(job_table.c.priority, job_table.c.scheduled_at, job_table.c.id)
        .limit(bindparam("fetch_limit"))
        .with_for_update(skip_locked=True)
        .cte("locked")
    )
    return (
        update(job_table)
        .where(job_table.c.id == locked.c.id)
        .values(**running_values())
        .returning(*job_table.c)
    )


_FETCH = _fetch_statement()


@dataclass(frozen=True)
class UndecodableJob:
    """A fetched row that could not be decoded into a :class:`~sa_river.types.JobRow`.

    It is ``running`` in attempt ``attempt`` like the rest of its fetch; ``error`` says why it
    could not be decoded (a foreign client wrote ``errors`` in another shape, for example).
    """

    id: int
    attempt: int
    kind: str
    error: Exception


@dataclass(frozen=True)
class FetchedJobs:
    """What one fetch locked and marked running: the decoded jobs and the rows that failed."""

    jobs: list[JobRow]
    undecodable: list[UndecodableJob]

    def __len__(self) -> int:
        return len(self.jobs) + len(self.undecodable)


def job_fetch_available(conn: Connection, *, queue: str, limit: int, client_id: str) -> FetchedJobs:
    """Lock up to ``limit`` due jobs of ``queue`` and mark them running for ``client_id``.

    ``FOR UPDATE SKIP LOCKED`` lets any number of workers fetch at once without waiting on or
    taking each other's jobs; a paused queue yields nothing.
    The jobs of one fetch start together, so the rows come back in the order the UPDATE
    returns them: sorting them again would cost time and change nothing.

    Each row is decoded on its own: a row that fails to decode is returned as an
    :class:`UndecodableJob` (its id and attempt are read raw) instead of raising, so the other
    rows of the fetch, already marked running, are not stranded.
    """
    rows = conn.execute(
        _FETCH, {"fetch_queue": queue, "fetch_limit": limit, "client_id": client_id}
    ).all()
    jobs: list[JobRow] = []
    undecodable: list[UndecodableJob] = []
    for r in rows:
        try:
            jobs.append(_job_row(r))
        except Exception as error:
            undecodable.append(
                UndecodableJob(id=int(r[0]), attempt=int(r[2]), kind=str(r[12]), error=error)
            )
    return FetchedJobs(jobs, undecodable)


def job_get_available(conn: Connection, *, queue: str, limit: int, client_id: str) -> list[JobRow]:
    """:func:`job_fetch_available` for callers that cannot go on past a row that fails to
    decode: its error is raised (the fetch's rows are left running, as a worker's would be)."""
    fetched = job_fetch_available(conn, queue=queue, limit=limit, client_id=client_id)
    if fetched.undecodable:
        raise fetched.undecodable[0].error
    return fetched.jobs


def job_fetch_plan(conn: Connection, *, queue: str = "default", limit: int = 100) -> list[str]:
    """``EXPLAIN`` of the fetch statement (not run: nothing is locked or changed)."""
    compiled = _FETCH.compile(dialect=conn.dialect)
    params = compiled.construct_params(
        {"fetch_queue": queue, "fetch_limit": limit, "client_id": "explain"}
    )
    values = {k: v.value if isinstance(v, JobState) else v for k, v in params.items()}
    rows = conn.exec_driver_sql(f"EXPLAIN {compiled.string}", values).all()
    return [str(r[0]) for r in rows]


def fetch_plan_index(plan: Sequence[str]) -> str | None:
    """The index the fetch's locking scan uses, or ``None`` when it scans the table."""
    for line in plan:  # the locking scan is the plan's first scan of river_job
        words = line.replace("->", " ").split()
        if "Scan" not in words:
            continue
        if words[:3] == ["Bitmap", "Index", "Scan"] and words[4].startswith("river_job_"):
            return words[4]
        if "using" in words and "on" in words and words[words.index("on") + 1] == "river_job":
            return words[words.index("using") + 1]
        if words[:2] == ["Seq", "Scan"] and words[3] == "river_job":
            return None
    return None


@dataclass(frozen=True)
class JobSetStateParams:
    """The outcome of one attempt, for :func:`job_set_state_if_running_many`.

    ``delay_seconds`` sets ``scheduled_at = now() + delay`` (retries and snoozes); ``error`` is
    the encoded ``AttemptError`` JSON to append; ``snoozed`` un-counts the attempt.
    """

    id: int
    state: JobState
    error: str | None = None
    delay_seconds: float | None = None
    snoozed: bool = False
    attempt: int | None = None
    """The attempt this outcome belongs to; when set, a row that has since moved on to
    another attempt (rescued and fetched again elsewhere) is left alone."""


def _is_running_attempt(source: Any) -> Any:
    """The job of ``source``'s row, still ``running`` the same attempt (lesson 5: an outcome
    of an earlier attempt must never touch a later one); a NULL attempt matches any."""
    return and_(
        job_table.c.id == source.c.id,
        job_table.c.state == JobState.RUNNING,
        or_(source.c.attempt.is_(None), job_table.c.attempt == source.c.attempt),
    )


def _finalized_at_if_final(wanted: Any) -> Any:
    return case((wanted.in_(FINALIZED_STATE_VALUES), func.now()), else_=job_table.c.finalized_at)


def _set_state_statement() -> Any:
    outcome = (
        func.unnest(
            bindparam("o_id", type_=ARRAY(BigInteger)),
            bindparam("o_state", type_=ARRAY(Text)),
            bindparam("o_error", type_=ARRAY(Text)),
            bindparam("o_delay_seconds", type_=ARRAY(Float)),
            bindparam("o_snoozed", type_=ARRAY(Boolean)),
            bindparam("o_attempt", type_=ARRAY(SmallInteger)),
        )
        .table_valued("id", "state", "error", "delay_seconds", "snoozed", "attempt")
        .render_derived()
    )
    # A job whose cancellation was requested while it ran is cancelled rather than retried.
    wanted = case(
        (
            and_(
                outcome.c.error.isnot(None),
                job_table.c.metadata.has_key("cancel_attempted_at"),
            ),
            literal("cancelled", Text),
        ),
        else_=outcome.c.state,
    )
    snoozes = func.coalesce(job_table.c.metadata["snoozes"].as_integer(), 0) + 1
    return (
        update(job_table)
        .where(_is_running_attempt(outcome))
        .values(
            state=cast(wanted, JOB_STATE_ENUM),
            finalized_at=_finalized_at_if_final(wanted),
            errors=case(
                (
                    outcome.c.error.isnot(None),
                    func.array_append(job_table.c.errors, cast(outcome.c.error, JSONB)),
                ),
                else_=job_table.c.errors,
            ),
            scheduled_at=case(
                (
                    outcome.c.delay_seconds.isnot(None),
                    func.now() + func.make_interval(0, 0, 0, 0, 0, 0, outcome.c.delay_seconds),
                ),
                else_=job_table.c.scheduled_at,
            ),
            attempt=case((outcome.c.snoozed, job_table.c.attempt - 1), else_=job_table.c.attempt),
            metadata=case(
                (
                    outcome.c.snoozed,
                    job_table.c.metadata.op("||")(
                        func.jsonb_build_object(literal("snoozes", Text), snoozes)
                    ),
                ),
                else_=job_table.c.metadata,
            ),
        )
        .returning(job_table.c.id, job_table.c.state)
    )


_SET_STATE = _set_state_statement()


def job_set_state_if_running_many(
    conn: Connection, outcomes: Sequence[JobSetStateParams]
) -> dict[int, JobState]:
    """Record many attempts' outcomes in one UPDATE, only on rows still ``running``.

    Returns the new state of every row it changed; a job missing from the result was no longer
    running (rescued, cancelled or completed in the handler's own transaction) and keeps the
    state that other actor decided (DESIGN lesson 5).
    """
    if not outcomes:
        return {}
    rows = conn.execute(
        _SET_STATE,
        {
            "o_id": [o.id for o in outcomes],
            "o_state": [o.state.value for o in outcomes],
            "o_error": [o.error for o in outcomes],
            # psycopg refuses a list mixing int and float; a delay given as an int is fine.
            "o_delay_seconds": [
                None if o.delay_seconds is None else float(o.delay_seconds) for o in outcomes
            ],
            "o_snoozed": [o.snoozed for o in outcomes],
            "o_attempt": [o.attempt for o in outcomes],
        },
    ).all()
    return {r.id: JobState(r.state) for r in rows}


def _complete_many_statement() -> Any:
    done = (
        func.unnest(
            bindparam("c_id", type_=ARRAY(BigInteger)),
            bindparam("c_attempt", type_=ARRAY(SmallInteger)),
        )
        .table_valued("id", "attempt")
        .render_derived(name="done")
    )
    return (
        update(job_table)
        .where(
            job_table.c.id == done.c.id,
            job_table.c.state == JobState.RUNNING,
            job_table.c.attempt == done.c.attempt,
        )
        .values(state=JobState.COMPLETED, finalized_at=func.now())
    )


_COMPLETE_MANY = _complete_many_statement()


def job_record_outcomes(
    conn: Connection, outcomes: Sequence[JobSetStateParams | tuple[int, int]]
) -> int:
    """Record attempts' outcomes, only on rows still ``running`` in that same attempt; how
    many rows changed.

    The completer's statement. A ``(job id, attempt)`` pair is an attempt whose handler
    returned: those go through one plain ``completed`` UPDATE (the common case, with nothing to
    decide per row); every other outcome through :func:`job_set_state_if_running_many`'s
    statement.
    """
    completed: list[tuple[int, int]] = []
    others: list[JobSetStateParams] = []
    for o in outcomes:
        if isinstance(o, JobSetStateParams):
            others.append(o)
        else:
            completed.append(o)
    changed = 0
    if completed:
        changed += conn.execute(
            _COMPLETE_MANY,
            {"c_id": [c[0] for c in completed], "c_attempt": [c[1] for c in completed]},
        ).rowcount
    if others:
        changed += len(job_set_state_if_running_many(conn, others))
    return changed


@dataclass(frozen=True)
class JobFailParams:
    """An attempt to end with an error whatever it was meant to record, for
    :func:`job_fail_attempts`: ``error`` is the encoded ``AttemptError`` JSON to append."""

    id: int
    attempt: int | None
    error: str


def _fail_attempts_statement() -> Any:
    failed = (
        func.unnest(
            bindparam("f_id", type_=ARRAY(BigInteger)),
            bindparam("f_attempt", type_=ARRAY(SmallInteger)),
            bindparam("f_error", type_=ARRAY(Text)),
        )
        .table_valued("id", "attempt", "error")
        .render_derived(name="failed")
    )
    # Decided here, from the row itself: the caller may not have (or trust) its decoded values.
    wanted = case(
        (job_table.c.metadata.has_key("cancel_attempted_at"), literal("cancelled", Text)),
        (job_table.c.attempt >= job_table.c.max_attempts, literal("discarded", Text)),
        else_=literal("retryable", Text),
    )
    return (
        update(job_table)
        .where(_is_running_attempt(failed))
        .values(
            state=cast(wanted, JOB_STATE_ENUM),
            finalized_at=_finalized_at_if_final(wanted),
            errors=func.array_append(job_table.c.errors, cast(failed.c.error, JSONB)),
            scheduled_at=case(
                (
                    wanted == literal("retryable", Text),
                    func.now()
                    + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("f_retry_in", type_=Float)),
                ),
                else_=job_table.c.scheduled_at,
            ),
        )
        .returning(job_table.c.id, job_table.c.state)
    )


_FAIL_ATTEMPTS = _fail_attempts_statement()


def job_fail_attempts(
    conn: Connection, failures: Sequence[JobFailParams], *, retry_in_seconds: float
) -> dict[int, JobState]:
    """End attempts with an error, only on rows still ``running`` in that attempt: the fallback
    when an attempt's own outcome cannot be recorded, or its row cannot even be decoded.

    Like any failed attempt, the job is ``retryable`` after ``retry_in_seconds``, ``discarded``
    at its last attempt, or ``cancelled`` when its cancellation was requested. Returns the new
    state of every row it changed.
    """
    if not failures:
        return {}
    rows = conn.execute(
        _FAIL_ATTEMPTS,
        {
            "f_id": [f.id for f in failures],
            "f_attempt": [f.attempt for f in failures],
            "f_error": [f.error for f in failures],
            "f_retry_in": retry_in_seconds,
        },
    ).all()
    return {r.id: JobState(r.state) for r in rows}


def job_complete_if_running(conn: Connection, job_id: int, attempt: int) -> bool:
    """Mark job ``job_id`` completed in ``conn``'s transaction while it is still running
    ``attempt``; false otherwise (finished, rescued, or running a later attempt elsewhere)."""
    result = conn.execute(
        update(job_table)
        .where(
            job_table.c.id == job_id,
            job_table.c.state == JobState.RUNNING,
            job_table.c.attempt == attempt,
        )
        .values(state=JobState.COMPLETED, finalized_at=func.now())
        .returning(job_table.c.id)
    )
    return result.first() is not None


def job_release_running(
    conn: Connection, job_ids: Sequence[int], attempts: Sequence[int] | None = None
) -> list[int]:
    """Give running jobs back (shutdown): ``available`` now, the attempt not counted.

    With ``attempts`` (one per id), a job is released only while still in that attempt.
    """
    if not job_ids:
        return []
    if attempts is not None:
        return _release_attempts(conn, job_ids, attempts)
    rows = conn.execute(
        update(job_table)
        .where(
            job_table.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))),
            job_table.c.state == JobState.RUNNING,
        )
        .values(
            state=JobState.AVAILABLE,
            attempt=func.greatest(job_table.c.attempt - 1, 0),
            scheduled_at=func.now(),
        )
        .returning(job_table.c.id),
        {"ids": list(job_ids)},
    ).all()
    return [r.id for r in rows]


def _release_attempts(
    conn: Connection, job_ids: Sequence[int], attempts: Sequence[int]
) -> list[int]:
    pairs = (
        func.unnest(
            bindparam("r_id", type_=ARRAY(BigInteger)),
            bindparam("r_attempt", type_=ARRAY(SmallInteger)),
        )
        .table_valued("id", "attempt")
        .render_derived(name="released")
    )
    rows = conn.execute(
        update(job_table)
        .where(
            job_table.c.id == pairs.c.id,
            job_table.c.attempt == pairs.c.attempt,
            job_table.c.state == JobState.RUNNING,
        )
        .values(
            state=JobState.AVAILABLE,
            attempt=func.greatest(job_table.c.attempt - 1, 0),
            scheduled_at=func.now(),
        )
        .returning(job_table.c.id),
        {"r_id": list(job_ids), "r_attempt": list(attempts)},
    ).all()
    return [r.id for r in rows]


# --- control -------------------------------------------------------------------------------


def _cancel_statement() -> Any:
    is_running = job_table.c.state == JobState.RUNNING
    updated = (
        update(job_table)
        .where(
            job_table.c.id == bindparam("cancel_id", type_=BigInteger),
            job_table.c.state.notin_([JobState(s) for s in FINALIZED_STATE_VALUES]),
        )
        .values(
            state=case((is_running, job_table.c.state), else_=JobState.CANCELLED),
            finalized_at=case((is_running, job_table.c.finalized_at), else_=func.now()),
            metadata=job_table.c.metadata.op("||")(
                func.jsonb_build_object(literal("cancel_attempted_at", Text), func.now())
            ),
        )
        .returning(*job_table.c)
        .cte("updated")
    )
    running = select(updated.c.id).where(updated.c.state == JobState.RUNNING).subquery("running")
    notified = select(
        func.count(
            func.pg_notify(
                channel_expr(TOPIC_CONTROL),
                cast(
                    func.json_build_object(
                        literal("action", Text),
                        literal("cancel", Text),
                        literal("job_id", Text),
                        running.c.id,
                    ),
                    Text,
                ),
            )
        )
    ).scalar_subquery()
    return select(updated, notified.label("notified"))


_CANCEL = _cancel_statement()


def job_cancel(conn: Connection, job_id: int) -> JobRow | None:
    """Cancel a job: at once if it is not running, cooperatively (NOTIFY) if it is.

    A finalised job is returned unchanged; ``None`` if there is no such job.
    """
    row = conn.execute(_CANCEL, {"cancel_id": job_id}).first()
    return job_row_from_row(row) if row is not None else job_get(conn, job_id)


def job_retry(conn: Connection, job_id: int) -> JobRow | None:
    """Make a job that is not running available now; a discarded job gets one more attempt."""
    row = conn.execute(
        update(job_table)
        .where(job_table.c.id == job_id, job_table.c.state != JobState.RUNNING)
        .values(
            state=JobState.AVAILABLE,
            scheduled_at=func.now(),
            finalized_at=None,
            max_attempts=case(
                (
                    job_table.c.attempt >= job_table.c.max_attempts,
                    job_table.c.attempt + 1,
                ),
                else_=job_table.c.max_attempts,
            ),
        )
        .returning(*job_table.c)
    ).first()
    return job_row_from_row(row) if row is not None else job_get(conn, job_id)


def job_list(
    conn: Connection,
    *,
    states: Sequence[JobState] | None = None,
    queues: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[JobRow]:
    """Jobs matching the filters in id order, ``limit`` at a time after ``after_id`` (keyset)."""
    query = select(job_table).order_by(job_table.c.id).limit(limit)
    if states:
        query = query.where(job_table.c.state.in_([JobState(s) for s in states]))
    if queues:
        query = query.where(job_table.c.queue.in_(list(queues)))
    if kinds:
        query = query.where(job_table.c.kind.in_(list(kinds)))
    if after_id is not None:
        query = query.where(job_table.c.id > after_id)
    return [job_row_from_row(r) for r in conn.execute(query)]


def job_count_by_state(
    conn: Connection, *, kinds: Sequence[str] | None = None, ids: Sequence[int] | None = None
) -> dict[JobState, int]:
    """How many jobs are in each state (of the given kinds, or among the given ids)."""
    query = select(job_table.c.state, func.count()).group_by(job_table.c.state)
    if kinds:
        query = query.where(job_table.c.kind.in_(list(kinds)))
    if ids is not None:
        query = query.where(job_table.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))))
    return {JobState(state): int(n) for state, n in conn.execute(query, {"ids": list(ids or ())})}


def job_count_with_errors(conn: Connection, ids: Sequence[int]) -> int:
    """How many of the given jobs have at least one recorded error."""
    query = select(func.count()).where(
        job_table.c.id == func.any(bindparam("ids", type_=ARRAY(BigInteger))),
        job_table.c.errors.isnot(None),
    )
    return int(conn.execute(query, {"ids": list(ids)}).scalar_one())


def job_count_by_queue_and_state(conn: Connection) -> dict[str, dict[JobState, int]]:
    """Job counts per queue and state (for ``python -m sa_river status``)."""
    query = select(job_table.c.queue, job_table.c.state, func.count()).group_by(
        job_table.c.queue, job_table.c.state
    )
    counts: dict[str, dict[JobState, int]] = {}
    for queue, state, n in conn.execute(query):
        counts.setdefault(queue, {})[JobState(state)] = int(n)
    return counts
