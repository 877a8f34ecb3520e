"""Elector: Core-upsert election on river_leader, against real PostgreSQL.

A follower's renewal must compare the *stored* row (an upsert guarded on the incoming values
is always true, and every follower would believe it leads), so it changes nothing and reports
"not leader".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from _worker_helpers import wait_until
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from sa_river.elector import Elector
from sa_river.notifier import Notifier
from sa_river.queries.leader import (
    leader_attempt_elect,
    leader_attempt_reelect,
    leader_get,
    leader_resign,
)
from sa_river.queries.notify import TOPIC_LEADERSHIP


@pytest.fixture
def own_engine(db_url: URL) -> Iterator[Engine]:
    engine = create_engine(db_url, pool_size=3, max_overflow=0, pool_timeout=2)
    yield engine
    engine.dispose()


def make_elector(engine: Engine, leader_id: str, **kw: float) -> Elector:
    settings: dict[str, float] = {"interval": 0.2, "ttl": 2.0, "follower_jitter": 0.05}
    settings.update(kw)
    return Elector(engine, leader_id=leader_id, **settings)


class TestQueries:
    def test_first_candidate_wins_and_second_does_not(self, engine: Engine) -> None:
        with engine.begin() as conn:
            a = leader_attempt_elect(conn, leader_id="a", ttl=10)
        with engine.begin() as conn:
            b = leader_attempt_elect(conn, leader_id="b", ttl=10)
        assert a is not None
        assert a.leader_id == "a"
        assert b is None

    def test_follower_renewal_changes_nothing_and_reports_not_leader(self, engine: Engine) -> None:
        # A guard on EXCLUDED.leader_id (always true) would let "b" renew a's term.
        with engine.begin() as conn:
            a = leader_attempt_elect(conn, leader_id="a", ttl=10)
        assert a is not None
        with engine.begin() as conn:
            renewed_by_b = leader_attempt_reelect(conn, leader_id="b", term=a.elected_at, ttl=60)
            stored = leader_get(conn)
        assert renewed_by_b is None
        assert stored is not None
        assert stored.leader_id == "a"
        assert stored.expires_at == a.expires_at

    def test_renewal_of_an_older_term_is_refused(self, engine: Engine) -> None:
        with engine.begin() as conn:
            first = leader_attempt_elect(conn, leader_id="a", ttl=10)
        assert first is not None
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM river_leader"))
        with engine.begin() as conn:
            second = leader_attempt_elect(conn, leader_id="a", ttl=10)
        assert second is not None
        assert second.elected_at != first.elected_at
        with engine.begin() as conn:
            stale = leader_attempt_reelect(conn, leader_id="a", term=first.elected_at, ttl=60)
            current = leader_attempt_reelect(conn, leader_id="a", term=second.elected_at, ttl=60)
        assert stale is None
        assert current is not None
        assert current.expires_at > second.expires_at

    def test_expired_term_is_replaced(self, engine: Engine) -> None:
        with engine.begin() as conn:
            assert leader_attempt_elect(conn, leader_id="a", ttl=10) is not None
            conn.execute(text("UPDATE river_leader SET expires_at = now() - interval '1 second'"))
        with engine.begin() as conn:
            b = leader_attempt_elect(conn, leader_id="b", ttl=10)
        assert b is not None
        assert b.leader_id == "b"

    def test_resign_deletes_only_its_own_term_and_notifies(
        self, engine: Engine, db_url: URL
    ) -> None:
        import psycopg

        with engine.begin() as conn:
            a = leader_attempt_elect(conn, leader_id="a", ttl=10)
        assert a is not None
        dsn = db_url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute('LISTEN "public.river_leadership"')
            with engine.begin() as conn:
                assert not leader_resign(conn, leader_id="b", term=a.elected_at)
                assert leader_get(conn) is not None
                assert leader_resign(conn, leader_id="a", term=a.elected_at)
                assert leader_get(conn) is None
            notes = list(listener.notifies(timeout=5, stop_after=1))
        assert len(notes) == 1
        assert '"leader_id" : "a"' in notes[0].payload or '"leader_id": "a"' in notes[0].payload
        assert "resigned" in notes[0].payload


class TestElector:
    def test_single_elector_leads_and_resigns_on_stop(self, own_engine: Engine) -> None:
        transitions: list[bool] = []
        elector = make_elector(own_engine, "solo")
        elector.subscribe(transitions.append)
        elector.start()
        try:
            wait_until(elector.is_leader, 5, message="solo to lead")
        finally:
            elector.stop(5)
        assert transitions == [True, False]
        with own_engine.begin() as conn:
            assert leader_get(conn) is None

    def test_a_term_won_while_stopping_is_resigned_not_left_to_expire(
        self, own_engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A stop that lands while the first election is in flight: the term it wins is
        given up at once, instead of keeping the seat empty-handed for a whole TTL."""
        from sa_river import elector as elector_module

        transitions: list[bool] = []
        elector = make_elector(own_engine, "quitter", ttl=60.0)
        elector.subscribe(transitions.append)
        real_elect = elector_module.leader_attempt_elect

        def elect_then_get_stopped(*args: object, **kwargs: object) -> object:
            term = real_elect(*args, **kwargs)  # type: ignore[arg-type]
            elector._stop_event.set()  # the stop arrives while the transaction commits
            return term

        monkeypatch.setattr(elector_module, "leader_attempt_elect", elect_then_get_stopped)
        elector.start()
        assert elector.stop(5)
        with own_engine.begin() as conn:
            assert leader_get(conn) is None
        assert transitions == []  # never announced: no leader work was started
        assert not elector.is_leader()

    def test_follower_takes_over_promptly_after_resign(self, db_url: URL) -> None:
        engines = [create_engine(db_url, pool_size=2, max_overflow=0) for _ in range(2)]
        a = make_elector(engines[0], "a", interval=5.0, ttl=15.0)
        b = make_elector(engines[1], "b", interval=5.0, ttl=15.0)
        notifier = Notifier(db_url)
        notifier.subscribe(TOPIC_LEADERSHIP, b.on_leadership_notification)
        notifier.start()
        assert notifier.connected.wait(5)
        try:
            a.start()
            wait_until(a.is_leader, 5, message="a to lead")
            b.start()
            time.sleep(0.3)
            assert not b.is_leader()
            # Without the resign NOTIFY, b would wait for its next attempt (about 5 s).
            b_wakes = threading.Event()
            b.subscribe(lambda leading: leading and b_wakes.set())
            resigned_at = time.monotonic()
            a.stop(5)
            assert b_wakes.wait(4), "b did not take over within 4 s of a resigning"
            # (b polls every 5 s; it was woken by the resignation, so it is sooner than that.)
            assert time.monotonic() - resigned_at < 4
        finally:
            a.stop(5)
            b.stop(5)
            notifier.stop(5)
            for engine in engines:
                engine.dispose()

    def test_competing_electors_never_both_believe_they_lead(self, db_url: URL) -> None:
        # Each runner's pool has one connection; "partitioning" the leader means holding that
        # connection so it cannot renew. It keeps believing only inside its trust window, which
        # ends before its term can expire and a follower can win.
        engines = [
            create_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.1) for _ in range(3)
        ]
        electors = [
            make_elector(e, f"r{i}", interval=0.1, ttl=1.3, attempt_timeout=0.5)
            for i, e in enumerate(engines)
        ]
        for elector in electors:
            elector.start()
        violations = 0
        leaders_seen: list[str] = []
        held: list[tuple[float, object]] = []
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                now = time.monotonic()
                believers = [e for e in electors if e.is_leader()]
                if len(believers) > 1:
                    violations += 1
                for e in believers:
                    if not leaders_seen or leaders_seen[-1] != e.leader_id:
                        leaders_seen.append(e.leader_id)
                        # Partition the new leader for a while.
                        index = electors.index(e)
                        held.append((now + 2.5, engines[index].connect()))
                for release_at, conn in list(held):
                    if now >= release_at:
                        conn.close()  # type: ignore[attr-defined]
                        held.remove((release_at, conn))
                time.sleep(0.002)
        finally:
            for _, conn in held:
                conn.close()  # type: ignore[attr-defined]
            for elector in electors:
                elector.stop(5)
            for engine in engines:
                engine.dispose()
        assert violations == 0
        assert len(leaders_seen) >= 3, leaders_seen

    def test_leader_steps_down_when_it_cannot_renew(self, db_url: URL) -> None:
        engine = create_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
        transitions: list[bool] = []
        elector = make_elector(engine, "blocked", interval=0.2, ttl=1.5)
        elector.subscribe(transitions.append)
        elector.start()
        try:
            wait_until(elector.is_leader, 5, message="to lead")
            held = engine.connect()  # the elector's only pooled connection is now taken
            try:
                wait_until(lambda: not elector.is_leader(), 3, message="to step down")
            finally:
                held.close()
        finally:
            elector.stop(5)
            engine.dispose()
        assert transitions[:2] == [True, False]
