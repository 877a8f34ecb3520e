"""The ``--app`` of ``test_prometheus.py``'s ``worker --metrics-port`` runs (not a test module).

``python -m sa_river worker --app _metrics_app:workers`` (with this directory on
``PYTHONPATH``): kind ``noop`` succeeds, kind ``boom`` logs a line of its own, then raises.
"""

from __future__ import annotations

import logging
from typing import Any

import sa_river

logger = logging.getLogger("metrics_app")
workers = sa_river.Workers()


@workers.handler("noop")
def noop(job: sa_river.Job[dict[str, Any]]) -> None:
    return None


@workers.handler("boom")
def boom(job: sa_river.Job[dict[str, Any]]) -> None:
    logger.info("about to fail job %d", job.id)
    raise ValueError("boom")
