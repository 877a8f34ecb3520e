"""``python -m sa_river worker --processes 2`` against real PostgreSQL.

The supervisor starts two runner processes (each heartbeats with its own client id and pid),
they work jobs exactly once between them, a child killed with SIGKILL is started again, one
leader is elected among them, and SIGTERM to the supervisor stops everything with exit code 0.
Every wait is bounded; every process started here is killed on the way out if still alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _worker_helpers import process_alive, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

import sa_river

HERE = Path(__file__).parent


def _clients(engine: Engine) -> dict[str, int]:
    """``client id -> pid`` of the heartbeat rows."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, pid FROM sa_river_client")).all()
    return {str(r.id): int(r.pid) for r in rows}


def _scalar(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def _live_clients(engine: Engine) -> dict[str, int]:
    return {cid: pid for cid, pid in _clients(engine).items() if process_alive(pid)}


@pytest.fixture
def supervisor(db_url: URL, engine: Engine, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE executions (job_id bigint NOT NULL, pid int NOT NULL)"))
    url = db_url.render_as_string(hide_password=False)
    env = dict(os.environ, SA_RIVER_DATABASE_URL=url)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    log = (tmp_path / "supervisor.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sa_river",
            "worker",
            "--processes",
            "2",
            "--app",
            "_supervised_app:workers",
            "--queue",
            "default=5",
            "--poll-interval",
            "0.2",
            "--shutdown-timeout",
            "5",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: set[int] = set()
    proc.seen_pids = seen  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in seen | set(_clients(engine).values()):
            if pid != os.getpid() and process_alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


def test_two_children_work_jobs_restart_after_kill_and_stop_on_sigterm(
    supervisor: subprocess.Popen[str], engine: Engine, tmp_path: Path
) -> None:
    seen: set[int] = supervisor.seen_pids  # type: ignore[attr-defined]

    def log() -> str:
        return (tmp_path / "supervisor.log").read_text()[-3000:]

    def two_live(excluding: int | None = None) -> dict[str, int] | None:
        clients = _live_clients(engine)
        return clients if len(clients) == 2 and excluding not in clients.values() else None

    first = wait_until(two_live, message=lambda: f"two live worker processes; log:\n{log()}")
    seen.update(first.values())
    assert len(set(first.values())) == 2
    assert supervisor.pid not in first.values()

    # They work jobs, each exactly once.
    total = 200
    sa_river.insert_many(engine, [("record", {"i": i}) for i in range(total)])
    wait_until(
        lambda: (
            _scalar(engine, "SELECT count(*) FROM river_job WHERE state = 'completed'") == total
        ),
        message=lambda: f"{total} jobs completed; log:\n{log()}",
    )
    assert _scalar(engine, "SELECT count(*) FROM executions") == total
    assert _scalar(engine, "SELECT count(DISTINCT job_id) FROM executions") == total

    # One leader among them.
    def leader() -> str | None:
        with engine.connect() as conn:
            return conn.execute(text("SELECT leader_id FROM river_leader")).scalar()

    assert wait_until(leader, message="a leader") in first

    # A child killed with SIGKILL is started again.
    victim_id, victim_pid = sorted(first.items())[0]
    os.kill(victim_pid, signal.SIGKILL)
    replaced = wait_until(
        lambda: two_live(excluding=victim_pid),
        message=lambda: f"the killed worker process to be replaced; log:\n{log()}",
    )
    seen.update(replaced.values())
    assert victim_id not in replaced

    # SIGTERM to the supervisor stops everything, exit code 0.
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0, log()
    for pid in seen:
        wait_until(lambda pid=pid: not process_alive(pid), 10, message=f"pid {pid} to exit")
    with engine.connect() as conn:
        running = conn.execute(text("SELECT count(*) FROM river_job WHERE state = 'running'"))
        assert running.scalar_one() == 0
    # Cleanly stopped runners remove their heartbeat rows; only the killed one's is left.
    assert set(_clients(engine)) == {victim_id}


# --- the database password stays out of argv ----------------------------------------------------


def _cmdline(pid: int) -> str:
    """What ``ps`` shows any user of the machine as the command of ``pid``."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _run_until_two_children(
    argv: list[str], env: dict[str, str], engine: Engine, tmp_path: Path
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """Start the supervisor; once both children heartbeat, it and their pids (by client id)."""
    log_path = tmp_path / "supervisor.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sa_river", "worker", "--processes", "2", *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        children = wait_until(
            lambda: (clients := _live_clients(engine)) and len(clients) == 2 and clients,
            message=lambda: f"two live worker processes; log:\n{log_path.read_text()[-3000:]}",
        )
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, children


def _stop(proc: subprocess.Popen[str], children: dict[str, int]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in children.values():
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _url_with_password(db_url: URL) -> tuple[str, str]:
    """``db_url`` with a password, and the password. The local test server trusts its clients
    and ignores it; a configured server's own password is kept (and then must not show)."""
    password = db_url.password or "SECRETPW"
    return db_url.set(password=password).render_as_string(hide_password=False), str(password)


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/cmdline").exists(), reason="reads argv from /proc"
)


@needs_proc
def test_supervised_children_do_not_show_the_database_password_from_the_option(
    db_url: URL, engine: Engine, tmp_path: Path
) -> None:
    url, password = _url_with_password(db_url)
    env = {k: v for k, v in os.environ.items() if k != "SA_RIVER_DATABASE_URL"}
    argv = ["--app", "sa_river.tools.demo:workers", "--database-url", url]
    proc, children = _run_until_two_children(argv, env, engine, tmp_path)
    try:
        for pid in children.values():
            assert password not in _cmdline(pid), _cmdline(pid)
        # The supervisor's own argv holds the URL the user typed: docs/cli.md says to prefer
        # SA_RIVER_DATABASE_URL for a URL with a password.
    finally:
        _stop(proc, children)
    assert proc.returncode == 0


@needs_proc
def test_supervisor_and_children_do_not_show_the_database_password_from_the_environment(
    db_url: URL, engine: Engine, tmp_path: Path
) -> None:
    url, password = _url_with_password(db_url)
    env = dict(os.environ, SA_RIVER_DATABASE_URL=url)
    proc, children = _run_until_two_children(
        ["--app", "sa_river.tools.demo:workers"], env, engine, tmp_path
    )
    try:
        for pid in [proc.pid, *children.values()]:
            assert password not in _cmdline(pid), _cmdline(pid)
    finally:
        _stop(proc, children)
    assert proc.returncode == 0
