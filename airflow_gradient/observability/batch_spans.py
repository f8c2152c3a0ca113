"""The batch span: one INTERNAL span, ``gradient.batch {task_id}``, around a batch, holding its
items' spans (:mod:`.spans`), with the manifest's figures as attributes and an event for each
pacing decision that waits."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from airflow_gradient.observability import attributes as attr
from airflow_gradient.observability import scope
from airflow_gradient.observability.spans import AttributeValue, tracer

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class BatchTrace:
    """The batch span of a running batch (``span`` None: not traced)."""

    def __init__(self, span: Span | None) -> None:
        self.span = span

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


@contextmanager
def batch_span(telemetry: scope.Telemetry) -> Iterator[BatchTrace]:
    """Run a batch under ``telemetry``, inside its INTERNAL span ``gradient.batch {task_id}``
    (none when ``tracing`` is ``"off"`` or no tracer provider is set). The span is the current one
    inside, so the items' spans are its children; an exception marks it ERROR and goes on."""
    if (running := scope.current().batch_span) is not None:  # landing a batch whose span is open
        yield BatchTrace(running)
        return
    found = tracer() if telemetry.tracing != "off" else None
    if found is None:
        with scope.telemetry(telemetry):
            yield BatchTrace(None)
        return
    span = found.start_span(f"{attr.BATCH_SPAN_PREFIX} {telemetry.task_id}", kind=SpanKind.INTERNAL,
                            attributes=dict(telemetry.metric_attributes))
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
