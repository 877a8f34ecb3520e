"""A registry that carries a whole runner configuration, for ``python -m sa_river worker
--app _registry_app:workers`` in ``test_handler_integration.py`` (not a test module).

Its periodic job runs once as the leader starts; its handler writes a row to ``ticks`` through
its Session (committed with the job) and records what the lifespan yielded as its output.
``failing`` is a registry whose lifespan cannot start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

import sa_river


@contextlib.contextmanager
def lifespan() -> Iterator[dict[str, str]]:
    yield {"origin": "the lifespan"}


workers = sa_river.Workers(
    periodic_jobs=[
        sa_river.PeriodicJob(timedelta(hours=1), lambda: ("registry_tick", {}), run_on_start=True)
    ],
    lifespan=lifespan,
)


@workers.handler("registry_tick")
def tick(job: sa_river.Job[dict[str, Any]], session: Session) -> dict[str, str]:
    session.execute(text("INSERT INTO ticks (job_id) VALUES (:id)"), {"id": job.id})
    return {"from": job.context["origin"]}


@contextlib.contextmanager
def broken_lifespan() -> Iterator[None]:
    raise ConnectionError("the cache at cache:6379 refused the connection")
    yield


failing = sa_river.Workers(lifespan=broken_lifespan)
