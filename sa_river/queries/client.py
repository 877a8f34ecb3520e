"""Statements on ``sa_river_client``, the worker heartbeat table (internal)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ARRAY, Connection, Float, Table, Text, column, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import bindparam

from sa_river.models import SaRiverClient

__all__ = ["client_delete", "client_heartbeat", "client_list_alive", "missing_tables"]

client_table: Table = SaRiverClient.__table__  # type: ignore[assignment]


def client_heartbeat(
    conn: Connection, *, client_id: str, hostname: str, pid: int, queues: Sequence[str]
) -> None:
    """Create this runner's row or move its ``heartbeat_at`` to now."""
    stmt = pg_insert(client_table).values(
        id=client_id, hostname=hostname, pid=pid, queues=list(queues)
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"heartbeat_at": func.now(), "queues": stmt.excluded.queues},
        )
    )


def client_delete(conn: Connection, client_id: str) -> None:
    """Remove this runner's row (clean shutdown)."""
    conn.execute(delete(client_table).where(client_table.c.id == client_id))


def client_list_alive(
    conn: Connection, within_seconds: float
) -> list[tuple[str, str, int, list[str], datetime]]:
    """``(id, hostname, pid, queues, heartbeat_at)`` of runners seen within the window."""
    window = func.make_interval(0, 0, 0, 0, 0, 0, bindparam("within", type_=Float))
    rows = conn.execute(
        select(
            client_table.c.id,
            client_table.c.hostname,
            client_table.c.pid,
            client_table.c.queues,
            client_table.c.heartbeat_at,
        )
        .where(client_table.c.heartbeat_at > func.now() - window)
        .order_by(client_table.c.id),
        {"within": within_seconds},
    )
    return [(r.id, r.hostname, r.pid, list(r.queues), r.heartbeat_at) for r in rows]


def missing_tables(conn: Connection, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that no table on the connection's search path answers to."""
    name = column("name", Text)
    wanted = func.unnest(bindparam("names", type_=ARRAY(Text))).table_valued(name).alias("wanted")
    stmt = select(wanted.c.name).where(func.to_regclass(wanted.c.name).is_(None))
    return list(conn.execute(stmt, {"names": list(names)}).scalars())
