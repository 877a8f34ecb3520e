"""Structured log fields and event names are stable and documented (docs/observability.md)."""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
from pathlib import Path

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


def test_text_lines_end_with_key_value_fields() -> None:
    line = KeyValueFormatter().format(record(event="job_failed", job_id=7)).splitlines()[0]
    assert line.endswith("job 7 failed event=job_failed job_id=7")
