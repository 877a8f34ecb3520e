"""The demo app: ``python -m sa_river demo`` enqueues a batch of these and works them.

It shows the usual shapes of a job: a typed args class, a sync handler and an async one, a
failure that is retried with backoff, and a snooze. :func:`run_demo` is the command itself, so
the command line only parses its flags.

Run your own worker on it with ``python -m sa_river worker --app sa_river.tools.demo:workers``.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta
from typing import TextIO

from sqlalchemy import create_engine

from sa_river import InsertOpts, Job, JobArgs, JobSnooze, Workers
from sa_river.enqueue import InsertManyParams, insert_many
from sa_river.queries.job_admin import job_count_by_state, job_count_with_errors
from sa_river.tools.progress import Progress
from sa_river.types import JobState
from sa_river.worker import Worker

__all__ = ["DEMO_OPTS", "FetchPage", "ResizeImage", "demo_jobs", "run_demo", "workers"]

workers = Workers()


class ResizeImage(JobArgs, kind="demo_resize_image"):
    """A CPU-ish sync job."""

    image_id: int
    width: int = 640


class FetchPage(JobArgs, kind="demo_fetch_page"):
    """An I/O-ish async job that sometimes fails the first time."""

    url: str
    flaky: bool = False


@workers.handler(ResizeImage, retry=lambda attempt: timedelta(seconds=0.2 * attempt))
def resize_image(job: Job[ResizeImage]) -> None:
    time.sleep(random.uniform(0.005, 0.03))
    if job.args.image_id % 25 == 0 and not job.metadata.get("snoozes"):
        # Not ready yet: try again shortly. A snooze does not use up an attempt (the attempt
        # number stays the same), so count snoozes through the job's metadata.
        raise JobSnooze(timedelta(seconds=0.3))


@workers.handler(FetchPage, retry=lambda attempt: timedelta(seconds=0.2 * attempt))
async def fetch_page(job: Job[FetchPage]) -> None:
    await asyncio.sleep(random.uniform(0.005, 0.05))
    if job.args.flaky and job.attempt == 1:
        raise ConnectionError(f"{job.args.url} timed out (the retry will succeed)")


def demo_jobs(count: int) -> list[JobArgs]:
    """``count`` demo jobs: two resizes for every page fetch, one fetch in ten flaky."""
    jobs: list[JobArgs] = []
    for i in range(count):
        if i % 3 == 2:
            jobs.append(FetchPage(url=f"https://example.com/page/{i}", flaky=i % 10 == 2))
        else:
            jobs.append(ResizeImage(image_id=i))
    return jobs


DEMO_OPTS = InsertOpts(tags=["demo"])


_POLL_SECONDS = 0.1


def run_demo(url: str, *, count: int, concurrency: int, timeout: float, out: TextIO) -> bool:
    """Enqueue ``count`` demo jobs on the migrated database at ``url``, work them with a worker
    of ``concurrency`` slots and show their progress on ``out``; true when every job completed
    within ``timeout`` seconds.

    Progress is read from the database, not from the worker: it counts what is committed, as
    anyone watching the queue would see it.
    """
    engine = create_engine(url, pool_size=1)
    try:
        results = insert_many(
            engine, [InsertManyParams(job, DEMO_OPTS) for job in demo_jobs(count)]
        )
        ids = [r.job.id for r in results]
        total = len(results)
        print(f"enqueued {total} demo jobs; working them", file=out)
        progress = Progress(out, total, width=30)
        worker = Worker(url, workers, {"default": concurrency})
        started = time.monotonic()
        worker.start()
        try:
            done = 0
            while time.monotonic() - started < timeout:
                with engine.begin() as conn:
                    done = job_count_by_state(conn, ids=ids).get(JobState.COMPLETED, 0)
                progress.show(f"{done}/{total} completed", done=done)
                if done >= total:
                    break
                time.sleep(_POLL_SECONDS)
        finally:
            worker.stop()
        elapsed = time.monotonic() - started
        with engine.begin() as conn:
            retried = job_count_with_errors(conn, ids)
        print(file=out)
        print(
            f"{done}/{total} demo jobs completed in {elapsed:.1f}s "
            f"({retried} needed a retry after an error)",
            file=out,
        )
    finally:
        engine.dispose()
    return done >= total
