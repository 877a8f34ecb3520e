"""The shipped Alembic revisions as a contract, against real PostgreSQL.

Covers the three doors of :mod:`sa_river.migrate`: Door 1 (``upgrade(connection)`` inside an
env.py, here the repository's example ``alembic/`` env), Door 2 (standalone: ``command_*`` and
``python -m sa_river migrate``) and Door 3 (the package's versions listed in a user env's
``version_locations``).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import op
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from sa_river import migrate
from sa_river.models import RiverBase

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_DIR = REPO_ROOT / "sa_river" / "migrations" / "versions"
ALEMBIC_BIN = Path(sys.executable).with_name("alembic")

HEAD = "sa_river_0009"
REVISIONS = [f"sa_river_{n:04d}" for n in range(1, 10)]
RIVER_TABLES = {
    "river_job",
    "river_leader",
    "river_migration",
    "river_notification",
    "river_queue",
    "sa_river_client",
}


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def empty_engine(empty_db_url: URL) -> Iterator[sa.Engine]:
    engine = sa.create_engine(empty_db_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def run(
    argv: list[str], url: URL | None, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("SA_RIVER_DATABASE_URL", None)
    if url is not None:
        env["SA_RIVER_DATABASE_URL"] = url_string(url)
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def tables(conn: sa.Connection) -> set[str]:
    rows = conn.execute(
        sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    )
    return {row[0] for row in rows}


def river_versions(conn: sa.Connection) -> list[tuple[str, int]]:
    if "river_migration" not in tables(conn):
        return []
    rows = conn.execute(sa.text("SELECT line, version FROM river_migration ORDER BY version"))
    return [(row[0], row[1]) for row in rows]


def schema_snapshot(conn: sa.Connection) -> dict[str, Any]:
    """Everything DDL can change in the current schema, in a comparable form (no OIDs)."""

    def query(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in conn.execute(sa.text(sql))]

    ns = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
    return {
        "relations": query(
            f"SELECT relname, relkind, relpersistence FROM pg_class WHERE relnamespace = {ns} "
            "ORDER BY relname"
        ),
        "columns": query(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            f"WHERE c.relnamespace = {ns} AND c.relkind = 'r' AND a.attnum > 0 "
            "AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
        ),
        "constraints": query(
            "SELECT c.relname, con.conname, pg_get_constraintdef(con.oid) FROM pg_constraint con "
            f"JOIN pg_class c ON c.oid = con.conrelid WHERE c.relnamespace = {ns} ORDER BY 1, 2"
        ),
        "indexes": query(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() ORDER BY 1, 2"
        ),
        "enums": query(
            "SELECT t.typname, e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
            f"WHERE t.typnamespace = {ns} ORDER BY t.typname, e.enumsortorder"
        ),
        "functions": query(
            f"SELECT proname, pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = {ns} "
            "ORDER BY 1"
        ),
        "triggers": query(
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            f"JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = {ns} "
            "AND NOT t.tgisinternal ORDER BY 1, 2"
        ),
    }


# --- the script directory --------------------------------------------------------------------


def test_single_head_on_the_sa_river_branch() -> None:
    script = migrate.script_directory()
    assert script.get_heads() == [HEAD]
    assert script.get_bases() == ["sa_river_0001"]
    head = script.get_revision(f"{migrate.BRANCH_LABEL}@head")
    assert head is not None
    assert head.revision == HEAD
    root = script.get_revision("sa_river_0001")
    assert root is not None
    assert root.branch_labels == {migrate.BRANCH_LABEL}
    chain = [rev.revision for rev in script.walk_revisions("base", "heads")]
    assert chain == list(reversed(REVISIONS))
    assert migrate.head_revisions() == (HEAD,)


def test_revisions_import_only_alembic_and_sqlalchemy() -> None:
    files = sorted(VERSIONS_DIR.glob("*.py"))
    assert [f.name[: len("sa_river_0001")] for f in files] == REVISIONS
    allowed = {"__future__", "collections", "alembic", "sqlalchemy"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_include_name_hides_river_objects_only() -> None:
    parents: Any = {"schema_name": None, "table_name": None, "schema_qualified_table_name": None}
    for name in [*RIVER_TABLES, "river_client", "river_client_queue", migrate.VERSION_TABLE]:
        assert not migrate.include_name(name, "table", parents)
    assert migrate.include_name("users", "table", parents)
    assert migrate.include_name("alembic_version", "table", parents)
    in_job: Any = {**parents, "table_name": "river_job"}
    assert not migrate.include_name("river_job_kind", "index", in_job)
    assert not migrate.include_name("kind", "column", in_job)
    in_users: Any = {**parents, "table_name": "users"}
    assert migrate.include_name("ix_users_email", "index", in_users)
    assert migrate.include_name("river_job_state", "column", in_users)
    assert not migrate.include_name("kind_length", "check_constraint", in_job)
    plugin_kind: Any = "enum"  # not one of Alembic's own kinds
    assert not migrate.include_name("river_job_state", plugin_kind, parents)
    assert migrate.include_name(None, "schema", parents)


# --- standalone round trips ------------------------------------------------------------------


def test_base_head_base_head_on_an_empty_database(empty_engine: sa.Engine) -> None:
    with empty_engine.connect() as conn:
        migrate.upgrade(conn)
        assert not conn.in_transaction()  # returned outside any transaction, all committed
        assert migrate.current(conn) == (HEAD,)
        assert tables(conn) >= RIVER_TABLES
        first = schema_snapshot(conn)

        migrate.downgrade(conn, "base")
        assert migrate.current(conn) == ()
        assert tables(conn) == {migrate.VERSION_TABLE}  # Alembic keeps its version table
        empty = schema_snapshot(conn)
        assert empty["enums"] == []
        assert empty["functions"] == []

        migrate.upgrade(conn)
        assert migrate.current(conn) == (HEAD,)
        assert schema_snapshot(conn) == first

    # Door 2's commands go through the shipped env.py and agree.
    assert migrate.command_downgrade(empty_engine, "base") == ()
    assert migrate.command_upgrade(empty_engine) == (HEAD,)
    assert migrate.command_current(empty_engine) == (HEAD,)
    with empty_engine.connect() as conn:
        assert schema_snapshot(conn) == first


def test_every_downgrade_restores_the_previous_schema(empty_engine: sa.Engine) -> None:
    with empty_engine.connect() as conn:
        migrate.upgrade(conn, "base")  # creates the (empty) version table, which downgrades keep
        for previous, revision in zip(["base", *REVISIONS[:-1]], REVISIONS, strict=True):
            before = schema_snapshot(conn)
            migrate.upgrade(conn, revision)
            assert migrate.current(conn) == (revision,)
            migrate.downgrade(conn, previous)
            assert schema_snapshot(conn) == before, f"{revision} down does not undo its up"
            migrate.upgrade(conn, revision)


def test_river_migration_records_river_versions(empty_engine: sa.Engine) -> None:
    with empty_engine.connect() as conn:
        migrate.upgrade(conn)
        assert river_versions(conn) == [("main", v) for v in range(1, 8)]
        migrate.downgrade(conn, "sa_river_0005")  # River version 4
        assert river_versions(conn) == [("main", v) for v in range(1, 5)]
        migrate.downgrade(conn, "sa_river_0002")
        assert river_versions(conn) == [("main", 1)]
        migrate.downgrade(conn, "base")
        assert river_versions(conn) == []
        assert "river_migration" not in tables(conn)


def test_models_match_migrations(db_url: URL) -> None:
    engine = sa.create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_name": lambda name, type_, _parents: (
                        not (type_ == "table" and name == migrate.VERSION_TABLE)
                    ),
                },
            )
            assert compare_metadata(ctx, RiverBase.metadata) == []
    finally:
        engine.dispose()


def test_offline_sql_builds_the_same_schema(empty_db_url: URL, db_url: URL) -> None:
    script = migrate.command_sql()
    assert script.count("BEGIN;") == script.count("COMMIT;") == len(REVISIONS)
    with psycopg.connect(libpq_dsn(empty_db_url), autocommit=True) as raw:
        raw.execute(script.encode())  # one simple-protocol query: many statements
    offline = sa.create_engine(empty_db_url, poolclass=NullPool)
    online = sa.create_engine(db_url, poolclass=NullPool)
    try:
        with offline.connect() as a, online.connect() as b:
            assert schema_snapshot(a) == schema_snapshot(b)
            assert migrate.current(a) == (HEAD,)
            assert river_versions(a) == river_versions(b)
    finally:
        offline.dispose()
        online.dispose()


def test_offline_sql_from_a_revision() -> None:
    script = migrate.command_sql("sa_river_0006", start="sa_river_0004")
    assert "sa_river_0004 -> sa_river_0005" in script
    assert "sa_river_0005 -> sa_river_0006" in script
    assert "CREATE TABLE river_job " not in script
    assert "CREATE UNLOGGED TABLE river_client" in script


# --- Door 1 and Door 2 together ---------------------------------------------------------------


def test_door2_then_door1_is_a_no_op(empty_db_url: URL) -> None:
    assert migrate.command_upgrade(url_string(empty_db_url)) == (HEAD,)
    engine = sa.create_engine(empty_db_url, poolclass=NullPool)
    marker = sa.text(
        f"SELECT xmin::text, (SELECT 'river_job'::regclass::oid) FROM {migrate.VERSION_TABLE}"
    )
    try:
        with engine.connect() as conn:
            before = conn.execute(marker).one()
            conn.rollback()
            migrate.upgrade(conn)
            with conn.begin():
                migrate.upgrade(conn)
            assert conn.execute(marker).one() == before  # version row and tables untouched
            assert river_versions(conn) == [("main", v) for v in range(1, 8)]
    finally:
        engine.dispose()


def test_upgrade_inside_a_caller_transaction_rolls_back_with_it(empty_engine: sa.Engine) -> None:
    with empty_engine.connect() as conn:
        with conn.begin() as tx:
            migrate.upgrade(conn)
            assert migrate.current(conn) == (HEAD,)
            tx.rollback()
        assert migrate.current(conn) == ()
        assert tables(conn) == set()


def test_upgrade_nested_in_a_running_revision_keeps_the_outer_op(empty_engine: sa.Engine) -> None:
    with empty_engine.begin() as conn:
        outer = MigrationContext.configure(conn)
        with Operations.context(outer):
            migrate.upgrade(conn)
            op.execute("CREATE TABLE created_by_outer_op (id int)")  # op still bound to outer
        assert {"created_by_outer_op", "river_job"} <= tables(conn)


@pytest.mark.parametrize("in_transaction", [False, True], ids=["own-transactions", "caller-tx"])
def test_concurrent_upgrades_build_the_schema_once(
    empty_engine: sa.Engine, in_transaction: bool
) -> None:
    barrier = threading.Barrier(2, timeout=20)
    errors: list[BaseException] = []

    def boot() -> None:
        try:
            with empty_engine.connect() as conn:
                barrier.wait()
                if in_transaction:
                    with conn.begin():
                        migrate.upgrade(conn)
                else:
                    migrate.upgrade(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot, name=f"boot-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
        assert not thread.is_alive()
    assert errors == []
    with empty_engine.connect() as conn:
        assert migrate.current(conn) == (HEAD,)
        count = conn.execute(sa.text(f"SELECT count(*) FROM {migrate.VERSION_TABLE}")).scalar()
        assert count == 1
        assert river_versions(conn) == [("main", v) for v in range(1, 8)]


def test_concurrent_upgrades_of_two_databases_in_one_process(databases: Any) -> None:
    # Alembic's op proxy is process-global; each run must use its own connection.
    urls = [databases.create(), databases.create()]
    engines = [sa.create_engine(url, poolclass=NullPool) for url in urls]
    barrier = threading.Barrier(2, timeout=20)
    errors: list[BaseException] = []

    def boot(engine: sa.Engine) -> None:
        try:
            with engine.connect() as conn:
                barrier.wait()
                migrate.upgrade(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(engine,)) for engine in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=40)
            assert not thread.is_alive()
        assert errors == []
        for engine in engines:
            with engine.connect() as conn:
                assert migrate.current(conn) == (HEAD,)
                assert river_versions(conn) == [("main", v) for v in range(1, 8)]
    finally:
        for engine in engines:
            engine.dispose()
        for url in urls:
            databases.drop(url)


# --- a database whose River versions 2-3 came from River itself -----------------------------


def _make_enum_like_rivers_v3(conn: sa.Connection) -> None:
    """Rebuild river_job_state without 'pending', as River's own versions 2-3 left it."""
    for statement in [
        "ALTER TABLE river_job ALTER COLUMN state DROP DEFAULT",
        "ALTER TABLE river_job DROP CONSTRAINT finalized_or_finalized_at_null",
        "ALTER TYPE river_job_state RENAME TO river_job_state_with_pending",
        "CREATE TYPE river_job_state AS ENUM ('available', 'cancelled', 'completed', "
        "'discarded', 'retryable', 'running', 'scheduled')",
        "ALTER TABLE river_job ALTER COLUMN state TYPE river_job_state "
        "USING state::text::river_job_state",
        "ALTER TABLE river_job ALTER COLUMN state SET DEFAULT 'available'",
        "ALTER TABLE river_job ADD CONSTRAINT finalized_or_finalized_at_null CHECK ("
        "(state IN ('cancelled', 'completed', 'discarded') AND finalized_at IS NOT NULL) "
        "OR finalized_at IS NULL)",
        "DROP TYPE river_job_state_with_pending",
    ]:
        conn.execute(sa.text(statement))


