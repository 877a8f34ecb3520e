"""A private PostgreSQL cluster that a fault test owns: it may stop, crash and restart it.

Never the shared server on 127.0.0.1:5432: each cluster is created with ``initdb`` in a temp
directory, listens on a free port of 127.0.0.1 (and a unix socket in that directory), trusts
every local connection, and is stopped with ``pg_ctl stop -m immediate`` and deleted at the
end, whatever happened.

The binaries are the first of: ``/usr/lib/postgresql/<newest>/bin``, ``pg_ctl`` on ``PATH``,
the ones bundled in the ``pgserver`` wheel. ``initdb`` and ``postgres`` refuse to run as root:
when the tests run as root (CI), every server command runs as the ``postgres`` system user,
and the temp directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

from sqlalchemy.engine import URL

__all__ = ["ClusterUnavailable", "PostgresCluster", "find_bindir"]

SERVER_USER = "postgres"
COMMAND_TIMEOUT = 60.0


class ClusterUnavailable(Exception):
    """No PostgreSQL binaries that can be started and restarted on this machine."""


def find_bindir() -> Path:
    """The directory of ``initdb``/``pg_ctl`` to use; :class:`ClusterUnavailable` if none."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates = list(versions)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if _complete(bindir):
            return bindir
    # pgserver (through platformdirs) warns at import time when XDG_RUNTIME_DIR is unset, and
    # the suite turns warnings into errors.
    with warnings.catch_warnings(), contextlib.suppress(ImportError):
        warnings.simplefilter("ignore")
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if _complete(bundled):
            return bundled
    raise ClusterUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in /usr/lib/postgresql/*/bin, "
        "on PATH or in the pgserver wheel"
    )


def _complete(bindir: Path) -> bool:
    return all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One ``initdb`` cluster in a temp directory. Use :meth:`create`, then :meth:`destroy`."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.logfile = root / "server.log"
        self.port = port
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise ClusterUnavailable(
                    f"running as root and there is no {SERVER_USER!r} user to run the server as"
                ) from None

    @classmethod
    def create(cls) -> PostgresCluster:
        """``initdb`` a new cluster on a free port and start it."""
        bindir = find_bindir()
        root = Path(tempfile.mkdtemp(prefix="sa_river_fault_pg_"))
        cluster = cls(bindir, root, _free_port())
        try:
            if cluster._run_as is not None:
                os.chown(root, cluster._run_as.pw_uid, cluster._run_as.pw_gid)
            cluster._initdb()
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    # -- commands -----------------------------------------------------------------------------

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs = {
                "user": self._run_as.pw_uid,
                "group": self._run_as.pw_gid,
                "extra_groups": [],
            }
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self._run_as is not None:
            env["HOME"] = str(self.root)
        result = subprocess.run(  # type: ignore[call-overload]
            [str(self.bindir / argv[0]), *argv[1:]],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            **kwargs,
        )
        assert isinstance(result, subprocess.CompletedProcess)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} {' '.join(argv[1:])} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}\n{self.server_log()}"
            )
        return result

    def _pg_ctl(
        self, action: str, *argv: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", action, "-D", str(self.data), *argv, check=check)

    def _initdb(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "300",
            # Safe against the process crashes these tests cause (the OS keeps the page cache);
            # only an OS crash could lose data, and the cluster is thrown away anyway.
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._pg_ctl("start", "-l", str(self.logfile), "-w", "-t", "60")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (clients are disconnected, a clean shutdown) or ``-m
        immediate`` (a crash: no shutdown checkpoint, recovery on the next start)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown stop mode {mode!r}")
        self._pg_ctl("stop", "-m", mode, "-w", "-t", "60")

    def restart(self, mode: str = "fast") -> None:
        """Stop (in ``mode``) and start again at once."""
        self.stop(mode)
        self.start()

    def outage(self, seconds: float, mode: str = "fast") -> None:
        """Stop, stay down for ``seconds``, start again."""
        self.stop(mode)
        time.sleep(seconds)
        self.start()

    def running(self) -> bool:
        return self._pg_ctl("status", check=False).returncode == 0

    # -- addresses ----------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+psycopg", username="postgres", host="127.0.0.1", port=self.port,
            database=database,
        )  # fmt: skip

    def server_log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # -- teardown -----------------------------------------------------------------------------

    def destroy(self) -> None:
        """``pg_ctl stop -m immediate``, make sure the postmaster is gone, delete everything."""
        if self.data.exists():
            with contextlib.suppress(Exception):
                self._pg_ctl("stop", "-m", "immediate", "-w", check=False)
            self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        pidfile = self.data / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"postgres" in cmdline:  # a stale pid file could name a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
