"""Every notification sa_river sends is, byte for byte, the one River sends for the same event.

River's Go workers may share the tables and LISTEN on the same channels: they must understand
sa_river's inserts, cancels, pauses and resignations as their own. Each expected payload below
is written as River produces it: its client formats insert notifications with Go's
``fmt.Sprintf("{\\"queue\\": %q}")`` and marshals queue control payloads with ``encoding/json``
(compact, ``job_id`` 0); its scheduler, cancel and leader resignation build theirs in SQL with
``json_build_object``. A River producer ignores a cancel that does not name its queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

import sa_river
from sa_river import InsertManyParams, InsertOpts
from sa_river.queries.job_fetch import job_get_available
from sa_river.queries.leader import leader_attempt_elect, leader_resign
from sa_river.queries.maintenance import job_schedule
from sa_river.urls import libpq_dsn

QUEUE = "wire"
WAIT = 5.0


class Wire:
    """An autocommit connection LISTENing on River's three channels of this schema."""

    def __init__(self, url: URL) -> None:
        self.conn = psycopg.connect(libpq_dsn(url), autocommit=True)
        row = self.conn.execute("SELECT current_schema()").fetchone()
        assert row is not None
        self.schema = str(row[0])
        for topic in ("river_insert", "river_control", "river_leadership"):
            self.conn.execute(f'LISTEN "{self.schema}.{topic}"')

    def heard(self, count: int) -> list[tuple[str, str]]:
        """The next ``count`` notifications, as (topic, payload)."""
        got: list[tuple[str, str]] = []
        for note in self.conn.notifies(timeout=WAIT, stop_after=count):
            got.append((note.channel.removeprefix(self.schema + "."), note.payload))
        assert len(got) == count, f"heard {got} within {WAIT}s, wanted {count}"
        return got

    def nothing_more(self) -> None:
        assert list(self.conn.notifies(timeout=0.3)) == []


@pytest.fixture
def wire(db_url: URL) -> Iterator[Wire]:
    listening = Wire(db_url)
    yield listening
    listening.conn.close()


def test_inserts_notify_as_rivers_client_does(engine: Engine, wire: Wire) -> None:
    opts = InsertOpts(queue=QUEUE)
    sa_river.insert(engine, ("wire", {"n": 1}), opts)
    sa_river.insert_many(engine, [InsertManyParams(("wire", {"n": 2}), opts)])
    sa_river.insert_many_fast(engine, [InsertManyParams(("wire", {"n": 3}), opts)])
    assert wire.heard(3) == [("river_insert", '{"queue": "wire"}')] * 3
    wire.nothing_more()


def test_the_scheduler_notifies_as_rivers_scheduler_does(engine: Engine, wire: Wire) -> None:
    soon = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    sa_river.insert(engine, ("wire", {}), InsertOpts(queue=QUEUE, scheduled_at=soon))
    with engine.begin() as conn:
        assert job_schedule(conn, lookahead_seconds=5, limit=10).available_queues == [QUEUE]
    assert wire.heard(1) == [("river_insert", '{"queue" : "wire"}')]


def test_a_cancel_names_the_job_and_its_queue(engine: Engine, wire: Wire) -> None:
    """River's producers act only on a cancel naming their queue; River sends one for every
    job the cancel finds unfinished, running or not."""
    running = sa_river.insert(engine, ("wire", {"n": 1}), InsertOpts(queue=QUEUE)).job
    waiting = sa_river.insert(engine, ("wire", {"n": 2}), InsertOpts(queue="other")).job
    with engine.begin() as conn:
        fetched = job_get_available(conn, queue=QUEUE, limit=1, client_id="wire-test")
    assert [job.id for job in fetched] == [running.id]
    wire.heard(2)  # the two inserts
    sa_river.cancel_job(engine, running.id)
    sa_river.cancel_job(engine, waiting.id)
    assert wire.heard(2) == [
        ("river_control", f'{{"action" : "cancel", "job_id" : {running.id}, "queue" : "wire"}}'),
        ("river_control", f'{{"action" : "cancel", "job_id" : {waiting.id}, "queue" : "other"}}'),
    ]
    sa_river.cancel_job(engine, waiting.id)  # already cancelled: River sends nothing either
    wire.nothing_more()


def test_pause_and_resume_are_rivers_control_payloads(engine: Engine, wire: Wire) -> None:
    sa_river.pause_queue(engine, QUEUE)
    sa_river.resume_queue(engine, "q<&>é")
    assert wire.heard(2) == [
        ("river_control", '{"action":"pause","job_id":0,"queue":"wire"}'),
        # Go's encoding/json escapes <, > and & and keeps other characters as they are.
        ("river_control", '{"action":"resume","job_id":0,"queue":"q\\u003c\\u0026\\u003eé"}'),
    ]


def test_a_resignation_is_rivers(engine: Engine, wire: Wire) -> None:
    with engine.begin() as conn:
        term = leader_attempt_elect(conn, leader_id="wire-leader", ttl=30)
    assert term is not None
    with engine.begin() as conn:
        assert leader_resign(conn, leader_id="wire-leader", term=term.elected_at)
    assert wire.heard(1) == [
        ("river_leadership", '{"leader_id" : "wire-leader", "action" : "resigned"}')
    ]
