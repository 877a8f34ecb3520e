"""One-line, key=value (or JSON) log records for the worker command (internal).

Every sa_river log call passes ``extra={"event": ..., "job_id": ...}``; these formatters add
those fields, so each event is one grep-able line::

    2026-11-23T10:00:00 INFO sa_river.executor job 12 (send_email) attempt 1 failed: ...
        event=job_failed job_id=12

One record is always one line, whatever it carries: log collectors (journald, Docker, a
Kubernetes node agent) split on line breaks, and a handler's error message with a newline, or a
traceback, would otherwise arrive as several records, the later ones without time, level or
fields. The text format writes line breaks inside the line as escapes (``\\n``) and a traceback
after the message as ``exception="..."``, quoted and escaped as a JSON string (``json.loads`` of
the quoted part gives it back), so that the line still ends with its fields; the JSON format
escapes them as JSON always does.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from sa_river.types import storable_text

__all__ = [
    "JOB_LINE_EVENT",
    "LOG_FORMATS",
    "STRUCTURED_FIELDS",
    "JobLines",
    "JsonFormatter",
    "KeyValueFormatter",
    "configure_logging",
    "one_line_text",
]

STRUCTURED_FIELDS = (
    "event",
    "job_id",
    "kind",
    "queue",
    "attempt",
    "state",
    "duration_ms",
    "client_id",
    "hook",
    "method",
)
"""The documented, stable fields (docs/observability.md, "Structured logs")."""

LOG_FORMATS = ("text", "json")

JOB_LINE_EVENT = "job_done"
"""The event of the executor's record for each finished attempt (logged at DEBUG)."""

JOB_LOGGER = "sa_river.executor"
"""The logger of the :data:`JOB_LINE_EVENT` records."""

# Every character str.splitlines() breaks a line at, with how it is written inside one.
_LINE_BREAKS = {
    "\n": "\\n",
    "\r": "\\r",
    "\v": "\\v",
    "\f": "\\f",
    "\x1c": "\\x1c",
    "\x1d": "\\x1d",
    "\x1e": "\\x1e",
    "\x85": "\\x85",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_ESCAPE_LINE_BREAKS = str.maketrans(_LINE_BREAKS)


def one_line_text(text: str) -> str:
    """``text`` with every line break (anything :meth:`str.splitlines` splits at) written as
    its escape, ``\\n`` for a newline: one line, still readable."""
    return text.translate(_ESCAPE_LINE_BREAKS)


def _quoted(text: str) -> str:
    """``text`` as a JSON string literal on one line: quotes, backslashes and control
    characters escaped, and the line breaks JSON leaves alone (U+2028, ...) too."""
    return one_line_text(json.dumps(text, ensure_ascii=False))


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's formatted traceback, if it has one (cached on the record, as
    :class:`logging.Formatter` does). ``exc_info`` of ``(None, None, None)``, which
    ``logger.exception`` outside an ``except`` block gives, is no traceback, even when another
    formatter cached its ``"NoneType: None"``."""
    if record.exc_info:
        if record.exc_info[0] is None:
            return None
        if not record.exc_text:
            record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or None


class KeyValueFormatter(logging.Formatter):
    """``time level logger message``, the traceback, if any, as ``exception="..."``
    (``stack="..."`` for ``stack_info``), then the structured fields that are set, as
    ``key=value``: one line per record, ending with its fields, its line breaks escaped
    (:func:`one_line_text`).

    The line is made UTF-8-clean (:func:`~sa_river.types.storable_text`): a handler's error
    about an undecodable file name carries a lone surrogate, and a stream that encodes strictly
    (a log file) would otherwise print "--- Logging error ---" instead of the record.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        parts = [self.formatMessage(record)]
        # The traceback goes with the message, so that every line still ends with its fields.
        exception = _exception_text(self, record)
        if exception:
            parts.append(f"exception={_quoted(exception)}")
        if record.stack_info:
            parts.append(f"stack={_quoted(self.formatStack(record.stack_info))}")
        parts += [
            f"{name}={getattr(record, name)}"
            for name in STRUCTURED_FIELDS
            if getattr(record, name, None) is not None
        ]
        return storable_text(one_line_text(" ".join(parts)))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time``, ``level``, ``logger``, ``message``,
    the structured fields that are set, ``exception`` (the formatted traceback) when there is
    one and ``stack`` for ``stack_info``.

    Texts go through :func:`~sa_river.types.storable_text` before encoding: json would write a
    lone surrogate as a ``\\udce9`` escape, which decodes back into text that strict consumers
    (and PostgreSQL, should the logs end up there) reject. Every line break is escaped: the
    output is ASCII (``ensure_ascii``), so not even U+2028 is written as it is.
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
        exception = _exception_text(self, record)
        if exception:
            entry["exception"] = storable_text(exception)
        if record.stack_info:
            entry["stack"] = storable_text(self.formatStack(record.stack_info))
        return json.dumps(entry, default=_storable_str)


def _storable_str(value: object) -> str:
    return storable_text(str(value))


class JobLines(logging.Filter):
    """On the executor's logger, when the worker's ``--log-jobs`` asks for a line per attempt:
    pass its ``job_done`` records, raised from DEBUG to INFO, whatever the level, and its other
    records only from ``level`` up (the logger itself is opened to DEBUG, since the executor
    makes its ``job_done`` record only when DEBUG is enabled)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "event", None) == JOB_LINE_EVENT:
            if record.levelno < logging.INFO:
                record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            return True
        return record.levelno >= self.level


def configure_logging(
    level: str = "INFO", log_format: str = "text", *, log_jobs: bool = False
) -> None:
    """Log to stderr, one line per record, with the structured fields; ``log_jobs``: one INFO
    line per finished attempt too (:class:`JobLines`), even when ``level`` is higher.

    Called by the worker command after it imported the application: if the application set up
    logging itself (the root logger has handlers), sa_river's records simply propagate to it
    at ``level``. Otherwise the handler goes on the root logger, so the application's own
    records (a handler's ``logger.info``) are printed beside sa_river's, in the same format.
    """
    ours = logging.getLogger("sa_river")
    ours.handlers[:] = []
    ours.propagate = True
    ours.setLevel(level.upper())
    _set_job_lines(logging.getLevelName(level.upper()), log_jobs)
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


def _set_job_lines(level: int, on: bool) -> None:
    """Install (or remove, when a second call turns it off) the :class:`JobLines` filter."""
    executor = logging.getLogger(JOB_LOGGER)
    installed = [f for f in executor.filters if isinstance(f, JobLines)]
    for old in installed:
        executor.removeFilter(old)
    if on:
        executor.addFilter(JobLines(level))
        executor.setLevel(logging.DEBUG)
    elif installed:
        executor.setLevel(logging.NOTSET)  # back to following "sa_river"
