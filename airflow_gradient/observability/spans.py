"""Spans, through the OpenTelemetry API only (the SDK and exporter are the user's).

Every HTTP attempt of a call is one CLIENT span, named ``"{gen_ai.operation.name} {model}"`` after
the GenAI conventions, child of the current span (Airflow's task span when ``[traces] otel_on``
is set, or the batch span of :mod:`.batch_spans`). A retry is a new span with
``http.request.resend_count``. A stream's span lasts until its last event and records the time to
its first chunk.

The tracer is fetched on use, once per tracer provider: with none set (the API's proxy or no-op
provider), an attempt costs one check and makes nothing. The model access key is never recorded:
attributes come from the request body (which holds no key) and the parsed reply (scrubbed of it
by the hook); an error is recorded by its type, never by its message.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode

from airflow_gradient.observability import attributes as attr
from airflow_gradient.observability import content, metrics, scope

if TYPE_CHECKING:
    from types import TracebackType

    from opentelemetry.trace import Span, Tracer

    from airflow_gradient.models.events import StreamEvent

AttributeValue = str | int | float | bool | list[str]

_tracer_cache: tuple[object, Tracer | None] | None = None


def tracer() -> Tracer | None:
    """The tracer of the global tracer provider, fetched once per provider; None when none is set."""
    global _tracer_cache
    provider = trace.get_tracer_provider()
    if _tracer_cache is not None and _tracer_cache[0] is provider:
        return _tracer_cache[1]
    made = None if isinstance(provider, (NoOpTracerProvider, ProxyTracerProvider)) else provider.get_tracer(
        attr.INSTRUMENTATION_NAME, _version(), schema_url=f"https://opentelemetry.io/schemas/{attr.SEMCONV_VERSION}"
    )
    _tracer_cache = (provider, made)
    return made


def _version() -> str:
    from airflow_gradient._version import __version__

    return __version__


@lru_cache(maxsize=16)
def _server(base_url: str) -> tuple[str, int]:
    import httpx

    url = httpx.URL(base_url)
    return url.host, url.port or (443 if url.scheme == "https" else 80)


def _operation(path: str) -> str:
    if path.endswith(("/responses", "/chat/completions")):  # the latter: common.ai's Pydantic AI model
        return attr.OP_CHAT
    if path.endswith("/embeddings"):
        return attr.OP_EMBEDDINGS
    return attr.OP_BATCH_FILE if "/files" in path else attr.OP_BATCH_JOB


class CallTrace:
    """One API call, whatever its retries: hands out one span per attempt (:meth:`attempt`).

    Made for every call; when neither a tracer nor a meter is set, or ``tracing`` is ``"off"``,
    its attempts are a shared do-nothing context.
    """

    __slots__ = ("_held", "_points", "_request", "attempts", "base_url", "body", "extra", "instruments", "model",
                 "operation", "telemetry", "tracer")

    def __init__(self, path: str, body: Mapping[str, Any] | None, base_url: str, *,
                 operation: str | None = None, extra: Mapping[str, AttributeValue] | None = None) -> None:
        """``path``: the API path, which names the operation unless ``operation`` does;
        ``base_url``: where the request goes (``server.address`` and ``server.port``; a presigned
        URL's query must be left out);
        ``extra``: span attributes of this call beyond the conventions' (``http.request.method``,
        a batch job's id)."""
        self.telemetry = scope.current()
        self.tracer = tracer() if self.telemetry.item_spans else None
        self.instruments = metrics.instruments()
        self.operation = operation or _operation(path)
        self.body = body or {}
        self.model = self.body.get("model")
        self.base_url = base_url
        self.extra = extra
        self.attempts = 0
        self._held: _Attempt | None = None
        # What every attempt's span and metric points share, made at the first attempt: a retry,
        # or a call that records both, does not rebuild them (the SDK copies what it is given).
        self._request: dict[str, AttributeValue] | None = None
        self._points: dict[str, str | int] | None = None

    @property
    def active(self) -> bool:
        return self.tracer is not None or self.instruments is not None

    def attempt(self) -> _Attempt | _NoAttempt:
        """A context manager around one HTTP attempt: a span, and its metrics."""
        if not self.active:
            return _NO_ATTEMPT
        self.attempts += 1
        return _Attempt(self)

    def common(self) -> dict[str, AttributeValue]:
        """What the span and every metric point of this call share."""
        address, port = _server(self.base_url)
        common: dict[str, AttributeValue] = {
            attr.OPERATION_NAME: self.operation, attr.PROVIDER_NAME: attr.PROVIDER,
            attr.SERVER_ADDRESS: address, attr.SERVER_PORT: port,
        }
        if isinstance(self.model, str):
            common[attr.REQUEST_MODEL] = self.model
        return common

    def request_attributes(self) -> dict[str, AttributeValue]:
        """The span attributes every attempt starts with (never the key; content only with
        ``capture_content``)."""
        if self._request is None:
            values = self.common()
            values.update(content.request_attributes(self.operation, self.body))
            if self.extra:
                values.update(self.extra)
            if (custom_id := scope.custom_id()) is not None:
                values[attr.CUSTOM_ID] = custom_id
            if self.telemetry.capture_content:
                values.update(content.input_attributes(self.body))
            self._request = values
        return self._request

    def metric_points(self) -> dict[str, str | int]:
        """The attributes every metric point of this call carries."""
        if self._points is None:
            self._points = {key: value for key, value in self.common().items() if isinstance(value, (str, int))}
            self._points.update(self.telemetry.metric_attributes)
        return self._points

    def hold(self, attempt: _Attempt) -> None:
        self._held = attempt

    def watch(self, events: Iterator[StreamEvent]) -> Iterator[StreamEvent]:
        """``events`` of the stream whose opening attempt was held: the span records the time to
        the first event and the final result, and ends with the stream."""
        held, self._held = self._held, None
        if held is None:
            yield from events
            return
        with held.resumed():
            for event in events:
                held.chunk(event)
                yield event

    async def awatch(self, events: AsyncIterator[StreamEvent]) -> AsyncGenerator[StreamEvent, None]:
        """Async :meth:`watch`."""
        held, self._held = self._held, None
        if held is None:
            async for event in events:
                yield event
            return
        with held.resumed():
            async for event in events:
                held.chunk(event)
                yield event


def _usage_of(result: Any) -> dict[str, int] | None:
    """A reply's token counts: a ``ResponseResult``'s summary, or an embeddings reply's usage."""
    usage = getattr(result, "usage", None)
    if usage is None:
        return None
    summary = getattr(result, "usage_summary", None)
    return summary() if summary is not None else usage.as_dict()  # type: ignore[no-any-return]


class _NoAttempt:
    __slots__ = ()

    def __enter__(self) -> _NoAttempt:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def reply(self, result: Any) -> None:
        pass

    def status(self, code: int) -> None:
        pass

    def hold(self) -> None:
        pass


_NO_ATTEMPT = _NoAttempt()


class _Attempt:
    """One HTTP attempt: its span (when tracing items) and its metric points."""

    __slots__ = ("call", "first_chunk_at", "held", "model_replied", "span", "started")

    def __init__(self, call: CallTrace) -> None:
        self.call = call
        self.span: Span | None = None
        self.held = False
        self.model_replied: str | None = None
        self.first_chunk_at: float | None = None
        self.started = 0.0

    def __enter__(self) -> _Attempt:
        call = self.call
        self.started = time.monotonic()
        if call.tracer is not None:
            name = f"{call.operation} {call.model}" if isinstance(call.model, str) else call.operation
            self.span = call.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=self._request_attributes())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self._failed(exc)
        elif self.held:
            self.call.hold(self)
            return
        self._end(exc)

    def hold(self) -> None:
        """Keep the span open past the block (a stream being read): :meth:`CallTrace.watch` ends it."""
        self.held = True

    def status(self, code: int) -> None:
        if self.span is not None:
            self.span.set_attribute(attr.HTTP_STATUS_CODE, code)

    def reply(self, result: Any) -> None:
        """The parsed reply of a call: a ``ResponseResult``, or any reply with ``model``, ``id``,
        ``usage`` and ``usage_summary()`` (input and output tokens) such as an embeddings reply."""
        self.model_replied = getattr(result, "model", None)
        usage = _usage_of(result)
        cost = self._cost(usage, self.model_replied)
        telemetry = self.call.telemetry
        instruments = self.call.instruments
        if instruments is not None:
            points = self._metric_attributes()
            if usage is not None:
                chat = self.call.operation == attr.OP_CHAT  # an embedding has input tokens only
                instruments.record_tokens(usage["input_tokens"], usage.get("output_tokens") if chat else None, points)
            if cost is not None:
                instruments.cost.add(cost, points)
        span = self.span
        if span is None or not span.is_recording():
            return
        # The status with the rest: each set_attribute call takes the span's lock and cleans anew.
        values: dict[str, AttributeValue] = {attr.HTTP_STATUS_CODE: 200}
        if response_id := getattr(result, "id", None):
            values[attr.RESPONSE_ID] = response_id
        if self.model_replied:
            values[attr.RESPONSE_MODEL] = self.model_replied
        if finish_reason := getattr(result, "finish_reason", None):
            values[attr.RESPONSE_FINISH_REASONS] = [finish_reason]
        if usage is not None:
            values[attr.USAGE_INPUT_TOKENS] = usage["input_tokens"]
            if self.call.operation == attr.OP_CHAT:
                values[attr.USAGE_OUTPUT_TOKENS] = usage["output_tokens"]
                values[attr.USAGE_CACHE_READ_INPUT_TOKENS] = usage.get("cached_tokens", 0)
                values[attr.USAGE_REASONING_OUTPUT_TOKENS] = usage.get("reasoning_tokens", 0)
        if cost is not None:
            values[attr.COST_USD] = cost
        if telemetry.capture_content and self.call.operation == attr.OP_CHAT:
            values[attr.OUTPUT_MESSAGES] = json.dumps(content.output_messages(result), ensure_ascii=False)
        span.set_attributes(values)

    def chunk(self, event: StreamEvent) -> None:
        """An event of the stream: the first one times the first chunk (a span attribute now, the
        conventions' histogram when the stream ends, once the reply has named its model)."""
        if self.first_chunk_at is None:
            self.first_chunk_at = time.monotonic()
            if self.span is not None:
                self.span.set_attribute(attr.RESPONSE_TIME_TO_FIRST_CHUNK, self.first_chunk_at - self.started)
        if event.kind == "completed" and event.response is not None:
            self.reply(event.response)

    @contextmanager
    def resumed(self) -> Iterator[None]:
        """The held span's stream is read inside; it ends with it (and fails with it)."""
        try:
            yield
        except BaseException as exc:
            self._failed(exc)
            self._end(exc)
            raise
        self._end(None)

    # -- inside -----------------------------------------------------------------------------------

    def _request_attributes(self) -> dict[str, AttributeValue]:
        call = self.call
        if call.attempts > 1:
            return {**call.request_attributes(), attr.HTTP_RESEND_COUNT: call.attempts - 1}
        return call.request_attributes()

    def _metric_attributes(self) -> dict[str, str | int]:
        points = dict(self.call.metric_points())  # a copy: callers add error.type or the token type
        if self.model_replied:
            points[attr.RESPONSE_MODEL] = self.model_replied
        return points

    def _cost(self, usage: Mapping[str, int] | None, model: str | None) -> float | None:
        costing = self.call.telemetry.costing
        if costing is None or usage is None:
            return None
        from airflow_gradient.pricing import cost_usd

        request_model = self.call.model if isinstance(self.call.model, str) else None
        return cost_usd(usage, model, costing.prices, request_model=request_model, batch=costing.batch)

    def _failed(self, exc: BaseException) -> None:
        status = getattr(exc, "status", None)
        error_type = str(status) if isinstance(status, int) and status >= 400 else type(exc).__name__
        rate_limited = status == 429
        instruments = self.call.instruments
        if instruments is not None and rate_limited:
            instruments.rate_limited.add(1, self._metric_attributes())
        span = self.span
        if span is None or not span.is_recording():
            return
        values: dict[str, AttributeValue] = {attr.ERROR_TYPE: error_type}
        if isinstance(status, int):
            values[attr.HTTP_STATUS_CODE] = status
        if rate_limited:
            values.update(self._rate_limit_attributes(exc))
        span.set_attributes(values)
        span.set_status(Status(StatusCode.ERROR, error_type))

    def _rate_limit_attributes(self, exc: BaseException) -> dict[str, AttributeValue]:
        values: dict[str, AttributeValue] = {}
        told = getattr(exc, "retry_after", None)
        wait = float(told) if isinstance(told, (int, float)) else 0.0
        if told is not None:
            values[attr.RETRY_AFTER_S] = wait
        limiter = self.call.telemetry.limiter
        if limiter is not None:
            pacing = limiter.pacing()
            values[attr.PACING_SOURCE] = pacing.source
            wait = max(wait, pacing.paused_s)
        values[attr.RATE_LIMIT_WAIT_S] = round(wait, 3)
        return values

    def _end(self, exc: BaseException | None) -> None:
        instruments = self.call.instruments
        if instruments is not None:
            points = self._metric_attributes()
            if self.first_chunk_at is not None:  # a stream: the conventions give this one no error.type
                instruments.time_to_first_chunk.record(self.first_chunk_at - self.started, points)
            if exc is not None:
                points[attr.ERROR_TYPE] = str(getattr(exc, "status", None) or type(exc).__name__)
            instruments.record_duration(time.monotonic() - self.started, points)
        if self.span is not None:
            self.span.end()
