"""Timestamps written by Go (River), by PostgreSQL and by sa_river read the same on every
supported Python, 3.10 included, whose fromisoformat is strict about them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sa_river.types import AttemptError, parse_timestamp

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, UTC)),
        ("2024-05-01T12:00:00.5Z", datetime(2024, 5, 1, 12, 0, 0, 500000, UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.1234+00:00", datetime(2024, 5, 1, 12, 0, 0, 123400, UTC)),
        (
            "2024-05-01T12:00:00.25+05:30",
            datetime(2024, 5, 1, 12, 0, 0, 250000, timezone(timedelta(hours=5, minutes=30))),
        ),
    ],
)
def test_go_and_rfc3339_timestamps_parse_on_every_python(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def test_an_error_entry_written_by_a_go_worker_decodes() -> None:
    entry = {"at": "2024-05-01T12:00:00.987654321Z", "attempt": 2, "error": "boom", "trace": ""}
    assert AttemptError.from_json(entry).at == datetime(2024, 5, 1, 12, 0, 0, 987654, UTC)
