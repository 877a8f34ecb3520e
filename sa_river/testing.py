"""Test helpers for applications that use sa_river (River's ``rivertest``, in pytest form).

Everything here works on the caller's ``Session``, ``Connection`` or ``Engine``, against a real
PostgreSQL database, with the statements sa_river itself runs: no mocks.

- :func:`require_inserted` / :func:`require_inserted_many` / :func:`require_not_inserted`:
  assert that a job of a kind, with matching args (and options, through
  :class:`RequireInsertedOpts`), was or was not inserted. With a session or a connection they
  look inside its transaction, so jobs inserted and not yet committed count.
- :func:`drain`: work every available job synchronously, one after another, and return what
  happened as a :class:`DrainResult`. ``now=`` moves the clock for scheduled jobs and retries.
- :func:`inline`: while it is active, ``sa_river.insert``/``insert_many`` (sync or async) run
  the handlers of the jobs they insert straight away, in the inserting transaction.

The pytest plugin (:mod:`sa_river.pytest_plugin`, installed with sa_river) adds the fixtures
``sa_river_engine`` and ``sa_river_database_url``: a new database with the river tables for
each test, dropped afterwards.

A worked example, a complete test module (``docs/testing.md`` has a fuller one)::

    import sa_river
    from sa_river import InsertOpts, Job, JobArgs, JobState, Workers
    from sa_river.testing import RequireInsertedOpts, drain, require_inserted
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    workers = Workers()
    sent: list[str] = []


    class SendWelcome(JobArgs, kind="send_welcome"):
        email: str


    @workers.handler(SendWelcome)
    def send_welcome(job: Job[SendWelcome]) -> None:
        sent.append(job.args.email)


    def sign_up(session: Session, email: str) -> None:  # the application's code
        sa_river.insert(session, SendWelcome(email=email), InsertOpts(queue="mail"))


    def test_sign_up_sends_a_welcome_email(sa_river_engine: Engine) -> None:
        with Session(sa_river_engine) as session, session.begin():
            sign_up(session, "ada@example.com")
            require_inserted(
                session,
                SendWelcome,
                email="ada@example.com",
                opts=RequireInsertedOpts(queue="mail"),
            )
            result = drain(session, workers)
        assert result.counts == {JobState.COMPLETED: 1}
        assert sent == ["ada@example.com"]

How :func:`drain` works, so that its results can be trusted: each round makes the jobs due by
``now`` available with the scheduler's own statement, fetches one job with the worker's fetch
statement (``FOR UPDATE SKIP LOCKED``, priority order, paused queues skipped), runs its handler
(a sync one directly, an async one through ``asyncio.run``), decides the outcome exactly as the
worker does (:func:`sa_river.worker.executor.decide_outcome`) and records it with the worker's
statement. A failed attempt's writes on the drained connection are rolled back to a savepoint,
as a failed handler's transaction would be in production. Handler timeouts are not enforced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, sessionmaker

from sa_river._targets import SyncTarget, run_sync, unscoped
from sa_river.args import JobArgs, encode_json
from sa_river.hooks import Hook, InsertingJob, hooks_installed
from sa_river.queries import maintenance as maintenance_queries
from sa_river.queries import testing as testing_queries
from sa_river.queries.job_admin import job_get, job_list
from sa_river.queries.job_fetch import job_get_available
from sa_river.queries.job_insert import db_now_statement
from sa_river.queries.job_outcome import AttemptOutcome, job_set_state_if_running_many
from sa_river.retry import RetryPolicy, default_retry_policy
from sa_river.types import InsertResult, JobRow, JobState
from sa_river.worker.executor import decide_outcome
from sa_river.worker.invocation import (
    COMPLETED_IN_SESSION,
    HandlerSessions,
    Invoker,
)
from sa_river.workers import Handler, Job, Workers

__all__ = [
    "CLIENT_ID",
    "DRAIN_LIMIT_DEFAULT",
    "DrainResult",
    "KindLike",
    "RequireInsertedOpts",
    "WorkedJob",
    "drain",
    "inline",
    "require_inserted",
    "require_inserted_many",
    "require_not_inserted",
]

CLIENT_ID = "sa_river.testing"
"""Recorded in ``attempted_by`` of the jobs the helpers work."""

DRAIN_LIMIT_DEFAULT = 1000
"""How many attempts one :func:`drain` makes before it decides a handler loops forever."""

_SCHEDULE_BATCH = 1000
_LISTED_MAX = 10

KindLike: TypeAlias = str | type[JobArgs] | JobArgs
"""What the ``require_*`` helpers look for: a kind string, a ``JobArgs`` class (its kind; field
matches are checked against its fields) or a ``JobArgs`` instance (its kind, and args equal to
its encoded args)."""

_R = TypeVar("_R")


# --- require_inserted ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RequireInsertedOpts:
    """Options a required job must also have (River's ``RequireInsertedOpts``).

    Every field left ``None`` is not checked. ``tags`` must equal the job's tags, in order;
    ``scheduled_at`` must equal the stored time exactly (PostgreSQL keeps microseconds).
    """

    queue: str | None = None
    priority: int | None = None
    state: JobState | str | None = None
    max_attempts: int | None = None
    tags: Sequence[str] | None = None
    scheduled_at: datetime | None = None

    def mismatches(self, row: JobRow) -> list[str]:
        """How ``row`` differs from these options (empty when it matches)."""
        wanted: list[tuple[str, Any, Any]] = [
            ("queue", self.queue, row.queue),
            ("priority", self.priority, row.priority),
            ("state", None if self.state is None else JobState(self.state), row.state),
            ("max_attempts", self.max_attempts, row.max_attempts),
            ("tags", None if self.tags is None else list(self.tags), row.tags),
            ("scheduled_at", self.scheduled_at, row.scheduled_at),
        ]
        return [
            f"{name} is {_show(actual)} (expected {_show(expected)})"
            for name, expected, actual in wanted
            if expected is not None and actual != expected
        ]

    def describe(self) -> list[str]:
        """The checked options as ``name=value`` strings."""
        return [
            f"{f.name}={_show(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        ]


def _show(value: Any) -> str:
    if isinstance(value, JobState):
        return repr(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)


@dataclasses.dataclass(frozen=True)
class _Expected:
    """A ``require_*`` call's expectation, with args as JSON values (as stored)."""

    kind: str
    args: dict[str, Any]
    exact: bool  # an args instance: the whole args object must be equal
    opts: RequireInsertedOpts

    def mismatches(self, row: JobRow) -> list[str]:
        problems: list[str] = []
        if self.exact:
            if row.args != self.args:
                problems.append(f"args are {row.args!r} (expected {self.args!r})")
        else:
            for name, value in self.args.items():
                if name not in row.args:
                    problems.append(f"args.{name} is missing (expected {value!r})")
                elif row.args[name] != value:
                    problems.append(f"args.{name} is {row.args[name]!r} (expected {value!r})")
        return problems + self.opts.mismatches(row)

    def describe(self) -> str:
        parts = []
        if self.exact:
            parts.append(f"args {self.args!r}")
        else:
            parts.extend(f"{name}={value!r}" for name, value in self.args.items())
        parts.extend(self.opts.describe())
        where = f" with {', '.join(parts)}" if parts else ""
        return f"job of kind {self.kind!r}{where}"


def _expectation(
    kind: KindLike, opts: RequireInsertedOpts | None, match: dict[str, Any]
) -> _Expected:
    opts = opts or RequireInsertedOpts()
    if isinstance(kind, JobArgs):
        if match:
            raise TypeError(
                "pass either a JobArgs instance (all its args must match) or field=value "
                f"matches, not both (got {sorted(match)})"
            )
        return _Expected(type(kind).kind, json.loads(kind.encode()), exact=True, opts=opts)
    if isinstance(kind, type) and issubclass(kind, JobArgs):
        fields = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
        unknown = sorted(set(match) - set(fields))
        if unknown:
            raise TypeError(
                f"{kind.__name__} has no field {', '.join(map(repr, unknown))}; "
                f"its fields are {', '.join(fields) or '(none)'} (options such as queue go in "
                "opts=RequireInsertedOpts(...))"
            )
        name = kind.kind
    elif isinstance(kind, str):
        name = kind
    else:
        raise TypeError(
            f"expected a kind string, a JobArgs class or a JobArgs instance, got {kind!r}"
        )
    args = {field: json.loads(encode_json(value, field=field)) for field, value in match.items()}
    return _Expected(name, args, exact=False, opts=opts)


def _jobs_of_kind(conn: Connection, kind: str) -> list[JobRow]:
    rows: list[JobRow] = []
    after_id: int | None = None
    while True:
        page = job_list(conn, kinds=[kind], after_id=after_id, limit=1000)
        rows.extend(page)
        if len(page) < 1000:
            return rows
        after_id = page[-1].id


def _summary(row: JobRow) -> str:
    return (
        f"job {row.id} ({row.state.value}, queue {row.queue!r}, priority {row.priority}, "
        f"args {row.args!r})"
    )


def _find(
    target: SyncTarget, expected: _Expected, what: str
) -> tuple[list[JobRow], Callable[[], str]]:
    """The matching jobs, and a function explaining what else there is (for a failure)."""

    def find(conn: Connection) -> tuple[list[JobRow], list[JobRow], dict[str, int]]:
        rows = _jobs_of_kind(conn, expected.kind)
        kinds = {} if rows else testing_queries.job_count_by_kind(conn)
        return [r for r in rows if not expected.mismatches(r)], rows, kinds

    matched, rows, kinds = run_sync(target, find, what=what)

    def explain() -> str:
        if not rows:
            present = ", ".join(f"{k!r} ({n})" for k, n in kinds.items()) or "none"
            return f"There is no job of kind {expected.kind!r} at all; kinds present: {present}."
        others = [r for r in rows if r not in matched]
        if not others:
            return ""
        lines = [f"{len(others)} other job(s) of kind {expected.kind!r} did not match:"]
        for row in others[:_LISTED_MAX]:
            lines.append(f"  job {row.id}: {'; '.join(expected.mismatches(row))}")
        if len(others) > _LISTED_MAX:
            lines.append(f"  ... and {len(others) - _LISTED_MAX} more")
        return "\n".join(lines)

    return matched, explain


def require_inserted(
    target: SyncTarget,
    kind: KindLike,
    /,
    *,
    opts: RequireInsertedOpts | None = None,
    **match: Any,
) -> JobRow:
    """Assert that exactly one matching job exists, and return it.

    ``kind`` is a kind string, a ``JobArgs`` class or a ``JobArgs`` instance; ``match`` gives
    args fields that must be equal (compared as stored, so a ``datetime`` matches its ISO
    text); ``opts`` adds checks on the job's queue, priority, state and so on. With a session
    or a connection the search runs in its transaction, so uncommitted jobs count.

    Raises ``AssertionError`` naming what was found when there is no such job or several
    (use :func:`require_inserted_many` for those), and ``TypeError`` for a field the args
    class does not have (a typo would otherwise never match).

    >>> row = require_inserted(session, SendWelcome, user_id=7)  # doctest: +SKIP
    >>> row.queue                                                # doctest: +SKIP
    'default'
    """
    expected = _expectation(kind, opts, match)
    matched, explain = _find(target, expected, "require_inserted")
    if len(matched) == 1:
        return matched[0]
    if not matched:
        message = f"expected a {expected.describe()} to have been inserted; found none."
    else:
        found = ", ".join(str(r.id) for r in matched)
        message = (
            f"expected exactly one {expected.describe()}; found {len(matched)} (ids {found}). "
            "Narrow the match, or use require_inserted_many."
        )
    details = explain()
    raise AssertionError(message + ("\n" + details if details else ""))


def require_inserted_many(
    target: SyncTarget,
    kind: KindLike,
    /,
    *,
    count: int | None = None,
    opts: RequireInsertedOpts | None = None,
    **match: Any,
) -> list[JobRow]:
    """Assert that matching jobs exist (exactly ``count`` of them when given); them, by id.

    Takes the same arguments as :func:`require_inserted`.
    """
    expected = _expectation(kind, opts, match)
    matched, explain = _find(target, expected, "require_inserted_many")
    if matched and (count is None or len(matched) == count):
        return matched
    wanted = "at least one" if count is None else f"exactly {count}"
    found = f" (ids {', '.join(str(r.id) for r in matched)})" if matched else ""
    message = f"expected {wanted} {expected.describe()}; found {len(matched)}{found}."
    details = explain()
    raise AssertionError(message + ("\n" + details if details else ""))


def require_not_inserted(
    target: SyncTarget,
    kind: KindLike,
    /,
    *,
    opts: RequireInsertedOpts | None = None,
    **match: Any,
) -> None:
    """Assert that no matching job exists (same arguments as :func:`require_inserted`).

    With no ``match`` and no ``opts`` no job of the kind may exist at all.
    """
    expected = _expectation(kind, opts, match)
    matched, _ = _find(target, expected, "require_not_inserted")
    if matched:
        lines = [f"expected no {expected.describe()}; found {len(matched)}:"]
        lines.extend(f"  {_summary(r)}" for r in matched[:_LISTED_MAX])
        if len(matched) > _LISTED_MAX:
            lines.append(f"  ... and {len(matched) - _LISTED_MAX} more")
        raise AssertionError("\n".join(lines))


# --- drain ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkedJob:
    """One attempt :func:`drain` or :func:`inline` made.

    ``job`` is the row as fetched (``running``, with this attempt counted); ``state`` the state
    the attempt left it in; ``error`` what the handler raised (``None`` when it returned).
    """

    job: JobRow
    state: JobState
    error: BaseException | None = None


@dataclasses.dataclass
class DrainResult:
    """What :func:`drain` (or an :func:`inline` block) did, attempt by attempt."""

    worked: list[WorkedJob] = dataclasses.field(default_factory=list)

    @property
    def counts(self) -> dict[JobState, int]:
        """How many attempts ended in each state, e.g. ``{JobState.COMPLETED: 2}``."""
        counts: dict[JobState, int] = {}
        for w in self.worked:
            counts[w.state] = counts.get(w.state, 0) + 1
        return counts

    @property
    def errors(self) -> list[BaseException]:
        """What the handlers raised, in the order of the attempts."""
        return [w.error for w in self.worked if w.error is not None]

    def jobs(self, state: JobState | str | None = None) -> list[JobRow]:
        """The worked jobs (as fetched), only those whose attempt ended in ``state`` if given."""
        wanted = None if state is None else JobState(state)
        return [w.job for w in self.worked if wanted is None or w.state is wanted]

    def __repr__(self) -> str:
        counts = ", ".join(f"{s.value}={n}" for s, n in sorted(self.counts.items()))
        errors = "; ".join(
            f"job {w.job.id} ({w.job.kind}) attempt {w.job.attempt}: {w.error!r}"
            for w in self.worked
            if w.error is not None
        )
        return f"DrainResult({counts or 'nothing worked'}{', errors: ' + errors if errors else ''})"


def _run_coroutine(coro: Coroutine[Any, Any, _R]) -> _R:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (an async test): asyncio.run needs a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=CLIENT_ID) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclasses.dataclass
class _Attempt:
    """One attempt as :func:`_attempt` ran it."""

    job: Job[Any]
    handler: Handler | None
    error: BaseException | None = None
    value: Any = None


