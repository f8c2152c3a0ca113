"""The road from a Pydantic AI model to Gradient: an httpx transport that sends every request the
OpenAI SDK makes through :class:`~airflow_gradient.hooks.gradient.GradientHook`.

The SDK builds the request (Chat Completions, tools, structured output); this transport replaces
the socket under it. Each request:

1. waits its turn from the account's limiter (the Redis-shared one when the connection sets
   ``rate_limit_store``, so agent calls and batches on one account share one budget);
2. is sent by ``GradientHook.arequest``, one attempt at a time: the hook's key, timeouts, the key
   scrubbed from the reply, a 2xx reply that broke off never sent again (it may be billed);
3. is retried by the hook's :class:`~airflow_gradient.http.retry.RetryPolicy` (``Retry-After`` and the
   other wait hints honoured, 4xx other than 408/409/429 never retried), the limiter hearing every
   reply;
4. once answered, logs its usage and ``cost_usd`` (from the connection's ``prices``).

The SDK must not retry on its own (``max_retries=0``): a refusal that retries did not cure is
handed to it as it came, so it raises its usual error (which Pydantic AI turns into
``ModelHTTPError`` naming the model and status) after this transport logged ours (which names the
connection). A failure with no reply raises the hook's :class:`~airflow_gradient.exceptions.GradientError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import RetryCallState

from airflow_gradient.batch.in_task.pacing import RateLimiter
from airflow_gradient.exceptions import GradientAPIError, GradientProtocolError
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.http import replies
from airflow_gradient.models.result import ResponseResult, Usage, parse_reply
from airflow_gradient.observability.spans import CallTrace
from airflow_gradient.pricing import Prices, Spend, cost_usd

log = logging.getLogger(__name__)

# A rough count for pacing before the reply says the real one (the limiter then corrects it).
_CHARS_PER_TOKEN = 4


@dataclass
class UsageTotals:
    """What the calls through one transport used so far, and what they cost."""

    requests: int = 0
    usage: Usage = field(default_factory=Usage)
    spend: Spend = field(default_factory=Spend)

    def add(self, usage: Usage, cost: float | None) -> None:
        self.requests += 1
        self.usage += usage
        self.spend.add_row({"usage": usage.summary(), "cost_usd": cost})


class _PacedAttempts:
    """The hook's ``CallObserver`` for one request: each attempt acquires from the limiter, and
    the limiter hears each reply, or that none came."""

    def __init__(self, limiter: RateLimiter, tokens: int) -> None:
        self.limiter = limiter
        self.tokens = tokens
        self.waiting_reply = False

    async def before_send(self) -> None:
        await self.limiter.acquire(self.tokens)
        self.waiting_reply = True

    def on_reply(self, status: int | None, headers: Mapping[str, str]) -> None:
        if self.waiting_reply:
            self.waiting_reply = False
            self.limiter.on_reply(status, headers, self.tokens)


class GradientTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` async transport carrying the OpenAI SDK's requests through ``hook``.

    :param hook: the Gradient hook whose settings, clients and retry policy are used.
    :param limiter: the account's limiter (:func:`~airflow_gradient.batch.in_task.pacing.factory.limiter_for`).
    :param prices: prices for ``cost_usd`` in the log, or None.
    """

    def __init__(self, hook: GradientHook, limiter: RateLimiter, prices: Prices | None = None) -> None:
        self.hook = hook
        self.limiter = limiter
        self.prices = prices
        self.totals = UsageTotals()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raw = await request.aread()
        body = json.loads(raw) if raw else None
        path = self._api_path(request.url)
        calls = _PacedAttempts(self.limiter, _estimated_tokens(raw, body))
        refused: list[httpx.Response] = []

        trace = CallTrace(path, body if isinstance(body, dict) else None, self.hook.settings.base_url)

        async def attempt() -> httpx.Response:
            await calls.before_send()
            with trace.attempt() as span:  # one span per attempt, as for the provider's own calls
                try:
                    response = await self.hook.arequest(request.method, path, body, observer=calls)
                finally:
                    calls.on_reply(None, {})  # a no-op unless the hook raised before any status arrived
                if response.status_code >= 400:
                    refused[:] = [response]
                    replies.check_status(response, self.hook.gradient_conn_id)
                parsed = _parsed_for_span(response)
                if parsed is not None:
                    span.reply(parsed)
                else:
                    span.status(response.status_code)
            return response

        retrying = self.hook.retry_policy.async_retrying(self._log_retry)
        try:
            response: httpx.Response = await retrying(attempt)
        except GradientAPIError as exc:
            # Retries did not cure it (or it is not worth one): the SDK reads the refusal itself.
            # The model is named here as well: the server's message need not name it.
            log.error("Gradient request for model %r failed: %s", _asked_model(body), exc)
            response = refused[-1]
        else:
            self._record_usage(response, body, calls.tokens)
        # A read copy: the hook already decoded and scrubbed the body (wire headers dropped).
        return httpx.Response(response.status_code, headers=response.headers, content=response.content,
                              request=request)

    def _api_path(self, url: httpx.URL) -> str:
        """``url`` relative to the connection's base URL (the hook's client adds it back)."""
        base = httpx.URL(self.hook.settings.base_url).path.rstrip("/")
        path = url.path[len(base):] if url.path.startswith(base + "/") else url.path
        return f"{path}?{url.query.decode()}" if url.query else path

    def _record_usage(self, response: httpx.Response, request_body: Any, estimated: int) -> None:
        try:
            reply = response.json()
            usage = Usage.model_validate(reply["usage"])
        except (ValueError, TypeError, KeyError):  # ValidationError is a ValueError
            return  # no usable usage: the SDK judges the reply itself
        self.limiter.on_usage(estimated, usage.input_tokens + usage.output_tokens)
        asked = _asked_model(request_body)
        model = str(reply.get("model") or asked or "")
        cost = cost_usd(usage.summary(), model, self.prices, request_model=asked)
        self.totals.add(usage, cost)
        log.info(
            "Gradient %s via %r: usage %d input tokens (%d cached), %d output tokens; cost_usd %s; "
            "this task so far: %d request(s), %d tokens, %s",
            model, self.hook.gradient_conn_id, usage.input_tokens, usage.cached_tokens, usage.output_tokens,
            "unknown (no price)" if cost is None else f"{cost:.6f}",
            self.totals.requests, self.totals.usage.total_tokens, self.totals.spend.describe(),
        )

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("Gradient request failed (%s); retry %d in %.1f s", exc, state.attempt_number, wait)


def _asked_model(body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    return str(model) if model else None


def _estimated_tokens(raw: bytes, body: Any) -> int:
    budget = 0
    if isinstance(body, dict):
        budget = int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
    return max(1, len(raw) // _CHARS_PER_TOKEN) + budget


def _parsed_for_span(response: httpx.Response) -> ResponseResult | None:
    """The reply as the span reads it (model, id, usage, finish reason), or None when it does not
    parse: Pydantic AI, not the span, judges a reply."""
    try:
        return parse_reply(response.json())
    except (ValueError, GradientProtocolError):  # ValidationError is a ValueError
        return None
