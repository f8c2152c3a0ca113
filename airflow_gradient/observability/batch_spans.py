"""The batch span: one INTERNAL span, ``gradient.batch {task_id}``, around a batch, holding its
items' spans (:mod:`.spans`), with the manifest's figures as attributes and an event for each
pacing decision that waits.

A deferred Batch Inference job leaves the worker: its batch span ends there, marked
``gradient.batch.deferred``, and its W3C ``traceparent`` travels with the trigger (:func:`under`
makes the polls its children) and back in the trigger's event, so the landing's batch span, after
the deferral, is its child too and links to it: one trace from upload to results.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from airflow_gradient.observability import attributes as attr
from airflow_gradient.observability import scope
from airflow_gradient.observability.spans import AttributeValue, tracer

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class BatchTrace:
    """The batch span of a running batch (``span`` None: not traced)."""

    def __init__(self, span: Span | None) -> None:
        self.span = span

    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the batch span, for a deferral to carry (None: not traced)."""
        if self.span is None or not self.span.get_span_context().is_valid:
            return None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, trace.set_span_in_context(self.span))
        return carrier.get("traceparent")

    def job_ids(self, batch_ids: list[str]) -> None:
        """The Batch Inference jobs this batch runs as."""
        if self.span is not None and self.span.is_recording():
            self.span.set_attribute(attr.BATCH_JOB_IDS, batch_ids)

    def finish(self, manifest: Mapping[str, Any]) -> None:
        """Record the manifest's figures on the batch span."""
        if self.span is not None and self.span.is_recording():
            self.span.set_attributes(manifest_attributes(manifest))


def manifest_attributes(manifest: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """The manifest's counts, usage, cost, requests, reuse and pace as span attributes."""
    counts = manifest.get("counts") or {}
    usage = manifest.get("usage") or {}
    requests = manifest.get("requests") or {}
    pacing = manifest.get("pacing") or {}
    reused = manifest.get("reused") or {}
    pairs: list[tuple[str, Any]] = [
        (attr.BATCH_TOTAL, manifest.get("total")),
        (attr.BATCH_SUCCEEDED, counts.get("succeeded")),
        (attr.BATCH_FAILED, counts.get("failed")),
        (attr.BATCH_SKIPPED, counts.get("skipped")),
        (attr.BATCH_RESUMED, manifest.get("resumed")),
        (attr.BATCH_REUSED, reused.get("items")),
        (attr.BATCH_INPUT_TOKENS, usage.get("input_tokens")),
        (attr.BATCH_OUTPUT_TOKENS, usage.get("output_tokens")),
        (attr.BATCH_CACHED_TOKENS, usage.get("cached_tokens")),
        (attr.BATCH_REASONING_TOKENS, usage.get("reasoning_tokens")),
        (attr.BATCH_COST_USD, manifest.get("cost_usd")),
        (attr.BATCH_REQUESTS, requests.get("sent")),
        (attr.BATCH_RETRIES, requests.get("retries")),
        (attr.BATCH_RATE_LIMITED, requests.get("rate_limited")),
        (attr.BATCH_PACE_RPM, pacing.get("requests_per_minute")),
        (attr.BATCH_PACE_TPM, pacing.get("tokens_per_minute")),
        (attr.BATCH_PACE_SOURCE, pacing.get("source")),
    ]
    values: dict[str, AttributeValue] = {key: value for key, value in pairs if value is not None}
    if jobs := manifest.get("batch_jobs"):
        values[attr.BATCH_JOB_IDS] = [str(job.get("batch_id")) for job in jobs]
    return values


_PROPAGATOR = TraceContextTextMapPropagator()


def _carried(traceparent: str | None) -> trace.SpanContext | None:
    """The span context a ``traceparent`` names (None: none, or not a valid one)."""
    if not traceparent:
        return None
    found = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent})).get_span_context()
    return found if found.is_valid else None


@contextmanager
def under(traceparent: str | None) -> Iterator[None]:
    """The spans started inside are children of the span ``traceparent`` names (a batch span that
    deferred); without one, of the current span as usual. Keep awaits inside, yields outside: the
    context is attached and detached in the same task."""
    carried = _carried(traceparent)
    if carried is None:
        yield
        return
    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(carried)))
    try:
        yield
    finally:
        context.detach(token)


@contextmanager
def batch_span(telemetry: scope.Telemetry, *, resumed_from: str | None = None) -> Iterator[BatchTrace]:
    """Run a batch under ``telemetry``, inside its INTERNAL span ``gradient.batch {task_id}``
    (none when ``tracing`` is ``"off"`` or no tracer provider is set). The span is the current one
    inside, so the items' spans are its children; an exception marks it ERROR and goes on.

    ``resumed_from``: the ``traceparent`` of the batch span that deferred; this one links to it,
    and is its child unless a span is current (Airflow's task span of the resumed try)."""
    if (running := scope.current().batch_span) is not None:  # landing a batch whose span is open
        yield BatchTrace(running)
        return
    found = tracer() if telemetry.tracing != "off" else None
    if found is None:
        with scope.telemetry(telemetry):
            yield BatchTrace(None)
        return
    carried = _carried(resumed_from)
    parent = None
    if carried is not None and not trace.get_current_span().get_span_context().is_valid:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(carried))
    span = found.start_span(f"{attr.BATCH_SPAN_PREFIX} {telemetry.task_id}", context=parent,
                            kind=SpanKind.INTERNAL, attributes=dict(telemetry.metric_attributes),
                            links=[Link(carried)] if carried is not None else None)
    telemetry.batch_span = span
    # The exception's message may quote a prompt: recorded by type only (see _Attempt._failed).
    with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            with scope.telemetry(telemetry):
                yield BatchTrace(span)
        except BaseException as exc:
            from airflow.sdk.exceptions import TaskDeferred

            if isinstance(exc, TaskDeferred):  # waiting in the triggerer is not a failure
                span.set_attribute(attr.BATCH_DEFERRED, True)
                raise
            span.set_attribute(attr.ERROR_TYPE, type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            telemetry.batch_span = None


def pacing_wait(seconds: float, reason: str) -> None:
    """Pacing decided to hold every request for ``seconds`` (``reason``: ``"quota"``, a pause to the
    quota's reset; ``"run"``, a cut after a run of 429s): an event on the batch span, if any."""
    span = scope.current().batch_span
    if span is not None and span.is_recording():
        span.add_event(attr.PACING_WAIT_EVENT, {attr.PACING_WAIT_S: round(seconds, 3), attr.PACING_REASON: reason})
