"""Structured log fields and event names are stable and documented (docs/observability.md)."""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sa_river.logfmt import STRUCTURED_FIELDS, JsonFormatter, KeyValueFormatter

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "observability.md"


def events_in_code() -> set[str]:
    """Every ``"event": "<name>"`` a log call in the package passes."""
    events = set()
    for path in (ROOT / "sa_river").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "event"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        events.add(value.value)
    return events


def documented(section_title: str) -> set[str]:
    """The first-column names of the tables in one section of the page."""
    text = PAGE.read_text()
    section = text.split(f"\n## {section_title}\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        match = re.match(r"^\| ((?:`[a-z_]+`(?:, )?)+) \|", line)
        if match:
            names.update(re.findall(r"`([a-z_]+)`", match.group(1)))
    return names


def log_calls_without_an_event() -> list[str]:
    """``file:line`` of every ``logger.<level>(...)`` call in the runtime (the package but its
    developer tools) that passes no ``extra={"event": ...}``."""
    missing = []
    for path in sorted((ROOT / "sa_river").rglob("*.py")):
        if "tools" in path.relative_to(ROOT / "sa_river").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "logger"
            ):
                continue
            extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
            has_event = isinstance(extra, ast.Dict) and any(
                isinstance(key, ast.Constant) and key.value == "event" for key in extra.keys
            )
            if not has_event:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return missing


LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def test_every_log_line_of_the_runtime_names_its_event() -> None:
    """A JSON log consumer can route and count every line by its event: none goes without."""
    assert log_calls_without_an_event() == []


def test_every_event_the_code_logs_is_documented_and_no_other() -> None:
    in_code = events_in_code()
    listed = documented("Structured logs") - set(STRUCTURED_FIELDS)
    assert in_code, "found no events: the scan is broken"
    assert not in_code - listed, f"events missing from {PAGE.name}"
    assert not listed - in_code, f"{PAGE.name} lists events the code never logs"


def test_every_structured_field_is_documented() -> None:
    assert set(STRUCTURED_FIELDS) <= documented("Structured logs")


def record(**fields: object) -> logging.LogRecord:
    try:
        raise ValueError("smtp refused")
    except ValueError:
        exc_info = sys.exc_info()
    rec = logging.LogRecord(
        "sa_river.executor", logging.INFO, __file__, 1, "job %d failed", (7,), exc_info
    )
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def test_json_lines_carry_the_fields() -> None:
    line = JsonFormatter().format(record(event="job_failed", job_id=7, kind="email", queue=None))
    entry = json.loads(line)
    assert entry["message"] == "job 7 failed"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "sa_river.executor"
    assert entry["event"] == "job_failed"
    assert entry["job_id"] == 7
    assert entry["kind"] == "email"
    assert "queue" not in entry  # fields that are not set are left out
    assert "ValueError: smtp refused" in entry["exception"]
    assert "\n" not in line


def test_text_lines_have_the_traceback_after_the_message_and_end_with_the_fields() -> None:
    line = KeyValueFormatter().format(record(event="job_failed", job_id=7))
    assert line.endswith('ValueError: smtp refused" event=job_failed job_id=7')
    message, rest = line.split(" exception=", 1)
    assert message.endswith(" INFO sa_river.executor job 7 failed")
    traceback = rest.removesuffix(" event=job_failed job_id=7")
    assert json.loads(traceback).endswith("\nValueError: smtp refused")


# --- one line per record, whatever it carries -------------------------------------------------

FORMATTERS = [
    pytest.param(KeyValueFormatter, id="text"),
    pytest.param(JsonFormatter, id="json"),
]

# Everything str.splitlines() breaks a line at, which is what log collectors split records at.
LINE_BREAKS = "\n \r\n \r \v \f \x1c \x1d \x1e \x85 \u2028 \u2029"