def _sessions_on(conn: Connection) -> HandlerSessions:
    """Sessions for handlers that take one, joined to ``conn``'s transaction (a savepoint of
    their own), so their writes are seen and undone as the drained connection's are."""
    factory = sessionmaker(bind=conn, join_transaction_mode="create_savepoint")
    return HandlerSessions(
        conn.engine.url,
        factory,
        1,
        async_refused="an async handler's AsyncSession cannot join a sync connection's "
        "transaction: drain an Engine, or test this handler with a Worker",
    )


def _attempt(workers: Workers, row: JobRow, sessions: HandlerSessions) -> _Attempt:
    """Run ``row``'s handler once, through its middleware and session as a worker does.

    Anything that is not an ``Exception`` (``KeyboardInterrupt``, ``pytest.fail``) propagates.
    """
    try:
        handler = workers.get(row.kind)
        args = handler.decode(row.args)
    except Exception as exc:  # unknown kind or undecodable args: a failed attempt
        return _Attempt(Job(row=row, args=None), None, exc)
    job = Job(row=row, args=args)
    invoker = Invoker(handler, workers, sessions)
    try:
        value = _run_coroutine(invoker.call_async(job)) if handler.is_async else invoker.call(job)
    except Exception as exc:
        return _Attempt(job, handler, exc)
    return _Attempt(job, handler, None, value)


