"""GradientHook: the API of Gradient serverless inference (``POST /v1/responses``, ``GET /v1/models``).

An API layer: each method says what it sends and how the reply is read; everything between it and
the socket is :mod:`airflow_gradient.http` (settings, the client pool, one attempt, replies,
errors, retries, streams).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar, cast

import httpx
from tenacity import RetryCallState

from airflow.sdk import BaseHook
from airflow_gradient import arguments
from airflow_gradient.exceptions import GradientError, GradientProtocolError
from airflow_gradient.http import replies
from airflow_gradient.http.attempt import (
    Attempt,
    CallObserver,
    aexchange,
    aopen_stream,
    astream_events,
    build_request,
    exchange,
    open_stream,
    stream_events,
)
from airflow_gradient.hooks.embeddings import EMBEDDINGS_PATH, EmbeddingsCall
from airflow_gradient.http.clients import DEFAULT_MAX_CONNECTIONS, USER_AGENT, AsyncTransport, ClientPool
from airflow_gradient.http.retry import RetryPolicy
from airflow_gradient.http.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT_S,
    GradientSettings,
    settings_of_connection,
)
from airflow_gradient.http.streams import acollect, collect
from airflow_gradient.models.embeddings import EmbeddingsResult, EncodingFormat
from airflow_gradient.models.events import StreamEvent
from airflow_gradient.models.request import ResponseRequest, build_request as build_response_request, require_model
from airflow_gradient.models.result import ResponseResult
from airflow_gradient.observability.spans import CallTrace

R = TypeVar("R")  # what a reply is read into (ResponseResult, EmbeddingsResult)

# Importable from here as before the HTTP layer had a package of its own.
__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_READ_TIMEOUT_S",
    "USER_AGENT",
    "CallObserver",
    "GradientHook",
    "GradientSettings",
]


class GradientHook(BaseHook):
    """Talks to DigitalOcean Gradient serverless inference (``POST /v1/responses``).

    The Airflow connection holds the model access key in its password, the base URL in its host
    (default ``https://inference.do-ai.run/v1``) and, in its extras, ``model`` (the default model),
    ``timeout`` (read timeout, seconds), ``connect_timeout``, ``max_retries``, ``prices`` (US
    dollars per million tokens per model, see :mod:`airflow_gradient.pricing`) and
    ``rate_limit_store`` (the id of an Airflow connection of type ``redis`` through which batch
    tasks on this account share their pace; see ``docs/scaling-out.md``). No environment
    variable ever replaces the connection's key.

    One pooled ``httpx.Client`` and one ``httpx.AsyncClient`` are created on first use and reused
    for every request; :meth:`close` / :meth:`aclose` release them.

    :param gradient_conn_id: the Airflow connection to use.
    :param timeout: the read timeout in seconds (one read from the socket), replacing the
        connection's ``timeout`` extra; also the attempt limit of a call that gives no ``timeout``
        (request timeout) of its own. See the glossary in ``docs/architecture.md``.
    :param max_retries: retries after the first try, overriding the connection's.
    :param max_connections: size of the connection pool of each client.
    :param async_transport: ``"aiohttp"`` carries the async client's requests over aiohttp's
        connection pool (the ``httpx-aiohttp`` package), which costs 2-3 times less CPU per request
        than httpx's own; the batch engine uses it when installed.
    :param settings: settings already read (:meth:`GradientSettings.from_connection`): the hook
        then never reads the connection, and ``gradient_conn_id`` is theirs. ``timeout`` and
        ``max_retries`` still win over them.
    """

    # What a 409 means on this hook's API (see airflow_gradient.http.retry.is_retryable).
    conflict_is_final: ClassVar[bool] = False

    conn_name_attr = "gradient_conn_id"
    default_conn_name = "gradient_default"
    conn_type = "gradient"
    hook_name = "DigitalOcean Gradient"

    def __init__(
        self,
        gradient_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        async_transport: AsyncTransport = "httpx",
        settings: GradientSettings | None = None,
    ) -> None:
        super().__init__()
        self.gradient_conn_id = arguments.text(
            "gradient_conn_id", settings.conn_id if settings is not None else gradient_conn_id
        )
        # The hook's ``timeout`` is a read timeout: it replaces the connection's ``timeout`` extra.
        self._read_timeout_override = arguments.optional(arguments.positive_number, "timeout", timeout)
        self._max_retries_override = arguments.optional(arguments.non_negative_int, "max_retries", max_retries)
        self._settings = (
            settings.overridden(read_timeout=self._read_timeout_override, max_retries=self._max_retries_override)
            if settings is not None else None
        )
        self.max_connections = arguments.positive_int("max_connections", max_connections)
        self.async_transport = cast(AsyncTransport, arguments.one_of("async_transport", async_transport,
                                                                     ("httpx", "aiohttp")))
        self._clients = ClientPool(lambda: self.settings, self.max_connections, self.async_transport)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gradient_conn_id={self.gradient_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_gradient.get_provider_info import UI_FIELD_BEHAVIOUR

        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

    # -- connection ---------------------------------------------------------------------------

    @property
    def settings(self) -> GradientSettings:
        """The settings given, else the connection's, read once; the key is registered with the
        secrets masker. A connection that does not exist raises :class:`GradientConfigError`
        naming it (a task fails for good: retrying finds it missing again)."""
        if self._settings is None:
            self._settings = settings_of_connection(
                self.gradient_conn_id, self.get_connection,
                read_timeout=self._read_timeout_override, max_retries=self._max_retries_override,
            )
            for warning in self._settings.extra_warnings:
                self.log.warning("%s", warning)
        return self._settings

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.settings.max_retries, max_wait=self.settings.max_retry_wait,
                           conflict_is_final=self.conflict_is_final)

    def get_conn(self) -> httpx.Client:
        """The pooled sync client (created on first use)."""
        return self._clients.sync_client()

    def get_async_conn(self) -> httpx.AsyncClient:
        """The pooled async client of the running event loop (created on first use)."""
        return self._clients.async_client()

    def close(self) -> None:
        """Close the sync client; the async one is dropped (it is closed by :meth:`aclose`)."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close the async client of the running loop."""
        await self._clients.aclose()

    # -- requests -----------------------------------------------------------------------------

    def prepare_request(self, request: ResponseRequest | dict[str, Any]) -> ResponseRequest:
        """Validate ``request`` and fill in the connection's default model; nothing is sent."""
        req = build_response_request(request)
        if req.model is not None:  # the connection is read only when it is needed
            return req
        return require_model(req, self.settings.default_model,
                             defaults_from=f"the extras of connection {self.gradient_conn_id!r}")

    def create_response(
        self, request: ResponseRequest | dict[str, Any], *, timeout: float | None = None
    ) -> ResponseResult:
        """Send one request and return its parsed reply, retrying per :mod:`airflow_gradient.http.retry`.

        ``timeout`` (the request timeout; default: the connection's read timeout) limits each
        attempt as a whole, from sending to the reply's last byte. A failure once a 2xx status has
        arrived (the body cut off, or not complete in time) raises :class:`GradientProtocolError`
        and is not retried: the reply was generated and may be billed. A request with
        ``stream=True`` is streamed and its final result returned.
        """
        req = self.prepare_request(request)
        if req.stream:
            return collect(self.stream_response(req, timeout=timeout))
        body = req.to_wire()
        body.pop("stream", None)
        retrying = self.retry_policy.retrying(self._log_retry)
        started = time.monotonic()
        call = CallTrace("/responses", body, self.settings.base_url)
        result = retrying(self._post_once, "/responses", body, self._read_response, timeout, call)
        return replies.with_call_stats(result, retrying.statistics, started)

    async def acreate_response(
        self,
        request: ResponseRequest | dict[str, Any],
        *,
        timeout: float | None = None,
        observer: CallObserver | None = None,
    ) -> ResponseResult:
        """Async :meth:`create_response`; ``observer`` is told of every attempt and reply."""
        req = self.prepare_request(request)
        if req.stream:
            return await acollect(self.astream_response(req, timeout=timeout, observer=observer))
        body = req.to_wire()
        body.pop("stream", None)
        retrying = self.retry_policy.async_retrying(self._log_retry)
        started = time.monotonic()
        call = CallTrace("/responses", body, self.settings.base_url)
        result: ResponseResult = await retrying(self._apost_once, "/responses", body, self._read_response, timeout,
                                                observer, call)
        return replies.with_call_stats(result, retrying.statistics, started)

    def _post_once(self, path: str, body: dict[str, Any], read: Callable[[httpx.Response], R],
                   request_timeout: float | None, call: CallTrace) -> R:
        """One attempt of ``POST path``, its reply read by ``read``: the step both APIs retry."""
        with call.attempt() as span:  # one span per attempt (airflow_gradient.observability)
            result = read(self.request("POST", path, body, timeout=request_timeout))
            span.reply(result)
        return result

    async def _apost_once(self, path: str, body: dict[str, Any], read: Callable[[httpx.Response], R],
                          request_timeout: float | None, observer: CallObserver | None, call: CallTrace) -> R:
        """Async :meth:`_post_once`; ``observer`` is told before the attempt and of its reply."""
        if observer is not None:
            await observer.before_send()
        with call.attempt() as span:
            result = read(await self.arequest("POST", path, body, timeout=request_timeout, observer=observer))
            span.reply(result)
        return result

    def _read_response(self, response: httpx.Response) -> ResponseResult:
        return replies.response_result(response, self.gradient_conn_id)

    # -- embeddings: the request and reply are airflow_gradient.hooks.embeddings'; the sending is ours.

    def create_embeddings(
        self,
        input: str | Sequence[str],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat = "base64",
        user: str | None = None,
        timeout: float | None = None,
    ) -> EmbeddingsResult:
        """``POST /v1/embeddings``: the vectors of ``input`` (one text, or 1 to 2048), in input order.

        ``model`` defaults to the connection's ``model`` extra. Either encoding in the reply is read
        whatever ``encoding_format`` asked. Bad input raises :class:`GradientRequestInvalid` before
        anything is sent; retries and ``timeout`` are those of :meth:`create_response`.
        """
        call = EmbeddingsCall.of(input, model=model, default_model=self.settings.default_model,
                                 encoding_format=encoding_format, user=user, conn_id=self.gradient_conn_id)
        retrying = self.retry_policy.retrying(self._log_retry)
        trace = CallTrace(EMBEDDINGS_PATH, call.body, self.settings.base_url)
        result = retrying(self._post_once, EMBEDDINGS_PATH, call.body, call.read, timeout, trace)
        return call.finish(result, retrying.statistics)

    async def acreate_embeddings(
        self,
        input: str | Sequence[str],
        *,
        model: str | None = None,
        encoding_format: EncodingFormat = "base64",
        user: str | None = None,
        timeout: float | None = None,
        observer: CallObserver | None = None,
    ) -> EmbeddingsResult:
        """Async :meth:`create_embeddings`; ``observer`` is told of every attempt and reply."""
        call = EmbeddingsCall.of(input, model=model, default_model=self.settings.default_model,
                                 encoding_format=encoding_format, user=user, conn_id=self.gradient_conn_id)
        retrying = self.retry_policy.async_retrying(self._log_retry)
        trace = CallTrace(EMBEDDINGS_PATH, call.body, self.settings.base_url)
        result: EmbeddingsResult = await retrying(self._apost_once, EMBEDDINGS_PATH, call.body, call.read, timeout,
                                                  observer, trace)
        return call.finish(result, retrying.statistics)

    # -- one HTTP attempt ---------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> httpx.Response:
        """One attempt of ``method path`` (``body`` sent as JSON) through the pooled client: the
        whole reply, scrubbed of the key, in at most ``timeout`` seconds (the request timeout;
        default: the connection's read timeout). Not retried and not checked:
        :mod:`airflow_gradient.http.replies` reads it."""
        client = self.get_conn()
        return exchange(client, build_request(client, method, path, body, timeout), self.attempt(timeout))

    async def arequest(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        observer: CallObserver | None = None,
    ) -> httpx.Response:
        """Async :meth:`request`; ``observer`` hears of the reply's status as soon as it arrives."""
        client = self.get_async_conn()
        request = build_request(client, method, path, body, timeout)
        return await aexchange(client, request, self.attempt(timeout), observer)

    def attempt(self, request_timeout: float | None = None, url: str | None = None, *, billed: bool = True) -> Attempt:
        """A new attempt limited to ``request_timeout`` (default: the connection's read timeout);
        ``url`` (default: the connection's base URL) is the place its errors name; ``billed``:
        whether its 2xx reply may cost money (see :class:`~airflow_gradient.http.attempt.Attempt`)."""
        settings = self.settings
        return Attempt(settings.attempt_limit(request_timeout), url or settings.base_url, settings.api_key, billed)

    # -- streaming ----------------------------------------------------------------------------

    def stream_response(
        self, request: ResponseRequest | dict[str, Any], *, timeout: float | None = None
    ) -> Iterator[StreamEvent]:
        """Send ``request`` with ``stream: true`` and yield its events as they arrive.

        Only the opening is retried (an error status or a failed connection): once a 200 has
        begun, the request may be billed. The last event is ``kind="completed"``, its ``response``
        the final :class:`ResponseResult`. A stream that breaks off, ends without a terminal event
        or carries an ``error`` frame raises :class:`GradientProtocolError`.
        """
        body = self._stream_body(request)
        retrying = self.retry_policy.retrying(self._log_retry)
        started = time.monotonic()
        call = CallTrace("/responses", body, self.settings.base_url)
        response = retrying(self._open_stream, body, timeout, call)
        yield from call.watch(self._events(response, retrying.statistics, started))

    def _events(self, response: httpx.Response, statistics: dict[str, Any], started: float) -> Iterator[StreamEvent]:
        decoder = replies.decoder_for(response)
        yield from stream_events(response, decoder, self.settings.api_key)
        yield replies.completed_event(decoder, response, statistics, started)

    async def astream_response(
        self,
        request: ResponseRequest | dict[str, Any],
        *,
        timeout: float | None = None,
        observer: CallObserver | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Async :meth:`stream_response`; ``observer`` is told of every attempt to open the stream."""
        body = self._stream_body(request)
        retrying = self.retry_policy.async_retrying(self._log_retry)
        started = time.monotonic()
        call = CallTrace("/responses", body, self.settings.base_url)
        response: httpx.Response = await retrying(self._aopen_stream, body, timeout, observer, call)
        # aclosing: a consumer that stops early closes the reply now, not when the loop collects it.
        async with contextlib.aclosing(call.awatch(self._aevents(response, retrying.statistics, started))) as events:
            async for event in events:
                yield event

    async def _aevents(self, response: httpx.Response, statistics: dict[str, Any], started: float
                       ) -> AsyncIterator[StreamEvent]:
        decoder = replies.decoder_for(response)
        async with contextlib.aclosing(astream_events(response, decoder, self.settings.api_key)) as events:
            async for event in events:
                yield event
        yield replies.completed_event(decoder, response, statistics, started)

    def _stream_body(self, request: ResponseRequest | dict[str, Any]) -> dict[str, Any]:
        body = self.prepare_request(request).to_wire()
        body["stream"] = True
        # Without it the chunk framing never says how many tokens were used.
        body.setdefault("stream_options", {"include_usage": True})
        return body

    def _open_stream(self, body: dict[str, Any], request_timeout: float | None, call: CallTrace) -> httpx.Response:
        client = self.get_conn()
        request = build_request(client, "POST", "/responses", body, request_timeout)
        with call.attempt() as span:
            opened = open_stream(client, request, self.attempt(request_timeout), self.gradient_conn_id)
            span.hold()  # the span goes on while the stream is read (CallTrace.watch)
        return opened

    async def _aopen_stream(
        self, body: dict[str, Any], request_timeout: float | None, observer: CallObserver | None, call: CallTrace
    ) -> httpx.Response:
        if observer is not None:
            await observer.before_send()
        client = self.get_async_conn()
        request = build_request(client, "POST", "/responses", body, request_timeout)
        with call.attempt() as span:
            opened = await aopen_stream(client, request, self.attempt(request_timeout), self.gradient_conn_id,
                                        observer)
            span.hold()
        return opened

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self.log.warning(
            "Gradient request failed (%s); retry %d of %d in %.1f s",
            exc, state.attempt_number, self.settings.max_retries, wait,
        )

    # -- models and connection test -----------------------------------------------------------

    def list_models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the models the key may use. Bills nothing."""
        response = self.request("GET", "/models")
        replies.check_status(response, self.gradient_conn_id)
        data = replies.json_object(response)
        models = data.get("data")
        if not isinstance(models, list):
            raise GradientProtocolError("GET /models reply has no 'data' list", status=response.status_code)
        return models

    def test_connection(self) -> tuple[bool, str]:
        """Check the key and URL with ``GET /v1/models``; never raises, never shows the key."""
        try:
            count = len(self.list_models())
        except GradientError as exc:
            return False, _with_warnings(str(exc), self._settings)
        except Exception as exc:  # the UI wants a reason, not a traceback
            return False, _with_warnings(f"{type(exc).__name__}: {exc}", self._settings)
        return True, _with_warnings(f"Connected to {self.settings.base_url}: {count} models available", self._settings)


def _with_warnings(message: str, settings: GradientSettings | None) -> str:
    """A connection test's message with the warnings about the connection's extras, if any."""
    warnings = settings.extra_warnings if settings is not None else ()
    return "; ".join((message, *warnings))
