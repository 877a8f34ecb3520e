"""The demo app: ``python -m sa_river demo`` enqueues a batch of these and works them.

It shows the usual shapes of a job: a typed args class, a sync handler and an async one, a
failure that is retried with backoff, and a snooze.

Run your own worker on it with ``python -m sa_river worker --app sa_river.tools.demo:workers``.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta

from sa_river import InsertOpts, Job, JobArgs, JobSnooze, Workers

__all__ = ["FetchPage", "ResizeImage", "demo_jobs", "workers"]

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