def _record(
    conn: Connection,
    attempt: _Attempt,
    workers: Workers,
    retry_policy: RetryPolicy | None,
) -> WorkedJob:
    row, handler, exc = attempt.job.row, attempt.handler, attempt.error
    if exc is None and attempt.value is COMPLETED_IN_SESSION:
        current = job_get(conn, row.id)
        done = JobState.COMPLETED if current is None else current.state
        return WorkedJob(job=row, state=done, error=None)
    # scheduler_interval=0: a retry or a snooze waits as retryable/scheduled until it is due,
    # as under a scheduler that runs continuously.
    outcome, exc = decide_outcome(
        attempt.job,
        handler,
        exc,
        attempt.value,
        error_handler=workers.error_handler,
        retry_policy=retry_policy or workers.retry_policy or default_retry_policy,
        scheduler_interval=0.0,
    )
    attempt.error = exc
    states = job_set_state_if_running_many(conn, [outcome])
    state = states.get(row.id)
    if state is None:  # the handler settled the job itself (complete_in, cancel_job)
        current = job_get(conn, row.id)
        state = outcome.state if current is None else current.state
    return WorkedJob(job=row, state=state, error=exc)


def _attempt_in_savepoint(conn: Connection, workers: Workers, row: JobRow) -> _Attempt:
    """:func:`_attempt` with the handler's writes on ``conn`` undone if it fails."""
    savepoint = conn.begin_nested()
    try:
        attempt = _attempt(workers, row, _sessions_on(conn))
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    if savepoint.is_active:
        if attempt.error is None:
            savepoint.commit()
        else:
            savepoint.rollback()
    return attempt