class _Lines(logging.Handler):
    """Formats each record with the formatter under test, as the worker's handler does."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.written: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.written.append(self.format(record) + "\n")  # what StreamHandler writes


@pytest.fixture
def app_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.multiline_app")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.handlers[:] = []
    logger.propagate = True


def _capture(logger: logging.Logger, formatter: logging.Formatter) -> _Lines:
    handler = _Lines(formatter)
    logger.addHandler(handler)
    return handler


def _read_back(line: str, formatter: logging.Formatter) -> dict[str, object]:
    """The message, fields and traceback of a line, read back as a consumer would."""
    assert line.endswith("\n")
    assert len(line.splitlines()) == 1, line
    body = line[:-1]
    if isinstance(formatter, JsonFormatter):
        entry: dict[str, object] = json.loads(body)
        return entry
    match = re.fullmatch(
        r"(\S+) (\S+) (\S+) (.*?)(?: exception=(\".*\"))?((?: [a-z_]+=[^ \"]+)*)", body
    )
    assert match, body
    entry = {"level": match[2], "logger": match[3], "message": match[4]}
    if match[5]:
        entry["exception"] = json.loads(match[5])
    entry.update(field.split("=", 1) for field in match[6].split())
    return entry


@pytest.mark.parametrize("formatter_class", FORMATTERS)
def test_a_handler_error_message_with_line_breaks_stays_one_line(
    formatter_class: type[logging.Formatter], app_logger: logging.Logger
) -> None:
    """What a handler's own ``logger.error`` of a multi-line error message prints is one record
    on one line, its breaks escaped, with its fields after it."""
    formatter = formatter_class()
    lines = _capture(app_logger, formatter)
    error = ValueError(f"SMTP said:{LINE_BREAKS}550 no such user")
    app_logger.error("send failed: %s", error, extra={"event": "job_failed", "job_id": 7})
    [line] = lines.written
    entry = _read_back(line, formatter)
    assert entry["level"] == "ERROR"
    assert entry["event"] == "job_failed"
    assert str(entry["job_id"]) == "7"
    message = str(entry["message"])
    if isinstance(formatter, JsonFormatter):
        assert message == f"send failed: SMTP said:{LINE_BREAKS}550 no such user"  # exactly
    else:
        assert message == (
            "send failed: SMTP said:\\n \\r\\n \\r \\v \\f \\x1c \\x1d \\x1e \\x85 "
            "\\u2028 \\u2029550 no such user"
        )


@pytest.mark.parametrize("formatter_class", FORMATTERS)
def test_a_traceback_is_on_the_line_of_its_record_and_reads_back_whole(
    formatter_class: type[logging.Formatter], app_logger: logging.Logger
) -> None:
    """``logger.exception`` of an error whose message has line breaks: one line, and the
    traceback (with those breaks) reads back exactly as Python formats it."""
    formatter = formatter_class()
    lines = _capture(app_logger, formatter)
    try:
        raise RuntimeError('quota "exceeded"\nretry after 30s\u2028(per user)')
    except RuntimeError:
        app_logger.exception("job 12\nfailed", extra={"event": "executor_error", "job_id": 12})
        expected = logging.Formatter().formatException(sys.exc_info())
    app_logger.info("next record", extra={"event": "job_done"})
    assert len(lines.written) == 2  # the traceback did not become records of its own
    entry = _read_back(lines.written[0], formatter)
    assert entry["exception"] == expected
    assert expected.startswith("Traceback (most recent call last):")
    assert 'RuntimeError: quota "exceeded"\nretry after 30s\u2028(per user)' in expected
    assert entry["event"] == "executor_error"
    assert _read_back(lines.written[1], formatter)["message"] == "next record"


@pytest.mark.parametrize("formatter_class", FORMATTERS)
def test_a_stack_is_on_the_line_of_its_record(
    formatter_class: type[logging.Formatter], app_logger: logging.Logger
) -> None:
    formatter = formatter_class()
    lines = _capture(app_logger, formatter)
    app_logger.warning("slow", stack_info=True, extra={"event": "job_timeout"})
    [line] = lines.written
    assert len(line.splitlines()) == 1
    text = json.loads(line)["stack"] if isinstance(formatter, JsonFormatter) else line
    assert "Stack (most recent call last):" in text


@pytest.mark.parametrize("formatter_class", FORMATTERS)
def test_exception_outside_an_except_block_adds_no_empty_traceback(
    formatter_class: type[logging.Formatter], app_logger: logging.Logger
) -> None:
    formatter = formatter_class()
    lines = _capture(app_logger, formatter)
    app_logger.exception("nothing raised", extra={"event": "executor_error"})
    [line] = lines.written
    assert "NoneType" not in line
    assert "exception" not in _read_back(line, formatter)


def test_a_traceback_formatted_by_another_handler_first_is_reused(
    app_logger: logging.Logger,
) -> None:
    """With a plain handler beside the worker's (an application's file log), the record's
    cached ``exc_text`` is reused and the worker's line is still one line."""
    plain = _capture(app_logger, logging.Formatter("%(message)s"))
    ours = _capture(app_logger, KeyValueFormatter())
    try:
        raise KeyError("a\nb")
    except KeyError:
        app_logger.exception("boom", extra={"event": "executor_error"})
    assert len(plain.written[0].splitlines()) > 1  # the stock formatter: many lines
    assert len(ours.written[0].splitlines()) == 1
    assert "KeyError: 'a\\nb'" in str(_read_back(ours.written[0], KeyValueFormatter())["exception"])
