"""Statements on ``river_queue`` (internal)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Table, Text, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from sa_river.models import RiverQueue
from sa_river.queries.notify import TOPIC_CONTROL, channel_expr, control_payload

__all__ = [
    "queue_create_or_set_updated_at",
    "queue_list",
    "queue_pause",
    "queue_resume",
]

queue_table: Table = RiverQueue.__table__  # type: ignore[assignment]


def queue_create_or_set_updated_at(conn: Connection, names: Sequence[str]) -> None:
    """Record that these queues are being worked (``updated_at = now()``)."""
    if not names:
        return
    stmt = pg_insert(queue_table).values([{"name": n} for n in sorted(set(names))])
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["name"], set_={"updated_at": func.now()})
    )


def _notify_control(conn: Connection, action: str, queue: str) -> None:
    payload = literal(control_payload(action, queue), Text)
    conn.execute(select(func.pg_notify(channel_expr(TOPIC_CONTROL), payload)))


def queue_pause(conn: Connection, name: str) -> None:
    """Pause a queue: workers stop fetching from it (jobs already running finish)."""
    stmt = pg_insert(queue_table).values(name=name, paused_at=func.now())
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "paused_at": func.coalesce(queue_table.c.paused_at, func.now()),
                "updated_at": func.now(),
            },
        )
    )
    _notify_control(conn, "pause", name)


def queue_resume(conn: Connection, name: str) -> None:
    """Resume a paused queue."""
    conn.execute(
        update(queue_table)
        .where(queue_table.c.name == name)
        .values(paused_at=None, updated_at=func.now())
    )
    _notify_control(conn, "resume", name)


def queue_list(conn: Connection) -> list[tuple[str, datetime | None, datetime]]:
    """``(name, paused_at, updated_at)`` of every known queue."""
    rows = conn.execute(
        select(queue_table.c.name, queue_table.c.paused_at, queue_table.c.updated_at).order_by(
            queue_table.c.name
        )
    )
    return [(r.name, r.paused_at, r.updated_at) for r in rows]