def _due_until(conn: Connection, now: datetime | timedelta | None) -> None:
    """Make the jobs due by ``now`` available, and fetchable, in ``conn``'s transaction."""
    db_now: datetime = conn.execute(db_now_statement()).scalar_one()
    if now is None:
        until = db_now
    elif isinstance(now, timedelta):
        until = db_now + now
    else:
        until = max(now, db_now)
    lookahead = (until - db_now).total_seconds()
    while (
        maintenance_queries.job_schedule(
            conn, lookahead_seconds=lookahead, limit=_SCHEDULE_BATCH
        ).changed
        == _SCHEDULE_BATCH
    ):
        pass
    if until > db_now:
        testing_queries.job_bring_due(conn, until=until)


def _fetch_one(
    conn: Connection, queues: Sequence[str] | None, now: datetime | timedelta | None
) -> JobRow | None:
    _due_until(conn, now)
    for queue in testing_queries.job_queues_with_available(conn, queues=queues):
        rows = job_get_available(conn, queue=queue, limit=1, client_id=CLIENT_ID)
        if rows:
            return rows[0]
    return None


def drain(
    target: SyncTarget,
    workers: Workers,
    *,
    queues: Sequence[str] | None = None,
    now: datetime | timedelta | None = None,
    limit: int = DRAIN_LIMIT_DEFAULT,
    retry_policy: RetryPolicy | None = None,
) -> DrainResult:
    """Work every due job, one at a time, until none is left; what happened.

    With a ``Session`` or ``Connection`` everything happens in its transaction: jobs inserted
    and not yet committed are worked, and so are jobs the handlers insert on that connection.
    Each attempt runs inside a savepoint, rolled back if the handler fails. A session is
    flushed first and expired afterwards, so its objects show what the handlers wrote.

    With an ``Engine`` drain behaves like a one-slot worker: each job is fetched and its
    outcome recorded in short transactions of their own, committed, and the handler runs in
    between, free to open sessions of its own.

    ``queues`` limits the queues drained (default: all). ``now`` is the clock: a ``datetime``
    (timezone-aware; one before the database's time counts as that time) or a ``timedelta``
    added to the database's time. Scheduled jobs and retries due by then are worked too, so
    ``now=timedelta(days=365)`` works a failing job through all its attempts. A failed
    attempt is recorded as ``retryable`` (or ``discarded``), a snooze as ``scheduled``, as a
    worker whose scheduler ran continuously would record them.

    ``limit`` caps the attempts: reaching it raises ``AssertionError`` (a handler that keeps
    re-enqueueing or snoozing with no delay would otherwise loop forever). ``retry_policy``
    is the backoff for kinds that set none (default: ``attempt ** 4`` seconds).
    """
    if isinstance(now, datetime) and now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    target = unscoped(target)
    if isinstance(target, Engine):
        return _drain_engine(target, workers, queues, now, limit, retry_policy)
    if isinstance(target, Session):
        target.flush()
        try:
            return _drain_connection(target.connection(), workers, queues, now, limit, retry_policy)
        finally:
            target.expire_all()
    if isinstance(target, Connection):
        return _drain_connection(target, workers, queues, now, limit, retry_policy)
    hint = ""
    if isinstance(target, AsyncSession | AsyncConnection | AsyncEngine):
        hint = " (with an AsyncSession: await session.run_sync(lambda s: drain(s, workers)))"
    raise TypeError(
        f"drain target must be a Session, Connection or Engine, got {type(target).__name__}" + hint
    )


