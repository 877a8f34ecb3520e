"""Notification channels and ``pg_notify`` helpers (internal).

Channels are ``<schema>.<topic>`` like River's, the schema being ``current_schema()`` of the
connection, so that workers of one schema are not woken by inserts into another.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql as psycopg_sql
from sqlalchemy import ColumnElement, String, Text, any_, case, cast, func, literal, select
from sqlalchemy.dialects.postgresql import array

from sa_river.args import encode_json
from sa_river.types import FINALIZED_STATES

__all__ = [
    "CURRENT_SCHEMA_SQL",
    "TOPIC_CONTROL",
    "TOPIC_FINALIZED",
    "TOPIC_INSERT",
    "TOPIC_LEADERSHIP",
    "channel_expr",
    "control_payload",
    "listen_statement",
    "notify_finalized",
    "notify_insert",
]

TOPIC_INSERT = "river_insert"
TOPIC_LEADERSHIP = "river_leadership"
TOPIC_CONTROL = "river_control"
TOPIC_FINALIZED = "sa_river_job_finalized"
"""sa_river's own topic (River has none like it): ``{"ids": [...]}`` of the jobs an outcome
statement finalised, or ``{}`` for "look again", for :func:`sa_river.wait_for`."""


def channel_expr(topic: str) -> ColumnElement[str]:
    """SQL for the channel name of ``topic`` in the connection's current schema."""
    return func.concat(func.current_schema(), literal("." + topic, String))


def notify_insert(
    queue: ColumnElement[str], *, by_scheduler: bool = False
) -> ColumnElement[object]:
    """``pg_notify('<schema>.river_insert', '{"queue": ...}')`` for the queue in ``queue``.

    Select it once per distinct queue, inside the inserting transaction: listeners hear of it
    only when that transaction commits. The payload is River's, byte for byte: its client
    writes ``{"queue": "<name>"}`` after an insert, and its scheduler (``by_scheduler``)
    ``json_build_object('queue', queue)``, which PostgreSQL prints ``{"queue" : "<name>"}``.
    """
    payload: ColumnElement[str]
    if by_scheduler:
        payload = cast(func.json_build_object(literal("queue", Text), queue), Text)
    else:
        payload = func.concat(literal('{"queue": ', Text), func.to_json(queue), literal("}", Text))
    return func.pg_notify(channel_expr(TOPIC_INSERT), payload)


_FINALIZED = tuple(sorted(state.value for state in FINALIZED_STATES))
_NOTIFIED_IDS_MAX = 300
"""At most this many ids in a finalized notification (20 bytes each at most, well inside
NOTIFY's 8,000-byte payload); more are announced as ``{}``: every waiter looks again."""


def notify_finalized(updated: Any) -> Any:
    """A scalar subquery sending one ``pg_notify`` on ``<schema>.sa_river_job_finalized`` for
    the rows of ``updated`` (a CTE with ``id`` and ``state`` columns) that are now finalised,
    and nothing when none is. Select it beside ``updated``, in the changing statement."""
    finalized = cast(updated.c.state, Text) == any_(
        array([literal(state, Text) for state in _FINALIZED])
    )
    payload = case(
        (
            func.count() <= _NOTIFIED_IDS_MAX,
            cast(func.json_build_object(literal("ids", Text), func.json_agg(updated.c.id)), Text),
        ),
        else_=literal("{}", Text),
    )
    return (
        select(func.pg_notify(channel_expr(TOPIC_FINALIZED), payload))
        .select_from(updated)
        .where(finalized)
        .having(func.count() > 0)
        .scalar_subquery()
    )


def control_payload(action: str, queue: str) -> str:
    """A queue control notification (``pause``/``resume``) as River's client sends it: its
    control struct marshalled by Go, compact, ``job_id`` 0, the queue's name escaped as Go
    escapes it, so River's producers of that queue (or of every queue, for ``"*"``) act on it.
    """
    return f'{{"action":{encode_json(action)},"job_id":0,"queue":{encode_json(queue)}}}'


def listen_statement(channel: str) -> psycopg_sql.Composed:
    """``LISTEN "<channel>"`` with the channel quoted as an identifier."""
    return psycopg_sql.SQL("LISTEN {}").format(psycopg_sql.Identifier(channel))


CURRENT_SCHEMA_SQL = "SELECT current_schema()"
