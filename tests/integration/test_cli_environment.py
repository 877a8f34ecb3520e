"""``worker`` configured the way operators do it, against real PostgreSQL, in real processes.

- A worker configured through ``SA_RIVER_*`` variables alone (no option on its command line)
  works a job with those settings: its queues, its id, its log level and format, and its app
  found through ``SA_RIVER_APP_DIR``.
- ``SA_RIVER_PROCESSES=2`` with a factory ``--app``: two supervised children with the same
  settings and their own ids, each calling the factory once (the supervisor never does), and
  none of them a supervisor itself.
- The ``sa-river`` console script imports the app from the current directory (or
  ``--app-dir``), as ``python -m sa_river`` always could.

Each test writes a tiny app module into a temporary directory that is on no import path;
the handler and the factory record, in files beside it, which process did what. Every wait is
bounded and every process started here is killed on the way out if it is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _worker_helpers import count_states, process_alive, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

import sa_river
from sa_river.enqueue import InsertManyParams
from sa_river.options import InsertOpts

APP_MODULE = "envjobs"
APP_SOURCE = '''\
"""The app of test_cli_environment.py: a registry, ``workers``, and a factory,
``create_workers``; what ran where is appended to files beside this one."""

import os
from pathlib import Path

import sa_river

HERE = Path(__file__).parent


def _append(name, line):
    with (HERE / name).open("a") as f:
        f.write(line + "\\n")


def _build():
    workers = sa_river.Workers()

    @workers.handler("note")
    def note(job):
        _append("worked.txt", f"{job.id} {os.getpid()}")

    return workers


workers = _build()


def create_workers():
    _append("factory_calls.txt", str(os.getpid()))
    return _build()
'''

EXIT_TIMEOUT = 30.0


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / f"{APP_MODULE}.py").write_text(APP_SOURCE)
    return directory


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A current directory that does not hold the app."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    return directory


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _base_environment(db_url: URL) -> dict[str, str]:
    """This process's environment without any ``SA_RIVER_*`` setting or ``PYTHONPATH`` (the
    app must be found through the worker's own rules), plus the database URL."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SA_RIVER_") and name != "PYTHONPATH"
    }
    env["SA_RIVER_DATABASE_URL"] = db_url.render_as_string(hide_password=False)
    return env


