"""Jobs staged on a SQLAlchemy session and written by its unit of work.

:func:`insert_on_flush` stages a job on a ``Session`` (or ``AsyncSession``) instead of writing it
at once. The job is written at the session's next flush, after the ORM's own INSERTs, so args
given as a zero-argument callable can read the ids the database just assigned:

>>> with Session(engine) as session, session.begin():             # doctest: +SKIP
...     user = User(email="ada@example.com")
...     session.add(user)
...     sa_river.insert_on_flush(session, lambda: SendWelcome(user_id=user.id))

How it hooks in (all of it SQLAlchemy session events, installed once per session on first use,
or once per ``sessionmaker`` with :func:`enable_insert_on_flush`; the ``Session`` class itself
is never listened to, so sessions that stage nothing pay nothing):

- ``after_flush_postexec`` writes the staged jobs, in staging order and as one statement, on
  the session's connection. It runs inside the flush's transaction, once the flush's INSERTs
  are done and the new objects are persistent (their ids set, expired server defaults
  loadable), so a failure here fails the flush and SQLAlchemy rolls the transaction back.
- ``before_commit`` flushes when jobs are staged, and writes them itself when the session had
  nothing else to flush: SQLAlchemy skips a flush with no ORM changes before any event fires,
  so a commit with only staged jobs would otherwise never reach ``after_flush_postexec``.
- ``after_soft_rollback`` (a savepoint) and ``after_transaction_end`` (the session's outermost
  transaction, whether it is rolled back or closed) discard the jobs the rollback undoes:
  those staged and not yet written inside it, and those written inside it (as SQLAlchemy
  expunges the objects a rolled-back savepoint had inserted). ``after_commit`` of the
  outermost transaction marks the written jobs as committed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
)
from sqlalchemy.orm import Session, SessionTransaction, scoped_session, sessionmaker

from sa_river.args import ArgsLike
from sa_river.enqueue import _insert_one_listed, _insert_prepared, _insert_sync, prepare
from sa_river.errors import InvalidJobError
from sa_river.options import InsertOpts
from sa_river.queries.job_insert import JobInsertParams
from sa_river.types import InsertResult

__all__ = [
    "SessionLike",
    "StagedJob",
    "StagedStatus",
    "enable_insert_on_flush",
    "insert_on_flush",
]

SessionLike: TypeAlias = Session | scoped_session[Any] | AsyncSession | async_scoped_session[Any]
StagedStatus: TypeAlias = Literal["staged", "written", "discarded"]
_Target = TypeVar("_Target")

_STATE_KEY = "_sa_river_staged_jobs"
"""Where a session keeps its staged jobs: a private key of ``Session.info``."""
_CLASS_MARK = "_sa_river_insert_on_flush"
"""Set on a session class whose sessions already get the listeners (a ``sessionmaker``'s)."""


class StagedJob:
    """A job staged by :func:`insert_on_flush`: ``result`` is ``None`` until it is written.

    Like the primary key of an object added to a session, which is ``None`` until the flush
    that inserts it, ``result`` is set by the flush (or commit) that writes the job: the
    :class:`~sa_river.InsertResult` an immediate :func:`~sa_river.insert` would have returned.

    ``status`` is ``"staged"`` (waiting for a flush), ``"written"`` (inserted in the session's
    transaction, and committed once that transaction is) or ``"discarded"`` (the session
    rolled back, or was closed, before the job was written, or rolled back the transaction or
    savepoint that wrote it; ``result`` is ``None`` again then).
    """

    __slots__ = ("_args", "_label", "_opts", "_params", "_scope", "_written_in", "result", "status")

    result: InsertResult | None
    """What the insert returned once the job is written; ``None`` before, and when discarded."""
    status: StagedStatus
    """``"staged"``, ``"written"`` or ``"discarded"``."""

    _args: ArgsLike | Callable[[], ArgsLike] | None  # dropped once written: it holds ORM objects
    _opts: InsertOpts | None
    _params: JobInsertParams | None  # ready args, validated when staged
    _label: str  # how errors name the job
    _scope: SessionTransaction | None  # innermost transaction or savepoint it was staged in
    _written_in: SessionTransaction | None  # ... and written in, until the outermost commit

    def __init__(self) -> None:
        raise TypeError("a StagedJob is made by sa_river.insert_on_flush")

    @classmethod
    def _new(
        cls,
        args: ArgsLike | Callable[[], ArgsLike],
        opts: InsertOpts | None,
        params: JobInsertParams | None,
        label: str,
        scope: SessionTransaction,
    ) -> StagedJob:
        job = cls.__new__(cls)
        job._args = args
        job._opts = opts
        job._params = params
        job._label = label
        job._scope = scope
        job._written_in = None
        job.result = None
        job.status = "staged"
        return job

    def __repr__(self) -> str:
        written = "" if self.result is None else f", job_id={self.result.job.id}"
        return f"<StagedJob {self._label} {self.status}{written}>"

    def _params_now(self, index: int) -> JobInsertParams:
        """The job's validated params, its args callable called now (at flush time); errors
        name the job as ``staged[index]`` with the place it was staged from."""
        if self._params is not None:
            return self._params
        make = self._args
        assert callable(make)
        try:
            args = make()
        except Exception as exc:
            raise InvalidJobError(
                f"staged[{index}]",
                f"the args callable {self._label} raised {type(exc).__name__}: {exc}; "
                "no staged job was written",
            ) from exc
        try:
            return prepare(args, self._opts)
        except InvalidJobError as exc:
            message = str(exc).split(": ", 1)[-1]
            raise type(exc)(
                f"staged[{index}].{exc.field}",
                f"{message} (args returned by {self._label}); no staged job was written",
            ) from exc

    def _wrote(self, result: InsertResult, where: SessionTransaction | None) -> None:
        self.result = result
        self.status = "written"
        self._written_in = where
        self._scope = None
        self._args = None  # a callable holds ORM objects: let them go
        self._params = None

    def _discard(self) -> None:
        self.result = None
        self.status = "discarded"
        self._scope = self._written_in = None
        self._args = None
        self._params = None


class _Staging:
    """One session's staged jobs (in staging order) and the jobs written in its transaction
    that a rollback would still undo."""

    __slots__ = ("staged", "written")

    def __init__(self) -> None:
        self.staged: list[StagedJob] = []
        self.written: list[StagedJob] = []

    def discard_within(self, boundary: SessionTransaction) -> None:
        """``boundary`` (a savepoint) was rolled back: drop what it undoes."""
        keep = []
        for job in self.staged:
            if _within(job._scope, boundary):
                job._discard()
            else:
                keep.append(job)
        self.staged = keep
        kept_written = []
        for job in self.written:
            if _within(job._written_in, boundary):
                job._discard()
            else:
                kept_written.append(job)
        self.written = kept_written

    def discard_all(self) -> None:
        for job in (*self.staged, *self.written):
            job._discard()
        self.staged = []
        self.written = []


def _within(transaction: SessionTransaction | None, boundary: SessionTransaction) -> bool:
    """Whether ``transaction`` is ``boundary`` or began inside it."""
    while transaction is not None:
        if transaction is boundary:
            return True
        transaction = transaction.parent
    return False


def insert_on_flush(
    session: SessionLike,
    args: ArgsLike | Callable[[], ArgsLike],
    opts: InsertOpts | None = None,
) -> StagedJob:
    """Stage a job on ``session``, to be written at its next flush; returns its handle.

    ``args`` are ready args (a :class:`~sa_river.JobArgs` instance or a ``(kind, dict)``
    tuple), validated now, or a zero-argument callable returning them, called at flush time
    after the ORM's INSERTs: ``lambda: SendWelcome(user_id=user.id)`` for a ``user`` added to
    the session and not yet flushed. ``opts`` are as for :func:`~sa_river.insert`.

    The staged jobs are written in staging order, as one statement, in the session's
    transaction, by the next flush that writes ORM changes, or by ``commit()`` when there are
    none. Rolling back (the session, or the savepoint they were staged or written in) or
    closing the session before that discards them. A callable that raises, or returns bad
    args, fails that flush (or commit) with :class:`~sa_river.InvalidJobError` naming the job;
    no staged job is written and SQLAlchemy rolls the transaction back.

    ``session`` is a ``Session``, ``AsyncSession`` (staging is synchronous; the job is
    written by ``await session.flush()`` or ``await session.commit()``) or a
    ``scoped_session``/``async_scoped_session`` (the session it currently holds). Like
    ``session.add()``, staging begins the session's transaction if none is in progress (this
    emits no SQL). The session's listeners are installed on first use; see
    :func:`enable_insert_on_flush` to install them once per ``sessionmaker`` instead.

    >>> session.add(user)                                             # doctest: +SKIP
    >>> staged = insert_on_flush(session, lambda: Welcome(user_id=user.id))  # doctest: +SKIP
    >>> session.commit()                                              # doctest: +SKIP
    >>> staged.result.job.args["user_id"] == user.id                  # doctest: +SKIP
    True
    """
    sync = _sync_session(session)
    if opts is not None and not isinstance(opts, InsertOpts):
        raise InvalidJobError("opts", f"must be an InsertOpts, got {type(opts).__name__}")
    if callable(args):
        params = None
        label = _describe(args)
    else:
        params = prepare(args, opts)  # bad ready args fail here, where they were given
        label = params.kind
    # Begin the session's transaction as session.add() does (no SQL): the job belongs to it,
    # so its rollback, or closing the session, discards the job. SQLAlchemy has no public
    # call for this; _autobegin_t is what add() and connection() call (and, as for add(), it
    # refuses on a Session(autobegin=False) outside a transaction).
    sync._autobegin_t()
    state = _state_of(sync)
    scope = sync.get_nested_transaction() or sync.get_transaction()
    assert scope is not None
    job = StagedJob._new(args, opts, params, label, scope)
    state.staged.append(job)
    return job


def enable_insert_on_flush(target: _Target) -> _Target:
    """Install the listeners :func:`insert_on_flush` needs, once, and return ``target``.

    ``target`` is a ``sessionmaker`` or ``async_sessionmaker`` (every session it makes gets
    them, which spares each session the installation on its first staged job), a
    ``scoped_session``/``async_scoped_session`` (its factory's), or a single ``Session`` or
    ``AsyncSession``. Calling it again is harmless. A session with nothing staged pays one
    dictionary look-up per flush, commit and rollback, and runs no extra SQL.

    An ``async_sessionmaker`` is given a ``sync_session_class`` of its own (a subclass of the
    one it had) and the listeners go on that class, since SQLAlchemy's session events are
    those of the synchronous ``Session`` inside each ``AsyncSession``.

    >>> SessionLocal = sa_river.enable_insert_on_flush(sessionmaker(engine))  # doctest: +SKIP
    """
    factory: Any = target
    if isinstance(factory, scoped_session | async_scoped_session):
        factory = factory.session_factory
    if isinstance(factory, sessionmaker):
        _install_on_class(factory.class_)
    elif isinstance(factory, async_sessionmaker):
        base = factory.kw.get("sync_session_class") or factory.class_.sync_session_class
        if not getattr(base, _CLASS_MARK, False):
            own = type(base.__name__, (base,), {})
            _install_on_class(own)
            factory.configure(sync_session_class=own)
    elif isinstance(factory, AsyncSession):
        _state_of(factory.sync_session)
    elif isinstance(factory, Session):
        _state_of(factory)
    else:
        got = (
            f"the class {factory.__name__}" if isinstance(factory, type) else type(factory).__name__
        )
        raise TypeError(
            "enable_insert_on_flush takes a sessionmaker, an async_sessionmaker, a scoped "
            f"session or a session, got {got} (a Session class is refused: listeners on it "
            "would run in every session of the application; pass its sessionmaker)"
        )
    return target


# -- the listeners ---------------------------------------------------------------------------


def _after_flush_postexec(session: Session, flush_context: object) -> None:
    state = session.info.get(_STATE_KEY)
    if state is not None and state.staged:
        _write(session, state)


def _before_commit(session: Session) -> None:
    state = session.info.get(_STATE_KEY)
    if state is None or not state.staged:
        return
    session.flush()  # the ORM's pending changes first; its after_flush_postexec writes the jobs
    if state.staged:  # the session had nothing to flush, so no flush event fired
        _write(session, state)


def _after_commit(session: Session) -> None:
    # A savepoint's release fires this too: its jobs are then the enclosing transaction's,
    # still undone by its rollback. Only the outermost commit makes them permanent.
    state = session.info.get(_STATE_KEY)
    if state is not None and state.written and session.get_nested_transaction() is None:
        for job in state.written:
            job._written_in = None
        state.written = []


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    # A flush's own inner transaction is skipped: its failure deactivates the savepoint or
    # transaction around it, whose rollback (or the session's close) comes next.
    if not (previous_transaction.nested or previous_transaction.parent is None):
        return
    state = session.info.get(_STATE_KEY)
    if state is not None and (state.staged or state.written):
        state.discard_within(previous_transaction)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended: committed (its jobs were written and marked by
    # after_commit), rolled back or closed. Anything left never reached the database.
    if transaction.parent is not None:
        return
    state = session.info.get(_STATE_KEY)
    if state is not None and (state.staged or state.written):
        state.discard_all()


_LISTENERS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("after_flush_postexec", _after_flush_postexec),
    ("before_commit", _before_commit),
    ("after_commit", _after_commit),
    ("after_soft_rollback", _after_soft_rollback),
    ("after_transaction_end", _after_transaction_end),
)


# -- internals -------------------------------------------------------------------------------


def _write(session: Session, state: _Staging) -> None:
    """Insert every staged job of ``session`` now, on its connection, as one statement."""
    jobs = state.staged
    state.staged = []
    try:
        params = [job._params_now(index) for index, job in enumerate(jobs)]
        work = _insert_one_listed if len(params) == 1 else _insert_prepared
        results = _insert_sync(session, params, work, "insert_on_flush", one_statement=True)
    except BaseException:
        # Staged again, in front of any staged meanwhile: the failure leaves the transaction
        # to be rolled back (SQLAlchemy does so for a flush), and that rollback discards them.
        state.staged[:0] = jobs
        raise
    where = session.get_nested_transaction() or session.get_transaction()
    for job, result in zip(jobs, results, strict=True):
        job._wrote(result, where)
    state.written.extend(jobs)


def _state_of(session: Session) -> _Staging:
    """``session``'s staged jobs, creating them (and installing its listeners) on first use."""
    state = session.info.get(_STATE_KEY)
    if state is None:
        state = session.info[_STATE_KEY] = _Staging()
        if not getattr(type(session), _CLASS_MARK, False) and not event.contains(
            session, "after_flush_postexec", _after_flush_postexec
        ):
            for name, listener in _LISTENERS:
                event.listen(session, name, listener)
    assert isinstance(state, _Staging)
    return state


def _install_on_class(cls: type[Session]) -> None:
    if getattr(cls, _CLASS_MARK, False):
        return
    if cls is Session:  # pragma: no cover - sessionmaker always makes a subclass
        raise TypeError("refusing to listen on the Session class itself")
    for name, listener in _LISTENERS:
        event.listen(cls, name, listener)
    setattr(cls, _CLASS_MARK, True)


def _sync_session(target: SessionLike) -> Session:
    resolved: object = target
    if isinstance(resolved, scoped_session | async_scoped_session):
        resolved = resolved()
    if isinstance(resolved, AsyncSession):
        return resolved.sync_session
    if isinstance(resolved, Session):
        return resolved
    raise TypeError(
        "insert_on_flush target must be a Session or AsyncSession (or a scoped one), got "
        f"{type(target).__name__}; a Connection or Engine has no flush: use sa_river.insert"
    )


def _describe(make: Callable[[], ArgsLike]) -> str:
    """Name an args callable for errors: its name and where it was defined."""
    name = getattr(make, "__qualname__", None) or type(make).__name__
    code = getattr(make, "__code__", None)
    if code is None:
        return name
    return f"{name} ({Path(code.co_filename).name}:{code.co_firstlineno})"
