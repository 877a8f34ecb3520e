"""OpenTelemetry spans for insert and work (``sa_river.contrib.otel``), with an in-memory
exporter and a real worker on real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

import sa_river
from sa_river import InsertOpts, Job, JobState, Workers, hooks_installed
from sa_river.contrib.otel import METADATA_KEY, OpenTelemetryHook
from tests.integration._worker_helpers import running_worker, wait_for_state, wait_until


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_the_work_span_links_to_the_insert_span_of_the_request(
    db_url: str, engine: Engine, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("test-app")
    workers = Workers()

    @workers.handler("send_welcome")
    def send_welcome(job: Job[dict[str, Any]]) -> None:
        with tracer.start_as_current_span("render email"):
            pass

    @workers.handler("send_welcome_async")
    async def send_welcome_async(job: Job[dict[str, Any]]) -> None:
        with tracer.start_as_current_span("render email async"):
            await asyncio.sleep(0)

    with hooks_installed(OpenTelemetryHook(provider)):
        with (
            tracer.start_as_current_span("POST /signup"),
            Session(engine) as session,
            session.begin(),
        ):
            sync_id = sa_river.insert(session, ("send_welcome", {"user_id": 1})).job.id
            async_id = sa_river.insert(session, ("send_welcome_async", {})).job.id
        with running_worker(db_url, workers):
            wait_for_state(engine, sync_id, JobState.COMPLETED)
            wait_for_state(engine, async_id, JobState.COMPLETED)
            wait_until(lambda: len(spans_named(exporter, "sa_river.work")) == 2, message="spans")

    [request] = spans_named(exporter, "POST /signup")
    inserts = spans_named(exporter, "sa_river.insert")
    assert len(inserts) == 2
    for insert_span in inserts:
        assert insert_span.kind is SpanKind.PRODUCER
        assert insert_span.parent is not None
        assert insert_span.parent.span_id == request.context.span_id
        assert insert_span.attributes is not None
        assert insert_span.attributes["messaging.destination.name"] == "default"
    insert_by_job = {s.attributes["sa_river.job.id"]: s for s in inserts if s.attributes}

    works = {s.attributes["sa_river.job.id"]: s for s in spans_named(exporter, "sa_river.work")}
    for job_id, child_name in [(sync_id, "render email"), (async_id, "render email async")]:
        work = works[job_id]
        assert work.kind is SpanKind.CONSUMER
        assert work.attributes is not None
        assert work.attributes["sa_river.job.result"] == "completed"
        assert work.attributes["sa_river.job.attempt"] == 1
        # A trace of its own, linked to the span that enqueued the job.
        assert work.parent is None
        assert [link.context.span_id for link in work.links] == [
            insert_by_job[job_id].context.span_id
        ]
        assert work.links[0].context.trace_id == request.context.trace_id
        # Spans the handler opened are children of the work span.
        [child] = spans_named(exporter, child_name)
        assert child.parent is not None
        assert child.parent.span_id == work.context.span_id
    # Nothing leaked into this thread's context.
    assert not trace.get_current_span().get_span_context().is_valid


def test_the_trace_context_travels_in_the_jobs_metadata(
    engine: Engine, provider: TracerProvider
) -> None:
    tracer = provider.get_tracer("test-app")
    with hooks_installed(OpenTelemetryHook(provider)), tracer.start_as_current_span("request"):
        result = sa_river.insert(engine, ("k", {}), InsertOpts(metadata={"tenant": "t1"}))
        trace_id = trace.get_current_span().get_span_context().trace_id
    stored = sa_river.get_job(engine, result.job.id)
    assert stored is not None
    assert stored.metadata["tenant"] == "t1"
    traceparent = stored.metadata[METADATA_KEY]["traceparent"]
    assert traceparent.split("-")[1] == f"{trace_id:032x}"


def test_a_failed_attempt_is_an_error_span(
    db_url: str, engine: Engine, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    workers = Workers()

    @workers.handler("fails")
    def fails(job: Job[dict[str, Any]]) -> None:
        raise ValueError("smtp refused")

    with hooks_installed(OpenTelemetryHook(provider)):
        job_id = sa_river.insert(engine, ("fails", {}), InsertOpts(max_attempts=1)).job.id
        with running_worker(db_url, workers):
            wait_for_state(engine, job_id, JobState.DISCARDED)
            wait_until(lambda: spans_named(exporter, "sa_river.work"), message="the work span")
    [work] = spans_named(exporter, "sa_river.work")
    assert work.status.status_code is StatusCode.ERROR
    assert "smtp refused" in (work.status.description or "")
    assert work.attributes is not None
    assert work.attributes["sa_river.job.result"] == "discarded"
    assert [e.name for e in work.events] == ["exception"]


def test_an_insert_that_fails_ends_its_span_with_the_error(
    empty_db_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    bare = create_engine(empty_db_url)
    try:
        with hooks_installed(OpenTelemetryHook(provider)), pytest.raises(ProgrammingError):
            sa_river.insert(bare, ("k", {}))
    finally:
        bare.dispose()
    [span] = spans_named(exporter, "sa_river.insert")
    assert span.status.status_code is StatusCode.ERROR
