"""The metrics of every call, through the OpenTelemetry API (the meter provider is the user's).

``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` and, for streams,
``gen_ai.client.operation.time_to_first_chunk`` as the GenAI conventions define them (instrument,
unit, bucket advice, attributes), plus ``gradient.client.cost`` (US
dollars) and ``gradient.client.rate_limited`` (429 replies). Every point also carries
``airflow.dag_id`` and ``airflow.task_id``, so a dashboard can chart spend and refusals by DAG, task
and model. With no meter provider set, nothing is made and each call costs one check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.metrics._internal import _ProxyMeterProvider

from airflow_gradient.observability import attributes as attr

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider


@dataclass(frozen=True)
class Instruments:
    """The instruments of one meter provider."""

    duration: Histogram
    time_to_first_chunk: Histogram
    token_usage: Histogram
    cost: Counter
    rate_limited: Counter

    def record_duration(self, seconds: float, attributes: Mapping[str, str | int]) -> None:
        self.duration.record(seconds, attributes)

    def record_tokens(self, input_tokens: int | None, output_tokens: int | None,
                      attributes: Mapping[str, str | int]) -> None:
        # Billable counts, as the conventions ask: Gradient reports only those.
        if input_tokens is not None:
            self.token_usage.record(input_tokens, {**attributes, attr.TOKEN_TYPE: "input"})
        if output_tokens is not None:
            self.token_usage.record(output_tokens, {**attributes, attr.TOKEN_TYPE: "output"})


_cache: tuple[object, Instruments | None] | None = None


def instruments() -> Instruments | None:
    """The instruments of the global meter provider, made once per provider; None when there is
    none (the API's no-op or proxy provider)."""
    global _cache
    provider = metrics.get_meter_provider()
    if _cache is not None and _cache[0] is provider:
        return _cache[1]
    # The API's proxy stands in until a provider is set (then it forwards): nothing to record yet.
    made = None if isinstance(provider, (NoOpMeterProvider, _ProxyMeterProvider)) else _make(provider)
    _cache = (provider, made)
    return made


def _make(provider: MeterProvider) -> Instruments:
    from airflow_gradient._version import __version__

    meter = provider.get_meter(attr.INSTRUMENTATION_NAME, __version__,
                               schema_url=f"https://opentelemetry.io/schemas/{attr.SEMCONV_VERSION}")
    return Instruments(
        duration=meter.create_histogram(
            attr.METRIC_OPERATION_DURATION, unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=attr.DURATION_BUCKETS,
        ),
        time_to_first_chunk=meter.create_histogram(
            attr.METRIC_TIME_TO_FIRST_CHUNK, unit="s",
            description="Time to receive the first chunk of a response stream, from sending the request.",
            explicit_bucket_boundaries_advisory=attr.DURATION_BUCKETS,
        ),
        token_usage=meter.create_histogram(
            attr.METRIC_TOKEN_USAGE, unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=attr.TOKEN_BUCKETS,
        ),
        cost=meter.create_counter(
            attr.METRIC_COST, unit="[USD]",
            description="What the replies cost at the prices in force (models without a price are not counted).",
        ),
        rate_limited=meter.create_counter(
            attr.METRIC_RATE_LIMITED, unit="{reply}", description="Replies refused with HTTP 429.",
        ),
    )
