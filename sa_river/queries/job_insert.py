"""Inserting into ``river_job`` (internal): the one-row and many-row statements (each with an
``ON CONFLICT`` form for unique jobs) and ``COPY``.

Every path decides a new job's state with :func:`initial_state` (``COPY``, in Python) or
:func:`initial_state_sql` (the two ``INSERT`` statements, in SQL); both are read off the one
rule in :func:`_initial_state_rule`, so the paths cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Integer,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    case,
    cast,
    column,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIT, JSONB, TIMESTAMP
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import ColumnElement, bindparam
from sqlalchemy.util import await_only

from sa_river.models import JOB_STATE_ENUM, UNIQUE_INDEX_PREDICATE, RiverJob
from sa_river.queries.driver import DriverStatement, join_transaction
from sa_river.queries.job_admin import job_get
from sa_river.queries.job_row import job_row_from_values
from sa_river.queries.notify import notify_insert
from sa_river.types import JobRow, JobState
from sa_river.unique import bitmask_states

__all__ = [
    "COPY_COLUMNS",
    "TIMED_COPY_STATEMENT",
    "UNTIMED_COPY_STATEMENT",
    "JobInsertParams",
    "available_queues",
    "copy_rows",
    "db_now_statement",
    "initial_state",
    "initial_state_sql",
    "job_insert_copy",
    "job_insert_many",
    "job_insert_one",
    "notify_insert_statement",
]

job_table: Table = RiverJob.__table__  # type: ignore[assignment]
_new_job_row = object.__new__


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
"""The columns every insert sets; ``COPY`` sets only these (it has no unique jobs)."""


_StateRule = tuple[tuple[tuple[Any, JobState], ...], JobState]


def _initial_state_rule(pending: Any, scheduled_at: Any, now: Any) -> _StateRule:
    """The rule for a new job's state, as ``(((condition, state), ...), otherwise)``.

    The first condition that holds wins: ``pending`` makes the job ``pending`` (even when it is
    also scheduled for later); a ``scheduled_at`` after ``now`` makes it ``scheduled``; any
    other job is ``available``. ``scheduled_at`` is the time to be stored (the caller's, or
    ``now`` when none was given) and ``now`` is the database's transaction time, never the
    client's clock: a job is judged by the clock the fetch and the scheduler compare with, and
    by the same instant on every insert path.

    The operands are Python values or SQL expressions alike (``>`` and a boolean test mean the
    same in both), which is what lets :func:`initial_state` and :func:`initial_state_sql` read
    this one definition instead of each stating the rule.
    """
    return ((pending, JobState.PENDING), (scheduled_at > now, JobState.SCHEDULED)), (
        JobState.AVAILABLE
    )


def initial_state(pending: bool, scheduled_at: datetime, now: datetime) -> JobState:
    """A new job's state, decided in Python (for ``COPY``, which cannot evaluate SQL).

    ``now`` must be the database's transaction time (``SELECT now()`` in the inserting
    transaction) and ``scheduled_at`` the time being stored.
    """
    conditions, otherwise = _initial_state_rule(pending, scheduled_at, now)
    for condition, state in conditions:
        if condition:
            return state
    return otherwise


def initial_state_sql(
    pending: ColumnElement[Any], scheduled_at: ColumnElement[Any], now: ColumnElement[Any]
) -> ColumnElement[Any]:
    """A new job's state as a SQL ``CASE`` (cast to ``river_job_state``), for the ``INSERT``
    statements that decide it in the database, against ``now()``."""
    conditions, otherwise = _initial_state_rule(pending, scheduled_at, now)
    return cast(
        case(
            *((condition, literal(state.value, Text)) for condition, state in conditions),
            else_=literal(otherwise.value, Text),
        ),
        JOB_STATE_ENUM,
    )


def _returning_duplicates(insert: Any, unique: bool) -> Any:
    """``insert`` with the clause that hands back a live duplicate instead of inserting, for
    statements that carry unique jobs.

    DO UPDATE (not DO NOTHING) so the existing duplicate comes back in RETURNING; xmax is
    non-zero exactly for those rows. The update writes the row's own kind back: with
    exclude_kind the duplicate may be of another kind, and EXCLUDED.kind would hand the
    existing job to a different handler. Without unique jobs the clause is left out: an
    ``ON CONFLICT`` insert is a speculative insertion, which writes a confirmation record to
    the WAL for every row (about 55 bytes a job), a write River's schema does not need.
    """
    if not unique:
        return insert
    return insert.on_conflict_do_update(
        index_elements=[job_table.c.unique_key],
        index_where=text(UNIQUE_INDEX_PREDICATE),
        set_={"kind": job_table.c.kind},
    )


def _insert_many_statement(*, unique: bool) -> Any:
    # The batch travels as one JSON document (see _jobs_document), read back into typed
    # columns by json_to_recordset: a job costs the client one formatted string instead of an
    # element in each of eleven arrays, which psycopg dumps and quotes element by element.
    source = (
        func.json_to_recordset(cast(bindparam("jobs", type_=Text), JSON))
        .table_valued(
            column("i", Integer),
            column("args", JSONB),
            column("kind", Text),
            column("max_attempts", SmallInteger),
            column("metadata", JSONB),
            column("priority", SmallInteger),
            column("queue", Text),
            column("scheduled_at", TIMESTAMP(timezone=True)),
            column("pending", Boolean),
            # River's trick: tags travel comma-joined (a tag can't contain a comma) and are
            # split again here.
            column("tags", Text),
            column("unique_key", LargeBinary),
            column("unique_states", BIT(8)),
        )
        .render_derived(name="input", with_types=True)
    )
    now = func.now()
    scheduled_at = func.coalesce(source.c.scheduled_at, now)
    rows = select(
        source.c.args,
        source.c.kind,
        source.c.max_attempts,
        # Empty metadata and tags travel as null.
        func.coalesce(source.c.metadata, literal_column("'{}'::jsonb")),
        source.c.priority,
        source.c.queue,
        scheduled_at,
        initial_state_sql(source.c.pending, scheduled_at, now),
        func.coalesce(
            func.string_to_array(source.c.tags, literal(",", Text)),
            literal_column("'{}'::varchar[]"),
        ),
        source.c.unique_key,
        source.c.unique_states,
    ).order_by(source.c.i)
    plain_insert = pg_insert(job_table).from_select(
        [*COPY_COLUMNS, "unique_key", "unique_states"], rows
    )
    if unique:
        insert = _returning_duplicates(plain_insert, unique).returning(
            *job_table.c,
            literal_column("(xmax <> 0)", Boolean).label("unique_skipped_as_duplicate"),
        )
    else:
        # Nothing can be a duplicate: only what the server decided comes back (and the queue,
        # for the notification), so the CTE does not hold a copy of every row's args.
        insert = plain_insert.returning(
            job_table.c.id,
            job_table.c.state,
            job_table.c.created_at,
            job_table.c.scheduled_at,
            job_table.c.queue,
            literal_column("false", Boolean).label("unique_skipped_as_duplicate"),
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
    if not unique:
        return select(
            inserted.c.id,
            inserted.c.state,
            inserted.c.created_at,
            inserted.c.scheduled_at,
            notified.label("notified"),
        )
    # A new row holds what was sent plus the server's defaults: only those come back for it
    # (the rest is NULL), and the client builds the JobRow from what it sent. A duplicate
    # comes back whole, being another job. Decoding every new row's args and metadata JSON
    # was most of a batch's result cost.
    skipped = inserted.c.unique_skipped_as_duplicate
    columns = [
        column
        if column.key in _DECIDED_BY_THE_SERVER
        else case((skipped, column)).label(column.key)
        for column in inserted.c
        if column is not skipped
    ]
    return select(*columns, skipped, notified.label("notified"))


_DECIDED_BY_THE_SERVER = frozenset({"id", "state", "created_at", "scheduled_at", "unique_key"})


_INSERT_MANY = DriverStatement(_insert_many_statement(unique=False))
_INSERT_MANY_UNIQUE = DriverStatement(_insert_many_statement(unique=True))


def _insert_one_statement(*, unique: bool) -> Any:
    """One job as a plain ``INSERT ... VALUES``: the web-request case.

    The same columns, state rule (:func:`initial_state_sql`), duplicate clause (for a unique
    job) and notification as :func:`_insert_many_statement`, without the JSON document a single
    row does not need.
    """
    now = func.now()
    scheduled_at = func.coalesce(bindparam("scheduled_at", type_=TIMESTAMP(timezone=True)), now)
    plain_insert = pg_insert(job_table).values(
        args=cast(bindparam("args", type_=Text), JSONB),
        kind=bindparam("kind", type_=Text),
        max_attempts=bindparam("max_attempts", type_=SmallInteger),
        metadata=cast(bindparam("metadata", type_=Text), JSONB),
        priority=bindparam("priority", type_=SmallInteger),
        queue=bindparam("queue", type_=Text),
        scheduled_at=scheduled_at,
        state=initial_state_sql(bindparam("pending", type_=Boolean), scheduled_at, now),
        tags=bindparam("tags", type_=ARRAY(Text)),
        unique_key=bindparam("unique_key", type_=LargeBinary),
        unique_states=cast(bindparam("unique_states", type_=Text), BIT(8)),
    )
    insert = _returning_duplicates(plain_insert, unique).returning(
        job_table.c.id,
        job_table.c.state,
        job_table.c.created_at,
        job_table.c.scheduled_at,
        job_table.c.queue,
        literal_column("(xmax <> 0)", Boolean).label("unique_skipped_as_duplicate"),
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


_INSERT_ONE = DriverStatement(_insert_one_statement(unique=False))
_INSERT_ONE_UNIQUE = DriverStatement(_insert_one_statement(unique=True))


def job_insert_one(conn: Connection, p: JobInsertParams) -> tuple[JobRow, bool]:
    """Insert one job in one round trip; ``(row, skipped_as_duplicate)``."""
    statement = _INSERT_ONE if p.unique_key is None else _INSERT_ONE_UNIQUE
    (row,) = statement.rows(
        conn,
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
    )
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
    return _fresh_job_row(p, job_id, state, created_at, scheduled_at), False


def _fresh_job_row(
    p: JobInsertParams, job_id: int, state: str, created_at: datetime, scheduled_at: datetime
) -> JobRow:
    """The JobRow of a job just inserted from ``p``: what was sent, and what the server
    decided (id, state, times). Fills the frozen dataclass's ``__dict__`` directly."""
    new = _new_job_row(JobRow)
    new.__dict__.update(
        id=job_id,
        state=JobState(state),
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
    return new


def job_insert_many(
    conn: Connection, params: Sequence[JobInsertParams]
) -> list[tuple[JobRow, bool]]:
    """Insert jobs in one round trip; return ``(row, skipped_as_duplicate)`` in input order.

    Unique conflicts return the live duplicate instead of inserting. ``params`` must not hold
    two jobs with the same unique key (the caller folds those).
    """
    if not params:
        return []
    unique = any(p.unique_key is not None for p in params)
    statement = _INSERT_MANY_UNIQUE if unique else _INSERT_MANY
    result = statement.rows(conn, {"jobs": _jobs_document(params)})
    if len(result) != len(params):
        raise RuntimeError(f"inserted {len(params)} jobs but {len(result)} rows came back")
    if not unique:
        # New rows get ids in input order (the SELECT is ordered).
        result.sort(key=_id)
        return [
            (_fresh_job_row(p, job_id, state, created_at, scheduled_at), False)
            for p, (job_id, state, created_at, scheduled_at, _) in zip(params, result, strict=True)
        ]
    # New rows get ids in input order (the SELECT is ordered); duplicates are matched by key.
    duplicates = {bytes(r[_UNIQUE_KEY_AT]): r for r in result if r[_SKIPPED_AT]}
    fresh = iter(sorted((r for r in result if not r[_SKIPPED_AT]), key=_id))
    out: list[tuple[JobRow, bool]] = []
    for p in params:
        if p.unique_key is not None and p.unique_key in duplicates:
            out.append((job_row_from_values(duplicates[p.unique_key]), True))
        else:
            row = next(fresh)
            new = _fresh_job_row(
                p, row[0], row[_STATE_COLUMN_AT], row[_CREATED_AT], row[_SCHEDULED_AT]
            )
            out.append((new, False))
    return out


def _jobs_document(params: Sequence[JobInsertParams]) -> str:
    """The batch as the JSON array ``_insert_many_statement`` reads: one object per job, keyed
    by column, ``i`` its place in the batch.

    Built as text: ``args`` and ``metadata`` are JSON already and go in as they are, and a
    batch's few kinds and queues are encoded once each.
    """
    encoded: dict[str, str] = {}

    def string(value: str) -> str:
        text = encoded.get(value)
        if text is None:
            text = encoded[value] = _json_string(value)
        return text

    parts = []
    for i, p in enumerate(params):
        scheduled_at = "null" if p.scheduled_at is None else f'"{p.scheduled_at.isoformat()}"'
        # bytea's hex input form, \x and the digits, with the backslash escaped for JSON.
        key = "null" if p.unique_key is None else f'"\\\\x{p.unique_key.hex()}"'
        parts.append(
            f'{{"i":{i},"args":{p.args},"kind":{string(p.kind)},'
            f'"max_attempts":{p.max_attempts:d},'
            f'"metadata":{"null" if p.metadata == "{}" else p.metadata},'
            f'"priority":{p.priority:d},"queue":{string(p.queue)},'
            f'"scheduled_at":{scheduled_at},"pending":{"true" if p.pending else "false"},'
            f'"tags":{string(",".join(p.tags)) if p.tags else "null"},'
            f'"unique_key":{key},'
            f'"unique_states":{"null" if p.unique_states is None else string(p.unique_states)}}}'
        )
    return f"[{','.join(parts)}]"


_json_string = json.JSONEncoder().encode


_UNIQUE_KEY_AT = tuple(job_table.c.keys()).index("unique_key")
_STATE_COLUMN_AT = tuple(job_table.c.keys()).index("state")
_CREATED_AT = tuple(job_table.c.keys()).index("created_at")
_SCHEDULED_AT = tuple(job_table.c.keys()).index("scheduled_at")
_SKIPPED_AT = len(job_table.c)
"""Positions in :data:`_INSERT_MANY_UNIQUE`'s rows: the table's columns, then the duplicate
flag (:data:`_INSERT_MANY` returns only id, state, created_at and scheduled_at)."""


def _id(row: Sequence[Any]) -> int:
    return int(row[0])


_UNTIMED_COLUMNS = tuple(c for c in COPY_COLUMNS if c != "scheduled_at")
UNTIMED_COPY_STATEMENT = f"COPY river_job ({', '.join(_UNTIMED_COLUMNS)}) FROM STDIN"
"""For a batch in which no job has a time of its own: ``scheduled_at`` is left to its column
default, ``now()``, the transaction time, so the batch needs no ``SELECT now()`` first."""
TIMED_COPY_STATEMENT = f"COPY river_job ({', '.join(_UNTIMED_COLUMNS)}, scheduled_at) FROM STDIN"

_STATE_AT = _UNTIMED_COLUMNS.index("state")
_QUEUE_AT = _UNTIMED_COLUMNS.index("queue")


def copy_rows(params: Sequence[JobInsertParams], now: datetime | None) -> list[tuple[Any, ...]]:
    """Rows for ``COPY`` of ``_UNTIMED_COLUMNS`` then, when ``now`` (the database's transaction
    time) is given, ``scheduled_at``: the statement is :func:`copy_statement`'s.

    ``now`` is needed only when a job has a time of its own (it may be in the past or the
    future); a job without one is stored at ``now`` and so is never ``scheduled``.
    """
    # The same instant stands for "now" and for the untimed job's own time: the rule then
    # never finds it scheduled, whatever the clock.
    untimed = now or datetime.min.replace(tzinfo=timezone.utc)
    # A job neither pending nor given a time, the bulk of a batch, always gets the same state:
    # asked once here, the rule is asked again only for the others.
    plain_state = initial_state(False, untimed, untimed).value
    rows = []
    for p in params:
        if p.scheduled_at is None and not p.pending:
            state = plain_state
        else:
            state = initial_state(p.pending, p.scheduled_at or untimed, untimed).value
        tags = _array_literal(p.tags) if p.tags else "{}"
        row = (p.args, p.kind, p.max_attempts, p.metadata, p.priority, p.queue, state, tags)
        rows.append(row if now is None else (*row, p.scheduled_at or now))
    return rows


def _array_literal(tags: Sequence[str]) -> str:
    """``tags`` as PostgreSQL's array text, which ``COPY`` takes as it is: psycopg's array
    dumper would build it element by element in Python for every row. Each tag is quoted (a
    tag spelled ``null`` would otherwise be a NULL element); validation allows no quote or
    backslash in a tag, so nothing inside needs escaping."""
    return "{" + ",".join(f'"{tag}"' for tag in tags) + "}"


def copy_statement(timed: bool) -> str:
    """The ``COPY`` for :func:`copy_rows`'s rows (``timed``: they end with ``scheduled_at``)."""
    return TIMED_COPY_STATEMENT if timed else UNTIMED_COPY_STATEMENT


def db_now_statement() -> Any:
    """The database's transaction time: the ``now`` every insert path judges states by."""
    return select(func.now())


def notify_insert_statement() -> Any:
    """Notify each queue in the bound ``queues`` array once (after a COPY)."""
    queues = (
        func.unnest(bindparam("queues", type_=ARRAY(Text))).table_valued("queue").render_derived()
    )
    return select(func.count(notify_insert(queues.c.queue)))


def job_insert_copy(conn: Connection, params: Sequence[JobInsertParams]) -> int:
    """Insert jobs without unique options through ``COPY``; return how many were written.

    The one implementation for both drivers: on an async engine it runs inside
    ``AsyncConnection.run_sync`` like every other statement, and only the ``COPY`` itself,
    which psycopg's async connection offers as coroutines, is awaited (in one go, so the rows
    cost one switch to the event loop rather than one each).
    """
    if not params:
        return 0
    timed = any(p.scheduled_at is not None for p in params)
    now = conn.execute(db_now_statement()).scalar_one() if timed else None
    rows = copy_rows(params, now)
    join_transaction(conn)  # the caller's commit() covers the COPY
    driver: Any = conn.connection.driver_connection
    statement = copy_statement(timed)
    if isinstance(driver, psycopg.AsyncConnection):
        await_only(_copy_async(driver, statement, rows))
    else:
        _copy_sync(driver, statement, rows)
    queues = available_queues(rows)
    if queues:
        conn.execute(notify_insert_statement(), {"queues": queues})
    return len(rows)


def _copy_sync(
    driver: psycopg.Connection[Any], statement: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


async def _copy_async(
    driver: psycopg.AsyncConnection[Any], statement: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    async with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            await copy.write_row(row)


def available_queues(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    """The queues that received an ``available`` row, each once: the ones to wake."""
    return sorted({r[_QUEUE_AT] for r in rows if r[_STATE_AT] == JobState.AVAILABLE.value})
