"""Statements on ``river_leader`` (internal).

Every guard compares the row *stored in the table* with this runner's id and term
(``elected_at``): River once guarded a renewal with ``EXCLUDED.leader_id = :leader_id``, which
is always true, so any follower "renewed" and believed it led.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Table,
    Text,
    and_,
    cast,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import bindparam

from sa_river.models import RiverLeader
from sa_river.queries.notify import TOPIC_LEADERSHIP, channel_expr

__all__ = [
    "LEADER_NAME",
    "LeaderTerm",
    "leader_attempt_elect",
    "leader_attempt_reelect",
    "leader_get",
    "leader_resign",
    "set_local_statement_timeout",
]

leader_table: Table = RiverLeader.__table__  # type: ignore[assignment]

LEADER_NAME = "default"


@dataclass(frozen=True)
class LeaderTerm:
    """A leader's term: who, since when (the term's identity) and until when."""

    leader_id: str
    elected_at: datetime
    expires_at: datetime


_TERM_COLUMNS = (leader_table.c.leader_id, leader_table.c.elected_at, leader_table.c.expires_at)


def _term(row: Any) -> LeaderTerm | None:
    return None if row is None else LeaderTerm(row.leader_id, row.elected_at, row.expires_at)


def _is_this_term() -> ColumnElement[bool]:
    """The stored row is the term of ``:holder_id`` elected at ``:term`` (the guard of every
    statement that extends or ends a term)."""
    return and_(
        leader_table.c.name == LEADER_NAME,
        leader_table.c.leader_id == bindparam("holder_id", type_=Text),
        leader_table.c.elected_at == bindparam("term"),
    )


def _ttl() -> object:
    return func.make_interval(0, 0, 0, 0, 0, 0, bindparam("ttl_seconds", type_=Float))


def set_local_statement_timeout(conn: Connection, seconds: float) -> None:
    """Bound every statement of the current transaction (``SET LOCAL``)."""
    conn.execute(select(func.set_config("statement_timeout", f"{int(seconds * 1000)}ms", True)))


def leader_attempt_elect(conn: Connection, *, leader_id: str, ttl: float) -> LeaderTerm | None:
    """Delete an expired term, then claim the empty seat; the new term if this runner won.

    Run both in one transaction: the DELETE only removes a term whose ``expires_at`` has
    passed, and the INSERT does nothing when another live term holds the row.
    """
    conn.execute(delete(leader_table).where(leader_table.c.expires_at < func.now()))
    stmt = (
        pg_insert(leader_table)
        .values(
            name=LEADER_NAME,
            leader_id=bindparam("candidate_id", type_=Text),
            elected_at=func.now(),
            expires_at=func.now() + _ttl(),
        )
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(*_TERM_COLUMNS)
    )
    return _term(conn.execute(stmt, {"candidate_id": leader_id, "ttl_seconds": ttl}).first())


def leader_attempt_reelect(
    conn: Connection, *, leader_id: str, term: datetime, ttl: float
) -> LeaderTerm | None:
    """Extend this runner's own term; ``None`` means the term is gone (step down).

    The guard is on the stored row: ``leader_id`` *and* ``elected_at`` must both be this
    runner's, so neither a follower nor a leader of an older term can extend anything.
    """
    stmt = (
        update(leader_table)
        .where(_is_this_term(), leader_table.c.expires_at >= func.now())
        .values(expires_at=func.now() + _ttl())
        .returning(*_TERM_COLUMNS)
    )
    return _term(
        conn.execute(stmt, {"holder_id": leader_id, "term": term, "ttl_seconds": ttl}).first()
    )


def leader_resign(conn: Connection, *, leader_id: str, term: datetime) -> bool:
    """End this runner's term and tell followers (NOTIFY), in one statement."""
    deleted = (
        delete(leader_table)
        .where(_is_this_term())
        .returning(leader_table.c.leader_id)
        .cte("resigned")
    )
    payload = func.json_build_object(
        literal("leader_id", Text),
        deleted.c.leader_id,
        literal("action", Text),
        literal("resigned", Text),
    )
    stmt = select(func.pg_notify(channel_expr(TOPIC_LEADERSHIP), cast(payload, Text))).select_from(
        deleted
    )
    return bool(conn.execute(stmt, {"holder_id": leader_id, "term": term}).all())


def leader_get(conn: Connection) -> LeaderTerm | None:
    """The current term, expired or not, or ``None``."""
    return _term(conn.execute(select(*_TERM_COLUMNS)).first())
