"""The test suite's own database server (tests/conftest.py) leaves nothing behind.

Without ``SA_RIVER_TEST_DATABASE_URL`` or a server on 127.0.0.1:5432, the suite starts an
embedded PostgreSQL from the ``pgserver`` wheel for the session. It must be stopped when the
session ends: a server whose temporary data directory was deleted first keeps running, orphaned,
after pytest has exited, one more after every run.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

# What a session does with it, in a process of its own, so that the check below also sees what
# happens when the process exits (pgserver's own atexit clean-up).
SESSION = textwrap.dedent(
    f"""
    import sys

    sys.path.insert(0, {str(TESTS)!r})
    import psycopg
    from conftest import _libpq_dsn, embedded_server

    with embedded_server() as url:
        with psycopg.connect(_libpq_dsn(url)) as conn:
            print(conn.execute("SHOW data_directory").fetchone()[0], flush=True)
    """
)


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None, reason="pgserver is not installed here"
)
def test_the_embedded_server_is_stopped_when_the_session_ends(tmp_path: Path) -> None:
    """After a session on the embedded server, no postgres process runs on its data directory,
    and the directory is gone."""
    import psutil  # a dependency of pgserver

    done = subprocess.run(
        [sys.executable, "-c", SESSION],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data_dir = done.stdout.strip().splitlines()[-1]
    assert "sa_river_pg_" in data_dir, done.stdout
    left = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if data_dir in " ".join(process.info["cmdline"] or []):
            left.append(process.info)
            process.kill()  # do not leave it running after this test either
    assert left == [], f"still running on {data_dir} after the session ended"
    assert not Path(data_dir).exists()