def _limit_reached(result: DrainResult, limit: int) -> AssertionError:
    return AssertionError(
        f"drain made {limit} attempts and jobs are still due: a handler may keep "
        f"re-enqueueing or snoozing without delay; raise limit= if this is expected. {result!r}"
    )


def _release(conn: Connection, row: JobRow) -> None:
    """Give back a job fetched beyond drain's limit: ``available``, the attempt not counted."""
    job_set_state_if_running_many(conn, [AttemptOutcome.released(row.id, row.attempt)])


def _drain_connection(
    conn: Connection,
    workers: Workers,
    queues: Sequence[str] | None,
    now: datetime | timedelta | None,
    limit: int,
    retry_policy: RetryPolicy | None,
) -> DrainResult:
    result = DrainResult()
    while (row := _fetch_one(conn, queues, now)) is not None:
        if len(result.worked) >= limit:
            _release(conn, row)
            raise _limit_reached(result, limit)
        attempt = _attempt_in_savepoint(conn, workers, row)
        result.worked.append(_record(conn, attempt, workers, retry_policy))
    return result


def _drain_engine(
    engine: Engine,
    workers: Workers,
    queues: Sequence[str] | None,
    now: datetime | timedelta | None,
    limit: int,
    retry_policy: RetryPolicy | None,
) -> DrainResult:
    def in_transaction(fn: Callable[[Connection], _R]) -> _R:
        with engine.begin() as conn:
            return fn(conn)

    result = DrainResult()
    # Unpooled: each async handler runs on an event loop of its own (asyncio.run).
    sessions = HandlerSessions(engine.url, workers.session_factory, 1, pooled=False)
    while (row := in_transaction(partial(_fetch_one, queues=queues, now=now))) is not None:
        if len(result.worked) >= limit:
            in_transaction(partial(_release, row=row))
            raise _limit_reached(result, limit)
        attempt = _attempt(workers, row, sessions)
        record = partial(_record, attempt=attempt, workers=workers, retry_policy=retry_policy)
        result.worked.append(in_transaction(record))
    return result