class WorkerCommand:
    """One ``worker`` command (a runner or a supervisor); its stdout and stderr go to ``log``."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True
            )

    def output(self) -> str:
        return self.log.read_text()

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"the worker command is {state}; its output:\n{self.output()[-4000:]}"

    def wait_for_output(self, needle: str) -> None:
        wait_until(
            lambda: needle in self.output() or self.proc.poll() is not None,
            message=lambda: f"{needle!r} in the output; {self.describe()}",
        )
        assert needle in self.output(), self.describe()

    def terminate(self) -> int:
        """SIGTERM, then the exit code (bounded)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"no exit within {EXIT_TIMEOUT:g}s of SIGTERM; {self.describe()}"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def commands(engine: Engine) -> Iterator[list[WorkerCommand]]:
    """Every worker command a test starts, killed at the end if still alive, with any
    worker process that registered in the database (a supervisor's children)."""
    started: list[WorkerCommand] = []
    yield started
    for command in started:
        command.kill()
    for pid in _clients(engine).values():
        if pid != os.getpid() and process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _clients(engine: Engine) -> dict[str, int]:
    """``client id -> pid`` of the workers' heartbeat rows."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, pid FROM sa_river_client")).all()
    return {str(r.id): int(r.pid) for r in rows}


def _insert_notes(engine: Engine, count: int, queue: str) -> list[int]:
    opts = InsertOpts(queue=queue)
    items = [InsertManyParams(("note", {"i": i}), opts) for i in range(count)]
    return [result.job.id for result in sa_river.insert_many(engine, items)]


def _wait_completed(engine: Engine, count: int, command: WorkerCommand) -> None:
    wait_until(
        lambda: count_states(engine) == {"completed": count},
        message=lambda: (
            f"{count} jobs completed (states {count_states(engine)}); {command.describe()}"
        ),
    )


def test_a_worker_configured_only_through_the_environment_works_a_job(
    db_url: URL,
    engine: Engine,
    app_dir: Path,
    elsewhere: Path,
    tmp_path: Path,
    commands: list[WorkerCommand],
) -> None:
    env = _base_environment(db_url) | {
        "SA_RIVER_APP": f"{APP_MODULE}:workers",
        "SA_RIVER_APP_DIR": str(app_dir),
        "SA_RIVER_QUEUES": "mail=2, reports=1",
        "SA_RIVER_ID": "from-env",
        "SA_RIVER_POLL_INTERVAL": "0.2",
        "SA_RIVER_SHUTDOWN_TIMEOUT": "5",
        "SA_RIVER_LOG_LEVEL": "debug",
        "SA_RIVER_LOG_FORMAT": "JSON",
    }
    argv = [sys.executable, "-m", "sa_river", "worker"]  # not one option
    worker = WorkerCommand(argv, env, elsewhere, tmp_path / "worker.log")
    commands.append(worker)
    worker.wait_for_output("worker from-env running ['note']")

    [job_id] = _insert_notes(engine, 1, "mail")
    _wait_completed(engine, 1, worker)
    with engine.connect() as conn:
        attempted_by = conn.execute(
            text("SELECT attempted_by FROM river_job WHERE id = :id"), {"id": job_id}
        ).scalar_one()
        queues = conn.execute(
            text("SELECT queues FROM sa_river_client WHERE id = 'from-env'")
        ).scalar_one()
    assert attempted_by == ["from-env"]
    assert sorted(queues) == ["mail", "reports"]
    assert _lines(app_dir / "worked.txt") == [f"{job_id} {worker.proc.pid}"]

    assert worker.terminate() == 0, worker.describe()
    # JSON lines, down to DEBUG: the variables' log settings, whatever their case.
    records = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert records, worker.describe()
    assert "DEBUG" in {record["level"] for record in records}, worker.describe()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_supervised_children_share_the_environments_settings_and_call_the_factory_once_each(
    db_url: URL,
    engine: Engine,
    app_dir: Path,
    elsewhere: Path,
    tmp_path: Path,
    commands: list[WorkerCommand],
) -> None:
    env = _base_environment(db_url) | {
        "SA_RIVER_APP": f"{APP_MODULE}:create_workers",
        "SA_RIVER_APP_DIR": str(app_dir),
        "SA_RIVER_PROCESSES": "2",
        "SA_RIVER_ID": "sup",
        "SA_RIVER_QUEUES": "mail=2",
        "SA_RIVER_POLL_INTERVAL": "0.2",
        "SA_RIVER_SHUTDOWN_TIMEOUT": "5",
    }
    supervisor = WorkerCommand(
        [sys.executable, "-m", "sa_river", "worker"], env, elsewhere, tmp_path / "sup.log"
    )
    commands.append(supervisor)

    def two_children() -> dict[str, int] | None:
        clients = {cid: pid for cid, pid in _clients(engine).items() if process_alive(pid)}
        return clients if set(clients) == {"sup-1", "sup-2"} else None

    children = wait_until(
        two_children, message=lambda: f"children sup-1 and sup-2; {supervisor.describe()}"
    )
    total = 20
    _insert_notes(engine, total, "mail")
    _wait_completed(engine, total, supervisor)

    # Each child called the factory once; the supervisor did not.
    assert sorted(map(int, _lines(app_dir / "factory_calls.txt"))) == sorted(children.values())
    assert supervisor.proc.pid not in children.values()
    assert {int(line.split()[1]) for line in _lines(app_dir / "worked.txt")} <= set(
        children.values()
    )
    for client_id, pid in children.items():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert argv[argv.index("--id") + 1] == client_id, argv
        assert argv[argv.index("--queue") + 1] == "mail=2", argv
        assert argv[argv.index("--app") + 1] == f"{APP_MODULE}:create_workers", argv
        assert "--processes" not in argv, argv
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        # Its settings are its argv: the variables it inherited are blanked.
        assert "SA_RIVER_PROCESSES=" in environ
        assert "SA_RIVER_ID=" in environ
    # Only the two children ever registered: neither became a supervisor of its own.
    assert set(_clients(engine)) == {"sup-1", "sup-2"}

    assert supervisor.terminate() == 0, supervisor.describe()
    for pid in children.values():
        wait_until(lambda pid=pid: not process_alive(pid), 10, message=f"pid {pid} to exit")


def _console_script() -> Path:
    script = Path(sys.executable).with_name("sa-river")
    assert script.exists(), f"the sa-river console script is not installed beside {sys.executable}"
    return script


@pytest.mark.parametrize("where", ["current-directory", "app-dir"])
def test_the_console_script_imports_the_app_and_calls_its_factory(
    where: str,
    db_url: URL,
    engine: Engine,
    app_dir: Path,
    elsewhere: Path,
    tmp_path: Path,
    commands: list[WorkerCommand],
) -> None:
    argv = [
        str(_console_script()),
        "worker",
        "--app",
        f"{APP_MODULE}:create_workers",
        "--poll-interval",
        "0.2",
        "--shutdown-timeout",
        "5",
        "--log-level",
        "Info",
    ]
    if where == "current-directory":
        cwd = app_dir
    else:
        cwd = elsewhere
        argv += ["--app-dir", str(app_dir)]
    worker = WorkerCommand(argv, _base_environment(db_url), cwd, tmp_path / "worker.log")
    commands.append(worker)
    worker.wait_for_output("running ['note']")

    [job_id] = _insert_notes(engine, 1, "default")
    _wait_completed(engine, 1, worker)
    assert _lines(app_dir / "worked.txt") == [f"{job_id} {worker.proc.pid}"]
    assert _lines(app_dir / "factory_calls.txt") == [str(worker.proc.pid)]
    assert worker.terminate() == 0, worker.describe()


def test_the_console_script_without_the_app_dir_says_where_it_looked(
    db_url: URL, app_dir: Path, elsewhere: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(_console_script()), "worker", "--app", f"{APP_MODULE}:workers"],
        env=_base_environment(db_url),
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    assert result.stderr == (
        f"sa-river: error: cannot import '{APP_MODULE}' for --app: No module named "
        f"'{APP_MODULE}' (searched {elsewhere} first; --app-dir or SA_RIVER_APP_DIR names "
        "another directory)\n"
    )
