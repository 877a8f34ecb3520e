"""Text PostgreSQL cannot store, and args nested too deeply, are refused by every insert entry
point with an ``InvalidJobError`` naming the field, and nothing is written.

A lone surrogate (what ``os.fsdecode`` makes of undecodable bytes, e.g. a file name) used to
reach the driver and fail there with a bare ``UnicodeEncodeError``; args nested thousands deep
raised ``RecursionError`` from the JSON encoder.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session

import sa_river
from sa_river import InsertManyParams, InsertOpts, InvalidJobError

UNDECODABLE_NAME = os.fsdecode(b"caf\xe9.txt")
"""``'caf\\udce9.txt'``: a Latin-1 file name decoded the way Python decodes file names."""


def nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


# Each bad job: (args, opts), the field the error must name, and a fragment of its message.
BAD_JOBS: dict[str, tuple[tuple[str, dict[str, Any]], InsertOpts | None, str, str]] = {
    "args": (("k", {"file": UNDECODABLE_NAME}), None, "args.file", "lone surrogate"),
    "args-key": (("k", {UNDECODABLE_NAME: 1}), None, "args.caf\\udce9.txt", "lone surrogate"),
    "args-deep": (("k", {"tree": nested(100_000)}), None, "args", "nested too deeply"),
    "metadata": (
        ("k", {}),
        InsertOpts(metadata={"source": UNDECODABLE_NAME}),
        "metadata.source",
        "lone surrogate",
    ),
    "metadata-deep": (("k", {}), InsertOpts(metadata=nested(100_000)), "metadata", "too deeply"),
    "tags": (("k", {}), InsertOpts(tags=["caf\udce9"]), "tags", "caf\\udce9"),
    "queue": (("k", {}), InsertOpts(queue=UNDECODABLE_NAME), "queue", "lone surrogate"),
    "kind": ((UNDECODABLE_NAME, {}), None, "kind", "lone surrogate"),
}

GOOD_JOB = ("k", {"n": 1})


def count_jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM river_job")).scalar_one())


def run_async(db_url: URL, body: Callable[[AsyncEngine], Any]) -> Any:
    async def main() -> Any:
        aengine = create_async_engine(db_url)
        try:
            return await asyncio.wait_for(body(aengine), timeout=30)
        finally:
            await aengine.dispose()

    return asyncio.run(main())


def batch(args: tuple[str, dict[str, Any]], opts: InsertOpts | None) -> list[Any]:
    """A good job first, then the bad one: the good one must not be written either."""
    return [GOOD_JOB, InsertManyParams(args, opts)]


ENTRY_POINTS: dict[str, Callable[[URL, Engine, tuple[str, dict[str, Any]], Any], Any]] = {
    "insert": lambda url, engine, args, opts: sa_river.insert(engine, args, opts),
    "insert_many": lambda url, engine, args, opts: sa_river.insert_many(engine, batch(args, opts)),
    "insert_many_fast": lambda url, engine, args, opts: sa_river.insert_many_fast(
        engine, batch(args, opts)
    ),
    "insert_async": lambda url, engine, args, opts: run_async(
        url, lambda aengine: sa_river.insert_async(aengine, args, opts)
    ),
    "insert_many_async": lambda url, engine, args, opts: run_async(
        url, lambda aengine: sa_river.insert_many_async(aengine, batch(args, opts))
    ),
    "insert_many_fast_async": lambda url, engine, args, opts: run_async(
        url, lambda aengine: sa_river.insert_many_fast_async(aengine, batch(args, opts))
    ),
}


@pytest.mark.parametrize("bad", list(BAD_JOBS))
@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_every_insert_entry_point_refuses_unstorable_input_naming_the_field(
    db_url: URL, engine: Engine, entry_point: str, bad: str
) -> None:
    args, opts, field, fragment = BAD_JOBS[bad]
    expected_field = field if entry_point in ("insert", "insert_async") else f"items[1].{field}"
    with pytest.raises(InvalidJobError) as info:
        ENTRY_POINTS[entry_point](db_url, engine, args, opts)
    assert info.value.field == expected_field
    assert str(info.value).startswith(f"{expected_field}: ")
    assert fragment in str(info.value)
    assert count_jobs(engine) == 0


def test_a_refused_job_leaves_the_callers_transaction_usable(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        sa_river.insert(session, GOOD_JOB)
        with pytest.raises(InvalidJobError):
            sa_river.insert(session, ("k", {"file": UNDECODABLE_NAME}))
        sa_river.insert(session, GOOD_JOB)
    assert count_jobs(engine) == 2


def test_a_job_class_with_an_unstorable_kind_is_refused_when_defined() -> None:
    with pytest.raises(InvalidJobError) as info:

        class Undecodable(sa_river.JobArgs, kind=UNDECODABLE_NAME):
            pass

    assert info.value.field == "kind"
    assert "lone surrogate '\\udce9' at position 3" in str(info.value)


def test_a_handler_for_an_unstorable_kind_is_refused_when_registered() -> None:
    with pytest.raises(InvalidJobError) as info:
        sa_river.Workers().add(UNDECODABLE_NAME, lambda job: None)
    assert info.value.field == "kind"


def test_non_ascii_text_that_utf8_can_hold_is_stored_as_given(engine: Engine) -> None:
    text_value = "café \U0001f600 \u2028"
    result = sa_river.insert(
        engine,
        ("k", {"t": text_value}),
        InsertOpts(queue="café", metadata={"t": text_value}),
    )
    job = sa_river.get_job(engine, result.job.id)
    assert job is not None
    assert (job.args, job.metadata, job.queue) == ({"t": text_value}, {"t": text_value}, "café")