# --- inline --------------------------------------------------------------------------------


@contextmanager
def inline(workers: Workers, *, retry_policy: RetryPolicy | None = None) -> Iterator[DrainResult]:
    """Run handlers at insert time: under ``with inline(workers):``, ``sa_river.insert`` and
    ``insert_many`` (and their ``_async`` twins) work each job they insert before returning,
    in the inserting transaction.

    Only jobs inserted ``available`` are worked (not scheduled or pending ones, nor unique
    duplicates that were skipped); queue pauses do not apply. Jobs a handler inserts are
    worked in turn, at once. Each attempt runs in a savepoint and its outcome is recorded as
    :func:`drain` records it; the ``InsertResult`` still shows the job as inserted. The
    :class:`DrainResult` yielded collects every attempt made in the block.
    ``insert_many_fast`` (``COPY``, which returns no rows) is not affected. Under an async
    insert the handlers get the connection's sync view, as ``AsyncConnection.run_sync`` gives
    it, and an async handler runs through ``asyncio.run`` on a thread of its own.

    It is an ordinary insert hook (see :mod:`sa_river.hooks`), registered for the block: the
    switch is process-wide while the block runs (inserts from other threads are worked inline
    too), so use it in tests only.

    >>> with inline(workers) as worked:                              # doctest: +SKIP
    ...     sign_up(session, "ada@example.com")  # inserts SendWelcome: its handler runs now
    >>> worked.counts                                                 # doctest: +SKIP
    {<JobState.COMPLETED: 'completed'>: 1}
    """
    result = DrainResult()
    with hooks_installed(_InlineHook(workers, retry_policy, result)):
        yield result


class _InlineHook(Hook):
    """:func:`inline` as an ordinary insert hook: it works the new jobs on the inserting
    connection, in its transaction, as every insert path calls a hook's
    ``after_insert_in_transaction`` there."""

    def __init__(
        self, workers: Workers, retry_policy: RetryPolicy | None, result: DrainResult
    ) -> None:
        self.workers = workers
        self.retry_policy = retry_policy
        self.result = result

    def after_insert_in_transaction(
        self,
        conn: Connection,
        jobs: Sequence[InsertingJob],
        results: Sequence[InsertResult],
    ) -> None:
        workers, retry_policy, result = self.workers, self.retry_policy, self.result
        ids = [
            r.job.id
            for r in results
            if not r.unique_skipped_as_duplicate and r.job.state == JobState.AVAILABLE
        ]
        for row in testing_queries.job_get_available_by_ids(conn, ids, client_id=CLIENT_ID):
            attempt = _attempt_in_savepoint(conn, workers, row)
            result.worked.append(_record(conn, attempt, workers, retry_policy))
