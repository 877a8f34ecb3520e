"""One-line, key=value log records for the worker command (internal).

Every sa_river log call passes ``extra={"event": ..., "job_id": ...}``; this formatter appends
those fields, so each event is one grep-able line::

    2026-11-23T10:00:00 INFO sa_river.executor job 12 (send_email) attempt 1 failed: ...
        event=job_failed job_id=12
"""

from __future__ import annotations

import logging

__all__ = ["STRUCTURED_FIELDS", "KeyValueFormatter", "configure_logging"]

STRUCTURED_FIELDS = ("event", "job_id", "kind", "queue", "attempt", "duration_ms", "client_id")


class KeyValueFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{name}={getattr(record, name)}"
            for name in STRUCTURED_FIELDS
            if getattr(record, name, None) is not None
        ]
        return f"{line} {' '.join(fields)}" if fields else line


def configure_logging(level: str = "INFO") -> None:
    """Send sa_river's records to stderr, one line each, with their structured fields."""
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("sa_river")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