def test_upgrading_rivers_own_v3_needs_pending_committed(
    empty_engine: sa.Engine, db_url: URL
) -> None:
    with empty_engine.connect() as conn:
        migrate.upgrade(conn, "sa_river_0004")  # River version 3
        with conn.begin():
            _make_enum_like_rivers_v3(conn)

        # One caller transaction: 'pending' would be added and used before commit.
        with pytest.raises(CommandError, match="'pending' in this same transaction"), conn.begin():
            migrate.upgrade(conn)
        assert migrate.current(conn) == ("sa_river_0004",)

        # Our own transactions: one per revision, so 'pending' is committed in time.
        migrate.upgrade(conn)
        assert migrate.current(conn) == (HEAD,)
        upgraded = schema_snapshot(conn)
    reference = sa.create_engine(db_url, poolclass=NullPool)
    try:
        with reference.connect() as conn:
            assert upgraded == schema_snapshot(conn)
    finally:
        reference.dispose()


# --- Door 1: the repository's example alembic/ env ---------------------------------------------


def test_repo_alembic_env_hosts_sa_river(empty_db_url: URL, empty_engine: sa.Engine) -> None:
    alembic = [str(ALEMBIC_BIN)]

    up = run([*alembic, "upgrade", "head"], empty_db_url)
    assert up.returncode == 0, up.stderr
    with empty_engine.connect() as conn:
        assert {*RIVER_TABLES, "example_app_note", "alembic_version"} <= tables(conn)
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [
            ("app_0001",)
        ]
        assert migrate.current(conn) == (HEAD,)
        assert river_versions(conn) == [("main", v) for v in range(1, 8)]

    check = run([*alembic, "check"], empty_db_url)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout

    stamp = run([*alembic, "stamp", "base"], empty_db_url)  # not a downgrade: river stays
    assert stamp.returncode == 0, stamp.stderr
    with empty_engine.connect() as conn:
        assert tables(conn) >= RIVER_TABLES
    assert run([*alembic, "stamp", "head"], empty_db_url).returncode == 0

    down = run([*alembic, "downgrade", "base"], empty_db_url)
    assert down.returncode == 0, down.stderr
    with empty_engine.connect() as conn:
        assert tables(conn) == {"alembic_version", migrate.VERSION_TABLE}
        assert migrate.current(conn) == ()
        assert schema_snapshot(conn)["enums"] == []
        assert schema_snapshot(conn)["functions"] == []


