"""Observability: OpenTelemetry GenAI spans and metrics of every call, OpenLineage facets of every
operator. One place that knows the names (:mod:`.attributes`); see ``docs/observability.md``.

Nothing here needs the OpenTelemetry SDK or the OpenLineage provider: spans and metrics go through
the OpenTelemetry API (a dependency of Airflow), and :mod:`.lineage` imports the OpenLineage
provider only when Airflow's OpenLineage listener calls an operator.
"""

from __future__ import annotations

from airflow_gradient.observability.scope import Telemetry, tracing_mode
from airflow_gradient.observability.batch_spans import batch_span, pacing_wait

__all__ = ["Telemetry", "batch_span", "pacing_wait", "tracing_mode"]
