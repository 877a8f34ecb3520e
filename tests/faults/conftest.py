"""Fault injection: real worker processes against a PostgreSQL cluster the test owns.

Every test here is marked ``faults``. The slowest are also marked ``slow_fault`` and are
deselected (not skipped) unless ``--run-slow-faults`` is given (registered in the repository's
root ``conftest.py``: options must be added by an initial conftest) or ``CI=true``.

Fixtures:

- ``fault_cluster`` (per module): a private cluster (see ``_cluster.py``) with a template
  database migrated by ``python -m sa_river migrate up`` and holding the ``fault_effects``
  table; ``PostgresCluster`` helpers stop, crash, restart it or take it away for a while.
- ``fault_db``: a fresh copy of the template for one test (its URL).
- ``fleet``: starts worker commands; every process it started is killed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from tests.conftest import DatabaseFactory
from tests.faults._cluster import ClusterUnavailable, PostgresCluster
from tests.faults._fault_app import EFFECTS_TABLE_SQL
from tests.faults._harness import ROOT, Fleet, url_string

HERE = Path(__file__).parent
TEMPLATE = "fault_template"


def _run_slow(config: pytest.Config) -> bool:
    return bool(config.getoption("--run-slow-faults", default=False)) or (
        os.environ.get("CI", "").lower() == "true"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if HERE in Path(str(item.path)).parents]
    for item in mine:
        item.add_marker(pytest.mark.faults)
    if _run_slow(config):
        return
    deselected = [item for item in mine if item.get_closest_marker("slow_fault") is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        chosen = set(map(id, deselected))
        items[:] = [item for item in items if id(item) not in chosen]


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[PostgresCluster]:
    """A private cluster for the module, with the migrated template database."""
    try:
        cluster = PostgresCluster.create()
    except ClusterUnavailable as exc:
        pytest.skip(f"no PostgreSQL that these tests can stop and restart: {exc}")
    try:
        _create_template(cluster)
        yield cluster
    finally:
        cluster.destroy()


def _create_template(cluster: PostgresCluster) -> None:
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{TEMPLATE}"'))
    finally:
        admin.dispose()
    url = cluster.url(TEMPLATE)
    migrated = subprocess.run(
        [sys.executable, "-m", "sa_river", "migrate", "up", "--database-url", url_string(url)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(EFFECTS_TABLE_SQL))
    finally:
        engine.dispose()


@pytest.fixture
def fault_db(fault_cluster: PostgresCluster) -> Iterator[URL]:
    """A fresh migrated database on the module's cluster."""
    databases = DatabaseFactory(fault_cluster.url())
    url = databases.create(template=TEMPLATE, prefix="fault")
    yield url
    if not fault_cluster.running():  # a test that failed while the server was down
        fault_cluster.start()
    databases.drop(url)


@pytest.fixture
def fault_engine(fault_db: URL) -> Iterator[Engine]:
    engine = create_engine(fault_db, pool_pre_ping=True, connect_args={"connect_timeout": 2})
    yield engine
    engine.dispose()


@pytest.fixture
def fleet(fault_db: URL, tmp_path: Path) -> Iterator[Fleet]:
    """Worker commands of one test; all killed at the end, whatever happened."""
    started = Fleet(fault_db, tmp_path, tmp_path / "executions.txt")
    try:
        yield started
    finally:
        started.cleanup()
