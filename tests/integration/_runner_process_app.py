"""A full worker runner (elector + maintenance) for the chaos tests (not a test module).

    python _runner_process_app.py DATABASE_URL BELIEFS_FILE

Settings come from the environment (short intervals so the tests run in seconds):
``RUNNER_ELECT_INTERVAL`` (0.3), ``RUNNER_LEADER_TTL`` (2.0), ``RUNNER_RESCUE_TTL`` (2.0),
``RUNNER_PERIODIC`` (seconds of a periodic ``tick`` job; 0 = none).

Kind ``sleepy`` sleeps ``args["sleep"]`` seconds; every attempt records a row in
``executions(job_id, client_id, started_at, finished_at)`` (the row is written when the
attempt starts and its ``finished_at`` set when it ends), on a connection of its own.

A sampler thread checks ``worker.is_leader()`` every 2 ms and appends ``<CLOCK_MONOTONIC>
<0|1>`` to BELIEFS_FILE whenever the belief changes (flushed at once, so a SIGKILL loses
nothing written). CLOCK_MONOTONIC is one clock for every process of the machine, so the
files of several runners can be laid side by side.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import create_engine, text

import sa_river


def main(argv: list[str]) -> int:
    url, beliefs_path = argv[0], argv[1]
    recorder = create_engine(url, pool_size=5, max_overflow=10)
    workers = sa_river.Workers()

    @workers.handler("sleepy", timeout=timedelta(seconds=60))
    def sleepy(job: sa_river.Job[dict[str, Any]]) -> None:
        with recorder.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO executions (job_id, client_id, started_at) "
                    "VALUES (:job_id, :client_id, clock_timestamp())"
                ),
                {"job_id": job.id, "client_id": client_id},
            )
        time.sleep(float(job.args.get("sleep", 0)))
        with recorder.begin() as conn:
            conn.execute(
                text(
                    "UPDATE executions SET finished_at = clock_timestamp() "
                    "WHERE job_id = :job_id AND client_id = :client_id AND finished_at IS NULL"
                ),
                {"job_id": job.id, "client_id": client_id},
            )

    @workers.handler("tick")
    def tick(job: sa_river.Job[dict[str, Any]]) -> None:
        return None

    periodic_seconds = float(os.environ.get("RUNNER_PERIODIC", "0"))
    if periodic_seconds:
        from sa_river.periodic import PeriodicJob
    periodic = (
        [PeriodicJob(timedelta(seconds=periodic_seconds), lambda: ("tick", {}), name="tick")]
        if periodic_seconds
        else []
    )
    worker = sa_river.Worker(
        url,
        workers,
        {"default": 5},
        periodic_jobs=periodic,
        fetch_poll_interval=0.2,
        heartbeat_interval=0.3,
        elect_interval=float(os.environ.get("RUNNER_ELECT_INTERVAL", "0.3")),
        leader_ttl=float(os.environ.get("RUNNER_LEADER_TTL", "2.0")),
        scheduler_interval=0.3,
        rescuer_interval=0.5,
        rescue_heartbeat_ttl=float(os.environ.get("RUNNER_RESCUE_TTL", "2.0")),
        shutdown_timeout=5,
    )
    client_id = worker.client_id

    def sample() -> None:
        belief = False
        with open(beliefs_path, "a", buffering=1) as out:
            out.write(f"{time.monotonic():.6f} 0\n")
            while not worker.stopped.is_set():
                now_believes = worker.is_leader()
                if now_believes != belief:
                    belief = now_believes
                    out.write(f"{time.monotonic():.6f} {int(belief)}\n")
                    out.flush()
                time.sleep(0.002)
            out.write(f"{time.monotonic():.6f} 0\n")

    threading.Thread(target=sample, daemon=True).start()
    print("ready", client_id, flush=True)
    worker.run()
    recorder.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
