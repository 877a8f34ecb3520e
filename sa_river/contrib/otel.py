"""OpenTelemetry tracing for sa_river: a span per insert and per attempt (``sa_river[otel]``).

>>> from sa_river.contrib.otel import OpenTelemetryHook
>>> hook = sa_river.add_hook(OpenTelemetryHook())  # doctest: +SKIP

Register the hook in every process that inserts or works jobs: in your web application at
start-up, and in the module your worker loads with ``--app`` (the worker imports it, so the
hook and your tracer provider are set up before the first job).

Spans:

``sa_river.insert`` (kind ``PRODUCER``)
    One per ``insert``/``insert_many``/``insert_many_fast`` call, a child of whatever span is
    current (your request's, typically). Its context is written into every inserted job's
    metadata under the key ``otel`` (W3C ``traceparent``/``tracestate``, through the
    configured propagator), so the job carries it to whichever process works it.
``sa_river.work`` (kind ``CONSUMER``)
    One per attempt, current while the handler runs, so spans your handler opens (database
    queries, HTTP calls) are its children. It starts a trace of its own and *links* to the
    ``sa_river.insert`` span of the job's metadata: a job may run long after the request that
    enqueued it ended, which is what span links are for.

Attributes: ``messaging.system`` = ``sa_river``, ``messaging.operation.type`` (``send`` /
``process``), ``messaging.destination.name`` (the queue), ``messaging.batch.message_count``,
``sa_river.job.kind``, ``sa_river.job.id``, ``sa_river.job.attempt`` and
``sa_river.job.result`` (``completed``, ``retried``, ``snoozed``, ``cancelled``,
``discarded``). An attempt that failed is recorded as an exception with status ``ERROR``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "sa_river.contrib.otel needs OpenTelemetry: pip install 'sa_river[otel]'"
    ) from exc

from sa_river.hooks import Hook, InsertingJob, WorkOutcome
from sa_river.types import InsertResult
from sa_river.workers import Job

__all__ = ["METADATA_KEY", "OpenTelemetryHook"]

METADATA_KEY = "otel"
"""The job metadata key holding the propagated trace context of the insert span."""

_SYSTEM = "sa_river"


class _Attempt:
    __slots__ = ("span", "task", "thread", "token")

    def __init__(self, span: trace.Span, token: object, task: object) -> None:
        self.span = span
        self.token = token
        self.thread = threading.get_ident()
        self.task = task


class OpenTelemetryHook(Hook):
    """Traces inserts and attempts; see the module documentation for the spans it makes.

    ``tracer_provider`` defaults to the global one; ``propagator`` to the global text-map
    propagator (W3C trace context and baggage unless you configured another).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        from sa_river import __version__

        self._tracer = trace.get_tracer(__name__, __version__, tracer_provider=tracer_provider)
        self._propagator = propagator
        self._lock = threading.Lock()
        self._inserts: dict[int, trace.Span] = {}
        self._attempts: dict[int, _Attempt] = {}

    def _textmap(self) -> TextMapPropagator:
        return self._propagator or propagate.get_global_textmap()

    # -- insert -------------------------------------------------------------------------------

    def before_insert(self, jobs: Sequence[InsertingJob]) -> None:
        attributes: dict[str, Any] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(jobs),
        }
        kinds = {job.kind for job in jobs}
        queues = {job.queue for job in jobs}
        if len(kinds) == 1:
            attributes["sa_river.job.kind"] = next(iter(kinds))
        if len(queues) == 1:
            attributes["messaging.destination.name"] = next(iter(queues))
        span = self._tracer.start_span(
            "sa_river.insert", kind=SpanKind.PRODUCER, attributes=attributes
        )
        carrier: dict[str, str] = {}
        self._textmap().inject(carrier, context=trace.set_span_in_context(span))
        for job in jobs:
            job.metadata[METADATA_KEY] = dict(carrier)
        with self._lock:
            self._inserts[id(jobs)] = span

    def after_insert(
        self,
        jobs: Sequence[InsertingJob],
        results: Sequence[InsertResult],
        error: BaseException | None,
    ) -> None:
        with self._lock:
            span = self._inserts.pop(id(jobs), None)
        if span is None:
            return
        if len(results) == 1:
            span.set_attribute("sa_river.job.id", results[0].job.id)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    # -- work ---------------------------------------------------------------------------------

    def before_work(self, job: Job[Any]) -> None:
        links = []
        carrier = job.metadata.get(METADATA_KEY)
        if isinstance(carrier, dict):
            enqueued = trace.get_current_span(self._textmap().extract(carrier)).get_span_context()
            if enqueued.is_valid:
                links.append(Link(enqueued))
        span = self._start_work_span(job, links)
        token = otel_context.attach(trace.set_span_in_context(span))
        with self._lock:
            self._attempts[id(job)] = _Attempt(span, token, _current_task())

    def _start_work_span(self, job: Job[Any], links: list[Link]) -> trace.Span:
        return self._tracer.start_span(
            "sa_river.work",
            # A root of its own: the enqueuing trace is linked, not continued.
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue,
                "sa_river.job.kind": job.kind,
                "sa_river.job.id": job.id,
                "sa_river.job.attempt": job.attempt,
            },
        )

    def after_work(self, job: Job[Any], outcome: WorkOutcome) -> None:
        with self._lock:
            attempt = self._attempts.pop(id(job), None)
        if attempt is None:
            # No before_work (no handler, undecodable args): a span of its own for the record.
            span = self._start_work_span(job, [])
        else:
            span = attempt.span
            # Detach only where the context was attached: after a timeout, after_work comes
            # from another thread, and the abandoned handler thread keeps its context.
            if attempt.thread == threading.get_ident() and attempt.task is _current_task():
                otel_context.detach(attempt.token)  # type: ignore[arg-type]
        span.set_attribute("sa_river.job.result", outcome.result)
        if outcome.error is not None and outcome.failed:
            span.record_exception(outcome.error)
            span.set_status(
                Status(StatusCode.ERROR, f"{type(outcome.error).__name__}: {outcome.error}")
            )
        span.end()


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running event loop: a sync handler's thread
        return None
