"""Statements on ``sa_river_client``, the worker heartbeat table (internal)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    Connection,
    Float,
    Table,
    Text,
    column,
    delete,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import bindparam

from sa_river.models import SaRiverClient

__all__ = [
    "ClientRegistration",
    "LiveClient",
    "client_delete",
    "client_heartbeat",
    "client_list_alive",
    "client_register",
    "missing_tables",
]

client_table: Table = SaRiverClient.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class ClientRegistration:
    """What :func:`client_register` found and left: this incarnation's start (database time)
    and the row it replaced, if another incarnation of the same id had one."""

    started_at: datetime
    previous_hostname: str | None
    previous_pid: int | None
    previous_heartbeat_age: float | None
    """Seconds since the replaced row's last heartbeat (``None`` when there was no row)."""


def client_register(
    conn: Connection, *, client_id: str, hostname: str, pid: int, queues: Sequence[str]
) -> ClientRegistration:
    """Start a new incarnation of runner ``client_id``: its row now names this process and a
    ``started_at`` of now, whatever an earlier process of the same id left there.

    A running job whose attempt started before its runner's ``started_at`` belongs to an
    earlier incarnation, which is gone: that is how the rescuer finds the jobs of a worker
    killed and restarted under the same id (a fixed ``--id``, a supervised child).
    """
    c = client_table
    previous = (
        select(
            c.c.hostname,
            c.c.pid,
            func.extract("epoch", func.now() - c.c.heartbeat_at).label("age"),
        )
        .where(c.c.id == bindparam("id"))
        .cte("previous")
    )
    stmt = pg_insert(c).values(
        id=bindparam("id"),
        hostname=bindparam("hostname"),
        pid=bindparam("pid"),
        queues=bindparam("queues", type_=ARRAY(Text)),
    )
    upsert = (
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "hostname": stmt.excluded.hostname,
                "pid": stmt.excluded.pid,
                "queues": stmt.excluded.queues,
                "started_at": func.now(),
                "heartbeat_at": func.now(),
            },
        )
        .returning(c.c.started_at)
        .cte("upsert")
    )
    row = conn.execute(
        select(upsert.c.started_at, previous.c.hostname, previous.c.pid, previous.c.age)
        .select_from(upsert)
        .outerjoin(previous, literal(True)),
        {"id": client_id, "hostname": hostname, "pid": pid, "queues": list(queues)},
    ).one()
    return ClientRegistration(
        started_at=row.started_at,
        previous_hostname=row.hostname,
        previous_pid=row.pid,
        previous_heartbeat_age=None if row.age is None else float(row.age),
    )


def client_heartbeat(
    conn: Connection,
    *,
    client_id: str,
    started_at: datetime,
    hostname: str,
    pid: int,
    queues: Sequence[str],
) -> bool:
    """Move this incarnation's ``heartbeat_at`` to now; false when a newer incarnation of the
    same id has registered since (this process no longer owns the id).

    The row is written whole (``started_at`` included), so a row lost meanwhile (deleted as
    stale after a long outage) comes back as this incarnation's, not as a new one.
    """
    stmt = pg_insert(client_table).values(
        id=client_id, hostname=hostname, pid=pid, queues=list(queues), started_at=started_at
    )
    result = conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "hostname": stmt.excluded.hostname,
                "pid": stmt.excluded.pid,
                "heartbeat_at": func.now(),
                "queues": stmt.excluded.queues,
            },
            # A newer incarnation owns the row: never move it back to this one.
            where=client_table.c.started_at == stmt.excluded.started_at,
        ).returning(client_table.c.id)
    )
    return result.first() is not None


def client_delete(conn: Connection, client_id: str, *, started_at: datetime | None = None) -> None:
    """Remove runner ``client_id``'s row (clean shutdown); with ``started_at``, only while it
    is still that incarnation's (a newer process of the same id keeps its row)."""
    stmt = delete(client_table).where(client_table.c.id == client_id)
    if started_at is not None:
        stmt = stmt.where(client_table.c.started_at == started_at)
    conn.execute(stmt)


@dataclass(frozen=True)
class LiveClient:
    """A runner that heartbeated recently, as :func:`client_list_alive` returns it."""

    id: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    heartbeat_at: datetime


def client_list_alive(conn: Connection, within_seconds: float) -> list[LiveClient]:
    """The runners that heartbeated within the last ``within_seconds``, by id."""
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
    return [
        LiveClient(
            id=r.id,
            hostname=r.hostname,
            pid=r.pid,
            queues=tuple(r.queues),
            heartbeat_at=r.heartbeat_at,
        )
        for r in rows
    ]


def missing_tables(conn: Connection, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that no table on the connection's search path answers to."""
    name = column("name", Text)
    wanted = func.unnest(bindparam("names", type_=ARRAY(Text))).table_valued(name).alias("wanted")
    stmt = select(wanted.c.name).where(func.to_regclass(wanted.c.name).is_(None))
    return list(conn.execute(stmt, {"names": list(names)}).scalars())
