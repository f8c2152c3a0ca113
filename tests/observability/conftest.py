"""An OpenTelemetry SDK for the observability tests: an in-memory span exporter and metric reader.

The API lets a process set its global providers once, so one SDK provider of each kind is set
for the session, and a switch sends their data to the running test's exporter and reader only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _Switch(SpanProcessor):
    """Forwards ended spans to the running test's processor, if any."""

    target: SpanProcessor | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.target is not None:
            self.target.on_end(span)


_SWITCH = _Switch()
_READER = InMemoryMetricReader()
_installed = False


def _install() -> None:
    global _installed
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(_SWITCH)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
        _installed = True


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(prefix)]

    def points(self, name: str) -> list[Any]:
        """Every data point of metric ``name`` recorded since the test began."""
        data = _READER.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scoped in resource.scope_metrics:
                for metric in scoped.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    """The spans and metric points of this test (delta: the reader is drained first)."""
    _install()
    _READER.get_metrics_data()  # cumulative points: read and compare against the test's own DAG ids
    exporter = InMemorySpanExporter()
    _SWITCH.target = SimpleSpanProcessor(exporter)
    try:
        yield Telemetry(exporter)
    finally:
        _SWITCH.target = None


def attribute_texts(spans: list[ReadableSpan]) -> list[str]:
    """Every attribute value and event attribute of ``spans`` as text, to look for what must not be there."""
    texts = []
    for span in spans:
        texts.extend(str(v) for v in (span.attributes or {}).values())
        texts.append(span.name)
        for event in span.events:
            texts.extend(str(v) for v in (event.attributes or {}).values())
        if span.status.description:
            texts.append(span.status.description)
    return texts