# --- Door 3: the package's versions in a user's version_locations ---------------------------


USER_ENV_PY = """
from alembic import context
from sqlalchemy import create_engine, pool

import os

def run() -> None:
    engine = create_engine(os.environ["SA_RIVER_DATABASE_URL"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()

run()
"""

USER_REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "user_0001"
down_revision = None
branch_labels = None
depends_on = None

def upgrade():
    op.create_table("user_widget", sa.Column("id", sa.Integer, primary_key=True))

def downgrade():
    op.drop_table("user_widget")
"""


def test_door3_version_locations_with_multiple_bases(
    empty_db_url: URL, empty_engine: sa.Engine, tmp_path: Path
) -> None:
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(USER_ENV_PY)
    (tmp_path / "versions" / "user_0001_widget.py").write_text(USER_REVISION)
    (tmp_path / "alembic.ini").write_text(
        textwrap.dedent(
            """\
            [alembic]
            script_location = %(here)s
            # space, not os: the os separator (":") would split "sa_river:migrations/versions"
            path_separator = space
            version_locations = %(here)s/versions sa_river:migrations/versions
            """
        )
    )
    alembic = [str(ALEMBIC_BIN), "-c", str(tmp_path / "alembic.ini")]

    up = run([*alembic, "upgrade", "heads"], empty_db_url, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    with empty_engine.connect() as conn:
        assert {*RIVER_TABLES, "user_widget"} <= tables(conn)
        assert migrate.VERSION_TABLE not in tables(conn)  # history is in the user's table
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert sorted(row[0] for row in rows) == [HEAD, "user_0001"]
        assert river_versions(conn) == [("main", v) for v in range(1, 8)]

    down = run([*alembic, "downgrade", "sa_river@base"], empty_db_url, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    with empty_engine.connect() as conn:
        assert tables(conn) == {"alembic_version", "user_widget"}


# --- Door 2: python -m sa_river migrate ---------------------------------------------------------


def test_cli_migrate_up_current_sql_down(empty_db_url: URL) -> None:
    cli = [sys.executable, "-m", "sa_river", "migrate"]
    url = ["--database-url", url_string(empty_db_url)]

    up = run([*cli, "up", *url], None)
    assert (up.returncode, up.stdout, up.stderr) == (0, f"sa_river schema at {HEAD} (head)\n", "")

    current = run([*cli, "current"], empty_db_url)  # URL from SA_RIVER_DATABASE_URL
    assert (current.returncode, current.stdout) == (0, f"{HEAD} (head)\n")

    sql = run([*cli, "sql"], None)
    assert sql.returncode == 0, sql.stderr
    assert "CREATE TABLE river_job " in sql.stdout
    assert sql.stdout.count("COMMIT;") == len(REVISIONS)

    down = run([*cli, "down", *url, "--target", "sa_river_0005"], None)
    assert (down.returncode, down.stdout) == (0, "sa_river schema at sa_river_0005\n")

    down = run([*cli, "down", *url, "--target", "base"], None)
    assert (down.returncode, down.stdout) == (0, "sa_river schema at base\n")
    current = run([*cli, "current", *url], None)
    assert (current.returncode, current.stdout) == (0, "base\n")


def test_cli_unreachable_database_is_one_line_exit_1() -> None:
    url = "postgresql+psycopg://bob:s3cret@127.0.0.1:1/nowhere"
    result = run([sys.executable, "-m", "sa_river", "migrate", "up", "--database-url", url], None)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "sa-river: error: cannot use database 'postgresql+psycopg://bob:***@127.0.0.1:1/nowhere'"
    )
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_malformed_url_and_unknown_revision_exit_1() -> None:
    cli = [sys.executable, "-m", "sa_river", "migrate"]
    bad_url = run([*cli, "current", "--database-url", "postgres//nope:pw@"], None)
    assert bad_url.returncode == 1
    assert bad_url.stderr.startswith("sa-river: error: malformed database URL")
    assert bad_url.stderr.count("\n") == 1
    assert "pw" not in bad_url.stderr

    unknown = run([*cli, "sql", "--target", "sa_river_9999"], None)
    assert unknown.returncode == 1
    assert (
        unknown.stderr == "sa-river: error: Can't locate revision identified by 'sa_river_9999'\n"
    )
