"""Database errors in log messages: one line, the driver's words, never the statement."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import OperationalError

from sa_river.errors import one_line


def test_a_wrapped_driver_error_is_its_own_message_without_sql_or_parameters() -> None:
    driver = psycopg.OperationalError(
        "connection failed: Connection refused\n\tIs the server running on that host?"
    )
    wrapped = OperationalError("SELECT secret_column FROM river_job", {"p": "value"}, driver)

    line = one_line(wrapped)

    assert line == (
        "OperationalError: connection failed: Connection refused Is the server running on "
        "that host?"
    )
    assert "SELECT" not in line
    assert "value" not in line


def test_any_other_error_is_named_and_flattened_to_one_bounded_line() -> None:
    assert one_line(RuntimeError("first\nsecond")) == "RuntimeError: first second"
    assert one_line(RuntimeError()) == "RuntimeError"
    assert len(one_line(RuntimeError("x" * 1000), limit=50)) == 50


def test_an_error_whose_str_raises_is_named_by_its_type() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no text")

    assert one_line(Unprintable()) == "<Unprintable whose str() failed>"
