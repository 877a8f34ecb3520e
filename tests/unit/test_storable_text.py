"""Every text sa_river stores or logs is made storable: U+0000 and lone surrogates escaped.

A lone surrogate is what ``os.fsdecode`` (and any ``surrogateescape`` decoding) makes of bytes
that are not UTF-8, e.g. a Latin-1 file name: PostgreSQL's text and jsonb cannot hold it, and a
stream that encodes UTF-8 strictly (a log file) cannot write it.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from sa_river.logfmt import JsonFormatter, KeyValueFormatter
from sa_river.types import AttemptError, storable_text
from sa_river.worker.completer import fallback_error_json

UNDECODABLE_NAME = os.fsdecode(b"caf\xe9.txt")
ESCAPED_NAME = "caf\\udce9.txt"


class TestStorableText:
    def test_a_lone_surrogate_is_spelled_out(self) -> None:
        assert storable_text(f"cannot open {UNDECODABLE_NAME}") == f"cannot open {ESCAPED_NAME}"

    def test_nul_is_escaped_as_before(self) -> None:
        assert storable_text("a\x00b") == "a\\0b"

    def test_both_together(self) -> None:
        assert storable_text("\x00\udce9") == "\\0\\udce9"

    @pytest.mark.parametrize("text", ["", "plain", "café", "\U0001f600", "\u2028", "a\\0b"])
    def test_text_utf8_can_hold_is_returned_unchanged(self, text: str) -> None:
        assert storable_text(text) is text

    def test_is_idempotent(self) -> None:
        once = storable_text(f"\x00 {UNDECODABLE_NAME} \ud83d")
        assert storable_text(once) == once
        once.encode("utf-8")


class TestStoredErrors:
    def test_an_attempt_error_escapes_its_message_and_trace(self) -> None:
        error = AttemptError.stored_now(
            1, f"cannot open {UNDECODABLE_NAME}", f"trace {UNDECODABLE_NAME}"
        )
        assert (error.error, error.trace) == (
            f"cannot open {ESCAPED_NAME}",
            f"trace {ESCAPED_NAME}",
        )

    def test_json_text_of_an_attempt_error_built_directly_is_storable(self) -> None:
        """json would write the surrogate as ``\\udce9``, an escape jsonb rejects."""
        error = AttemptError(
            at=AttemptError.stored_now(1, "").at, attempt=1, error=UNDECODABLE_NAME
        )
        decoded = json.loads(error.to_json_text())
        assert decoded["error"] == ESCAPED_NAME

    def test_an_escaped_error_is_cut_after_escaping(self) -> None:
        error = AttemptError.stored_now(1, "\udce9" * 10, error_limit=12)
        assert error.error == "\\udce9\\udce9"

    def test_the_fallback_error_is_storable(self) -> None:
        decoded = json.loads(fallback_error_json(2, UNDECODABLE_NAME, trace=UNDECODABLE_NAME))
        assert (decoded["error"], decoded["trace"], decoded["attempt"]) == (
            ESCAPED_NAME,
            ESCAPED_NAME,
            2,
        )


# --- logs ----------------------------------------------------------------------------------------


@pytest.fixture
def strict_stream() -> Iterator[io.TextIOWrapper]:
    """A UTF-8 stream that, like a log file, refuses what it cannot encode."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    yield stream
    stream.detach()


def emit_unstorable_record(formatter: logging.Formatter, stream: io.TextIOWrapper) -> str:
    """Log a record whose message, argument, structured field and traceback all hold a lone
    surrogate through a strict stream; what was written."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("sa_river.test_storable_text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise RuntimeError(f"cannot open {UNDECODABLE_NAME}")
        except RuntimeError as exc:
            logger.error(
                "job %d failed: %s",
                7,
                exc,
                exc_info=True,
                extra={"event": "job_failed", "kind": UNDECODABLE_NAME, "job_id": 7},
            )
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8")


def test_a_text_log_line_holding_a_lone_surrogate_is_written(
    strict_stream: io.TextIOWrapper, capsys: pytest.CaptureFixture[str]
) -> None:
    written = emit_unstorable_record(KeyValueFormatter(), strict_stream)
    assert "--- Logging error ---" not in capsys.readouterr().err
    (line,) = written.splitlines()  # one record, one line: the traceback is escaped in it
    assert f"job 7 failed: cannot open {ESCAPED_NAME} exception=" in line
    assert line.endswith(f'" event=job_failed job_id=7 kind={ESCAPED_NAME}')
    assert f"RuntimeError: cannot open {ESCAPED_NAME}" in line


def test_a_json_log_line_holding_a_lone_surrogate_is_written_as_valid_utf8(
    strict_stream: io.TextIOWrapper, capsys: pytest.CaptureFixture[str]
) -> None:
    written = emit_unstorable_record(JsonFormatter(), strict_stream)
    assert "--- Logging error ---" not in capsys.readouterr().err
    entry = json.loads(written)
    assert entry["message"] == f"job 7 failed: cannot open {ESCAPED_NAME}"
    assert entry["kind"] == ESCAPED_NAME
    assert f"RuntimeError: cannot open {ESCAPED_NAME}" in entry["exception"]
    # Decoded, every value is text a strict consumer accepts.
    json.dumps(entry, ensure_ascii=False).encode("utf-8")


def test_a_json_log_field_of_another_type_is_written_as_storable_text() -> None:
    class Odd:
        def __str__(self) -> str:
            return UNDECODABLE_NAME

    record = logging.LogRecord("sa_river", logging.INFO, __file__, 1, "m", None, None)
    record.queue = Odd()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["queue"] == ESCAPED_NAME
