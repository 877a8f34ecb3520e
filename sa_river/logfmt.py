"""One-line, key=value log records for the worker command (internal).

Every sa_river log call passes ``extra={"event": ..., "job_id": ...}``; this formatter appends
those fields, so each event is one grep-able line::

    2026-11-23T10:00:00 INFO sa_river.executor job 12 (send_email) attempt 1 failed: ...
        event=job_failed job_id=12
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from sa_river.types import storable_text

__all__ = [
    "LOG_FORMATS",
    "STRUCTURED_FIELDS",
    "JsonFormatter",
    "KeyValueFormatter",
    "configure_logging",
]

STRUCTURED_FIELDS = (
    "event",
    "job_id",
    "kind",
    "queue",
    "attempt",
    "duration_ms",
    "client_id",
    "hook",
    "method",
)
"""The documented, stable fields (docs/observability.md, "Structured logs")."""

LOG_FORMATS = ("text", "json")


class KeyValueFormatter(logging.Formatter):
    """``time level logger message`` and the structured fields that are set, as ``key=value``.

    The line is made UTF-8-clean (:func:`~sa_river.types.storable_text`): a handler's error
    about an undecodable file name carries a lone surrogate, and a stream that encodes strictly
    (a log file) would otherwise print "--- Logging error ---" instead of the record.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return storable_text(super().format(record))

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The fields go on the message's line, before any traceback that follows it.
        line = super().formatMessage(record)
        fields = [
            f"{name}={getattr(record, name)}"
            for name in STRUCTURED_FIELDS
            if getattr(record, name, None) is not None
        ]
        return f"{line} {' '.join(fields)}" if fields else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the structured
    fields that are set, and ``exception`` (the formatted traceback) when there is one.

    Texts go through :func:`~sa_river.types.storable_text` before encoding: json would write a
    lone surrogate as a ``\\udce9`` escape, which decodes back into text that strict consumers
    (and PostgreSQL, should the logs end up there) reject.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": storable_text(record.getMessage()),
        }
        for name in STRUCTURED_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = storable_text(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = storable_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=_storable_str)


def _storable_str(value: object) -> str:
    return storable_text(str(value))


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Log to stderr, one line per record, with the structured fields.

    Called by the worker command after it imported the application: if the application set up
    logging itself (the root logger has handlers), sa_river's records simply propagate to it
    at ``level``. Otherwise the handler goes on the root logger, so the application's own
    records (a handler's ``logger.info``) are printed beside sa_river's, in the same format.
    """
    ours = logging.getLogger("sa_river")
    ours.handlers[:] = []
    ours.propagate = True
    ours.setLevel(level.upper())
    alembic = logging.getLogger("alembic")  # the schema check's chatter is not the worker's news
    if alembic.level == logging.NOTSET:
        alembic.setLevel(logging.WARNING)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
