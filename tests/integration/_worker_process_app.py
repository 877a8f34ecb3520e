"""A worker process for ``test_worker_processes.py`` (not a test module).

    python _worker_process_app.py DATABASE_URL SLEEP_SECONDS QUEUE_LIMIT SHUTDOWN_TIMEOUT

Registers one sync handler, kind ``noop``, that sleeps ``SLEEP_SECONDS`` and then records its
execution as a row ``(job_id, client_id)`` in the table ``executions``, on a connection of its
own. Prints ``ready <client_id>`` once set up, waits for a ``go`` line on stdin (so that several
processes start working together), then runs the worker until SIGTERM/SIGINT: ``Worker.run()``
installs the signal handlers, the first signal stops gracefully, a second one stops hard.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from sqlalchemy import create_engine, text

import sa_river


def main(argv: list[str]) -> int:
    url, sleep, limit, shutdown_timeout = argv[0], float(argv[1]), int(argv[2]), float(argv[3])
    recorder = create_engine(url, pool_size=limit, max_overflow=limit)
    workers = sa_river.Workers()
    client_id = sa_river.WorkerConfig().client_id

    @workers.handler("noop")
    def noop(job: sa_river.Job[dict[str, Any]]) -> None:
        if sleep:
            time.sleep(sleep)
        with recorder.begin() as conn:
            conn.execute(
                text("INSERT INTO executions (job_id, client_id) VALUES (:job_id, :client_id)"),
                {"job_id": job.id, "client_id": client_id},
            )

    worker = sa_river.Worker(
        url,
        workers,
        {"default": limit},
        client_id=client_id,
        fetch_poll_interval=0.2,
        shutdown_timeout=shutdown_timeout,
    )
    print("ready", worker.client_id, flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    worker.run()
    recorder.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
