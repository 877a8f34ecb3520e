"""The ``--app`` of ``test_supervisor.py``'s ``worker --processes`` runs (not a test module).

``python -m sa_river worker --app _supervised_app:workers`` (with this directory on
``PYTHONPATH``): one handler, kind ``record``, that records each execution as a row
``(job_id, pid)`` in the table ``executions`` of the database in ``SA_RIVER_DATABASE_URL``.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import create_engine, text

import sa_river

workers = sa_river.Workers()
_recorder = create_engine(os.environ["SA_RIVER_DATABASE_URL"], pool_size=2)


@workers.handler("record")
def record(job: sa_river.Job[dict[str, Any]]) -> None:
    with _recorder.begin() as conn:
        conn.execute(
            text("INSERT INTO executions (job_id, pid) VALUES (:job_id, :pid)"),
            {"job_id": job.id, "pid": os.getpid()},
        )
