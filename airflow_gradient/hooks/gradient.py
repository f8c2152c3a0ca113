"""GradientHook: the Airflow connection, pooled HTTP clients and the one path that sends a request."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import httpx
from httpx_sse import EventSource
from tenacity import RetryCallState

from airflow.sdk import BaseHook
from airflow_gradient import arguments, replies
from airflow_gradient._version import __version__
from airflow_gradient.exceptions import (
    GradientArgumentError,
    GradientConfigError,
    GradientConnectionError,
    GradientError,
    GradientProtocolError,
    GradientTimeoutError,
)
from airflow_gradient.http_errors import request_id_of
from airflow_gradient.hooks.embeddings import EMBEDDINGS_PATH, EmbeddingsCall
from airflow_gradient.models.embeddings import EmbeddingsResult, EncodingFormat
from airflow_gradient.models.events import StreamEvent
from airflow_gradient.models.request import ResponseRequest, build_request, require_model
from airflow_gradient.models.result import CallInfo, ResponseResult
from airflow_gradient.retry import RetryPolicy
from airflow_gradient.scrub import scrub_text, scrubbed_response
from airflow_gradient.streaming import StreamDecoder, acollect, collect
from airflow_gradient.transport_errors import DESCRIPTIONS, TRANSPORT_EXCEPTIONS, origin, what_happened
from airflow_gradient.wait_hints import rate_limit_headers

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_BASE_URL = "https://inference.do-ai.run/v1"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# Long generations routinely pass the 60 s that SDKs default to.
DEFAULT_READ_TIMEOUT_S = 600.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_CONNECTIONS = 100
USER_AGENT = f"airflow-gradient/{__version__} httpx/{httpx.__version__}"
# The numbers are an example of the shape, not anyone's price list.
T = TypeVar("T")


class CallObserver(Protocol):
    """Lets a caller (the batch engine) pace and watch each HTTP attempt of an async call."""

    async def before_send(self) -> None: ...

    def on_reply(self, status: int, headers: httpx.Headers) -> None: ...


@dataclass(frozen=True)
class GradientSettings:
    """A Gradient connection's settings, as a value (:meth:`from_connection`); a hook takes them or
    reads them itself. The key never shows in ``repr``."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    default_model: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    max_retry_wait: float = 60.0
    # The ``prices`` extra as stored; validated where it is used (:mod:`airflow_gradient.pricing`).
    prices: Any = None
    rate_limit_store: str | None = None

    @classmethod
    def from_connection(
        cls, conn_id: str, conn: Connection, *, read_timeout: float | None = None, max_retries: int | None = None
    ) -> GradientSettings:
        """The settings of Airflow connection ``conn`` (named ``conn_id``), its key registered with
        the secrets masker; ``read_timeout`` and ``max_retries``, when given, win over its extras.

        Raises :class:`GradientConfigError` naming the connection when it has no key, a bad URL or
        an invalid extra.
        """
        key = (conn.password or "").strip()
        if not key:
            raise GradientConfigError(
                f"Airflow connection {conn_id!r} has no model access key: put it in the connection's password field"
            )
        _mask(key)
        extra = _extras_of(conn_id, conn)
        try:
            settings = cls(
                conn_id=conn_id,
                base_url=_base_url_of(conn.host, conn.port, conn.schema),
                api_key=key,
                default_model=arguments.optional(arguments.text, "model", extra.get("model") or None),
                connect_timeout=_extra_number(extra, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S,
                                              arguments.positive_number),
                read_timeout=_extra_number(extra, "timeout", DEFAULT_READ_TIMEOUT_S, arguments.positive_number),
                max_retries=_extra_number(extra, "max_retries", DEFAULT_MAX_RETRIES, arguments.non_negative_int),
                max_retry_wait=_extra_number(extra, "max_retry_wait", 60.0, arguments.non_negative_number),
                prices=extra.get("prices"),
                rate_limit_store=str(extra.get("rate_limit_store") or "").strip() or None,
            )
        except GradientArgumentError as exc:
            # The value is quoted to help; a key pasted into the wrong field is not.
            reason = exc.reason.replace(key, "***")
            raise GradientConfigError(
                f"Airflow connection {conn_id!r} has an invalid extra: {exc.argument}: {reason}; allowed: {exc.allowed}"
            ) from None
        except ValueError as exc:  # the host is not a URL
            raise GradientConfigError(f"Airflow connection {conn_id!r}: {exc}") from None
        return settings.overridden(read_timeout=read_timeout, max_retries=max_retries)

    def overridden(self, *, read_timeout: float | None = None, max_retries: int | None = None) -> GradientSettings:
        """These settings with a task's own ``read_timeout`` / ``max_retries`` where given: a task's
        arguments win over the connection's extras."""
        if read_timeout is None and max_retries is None:
            return self
        return dataclasses.replace(
            self,
            read_timeout=self.read_timeout if read_timeout is None else read_timeout,
            max_retries=self.max_retries if max_retries is None else max_retries,
        )


def _extras_of(conn_id: str, conn: Any) -> dict[str, Any]:
    """The connection's extras as a dict; extras that are not a JSON object are refused, where
    Airflow would log the error and carry on with none."""
    raw = conn.extra
    if raw in (None, ""):
        return {}
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        # Not the text itself: a half-typed extra may hold a secret.
        raise GradientConfigError(
            f"Airflow connection {conn_id!r} has extras that are not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}); allowed: a JSON object such as "
            '{"model": "llama3.3-70b-instruct", "timeout": 600}'
        ) from None
    if not isinstance(parsed, dict):
        raise GradientConfigError(
            f"Airflow connection {conn_id!r} has extras that are a JSON {type(parsed).__name__}; allowed: "
            "a JSON object such as {\"model\": \"llama3.3-70b-instruct\", \"timeout\": 600}"
        )
    # extra_dejson registers the extras' secret-looking values with the masker.
    return conn.extra_dejson if isinstance(raw, str) else parsed


def _extra_number(extra: dict[str, Any], name: str, default: float, check: Callable[[str, Any], T]) -> T:
    """An extra holding a number (the connection form may store it as text); absent or null: the default."""
    value = extra.get(name)
    return check(name, default) if value is None or value == "" else arguments.number_text(name, value, check)


def _base_url_of(host: str | None, port: int | None, schema: str | None) -> str:
    if not host:
        return DEFAULT_BASE_URL
    url = host if "://" in host else f"https://{host}"
    parsed = httpx.URL(url)
    if port and parsed.port is None:
        parsed = parsed.copy_with(port=port)
    path = parsed.path.rstrip("/")
    if schema and not path:
        path = "/" + schema.strip("/")
    # The documented base is https://inference.do-ai.run; the API lives under /v1.
    return str(parsed.copy_with(path=path or "/v1")).rstrip("/")


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
    :param timeout: read timeout in seconds, overriding the connection's; it is also the time
        limit of a whole attempt when a call gives none.
    :param max_retries: retries after the first try, overriding the connection's.
    :param max_connections: size of the connection pool of each client.
    :param async_transport: ``"aiohttp"`` carries the async client's requests over aiohttp's
        connection pool (the ``httpx-aiohttp`` package), which costs 2-3 times less CPU per request
        than httpx's own; the batch engine uses it when installed.
    :param settings: settings already read (:meth:`GradientSettings.from_connection`): the hook
        then never reads the connection, and ``gradient_conn_id`` is theirs. ``timeout`` and
        ``max_retries`` still win over them.
    """

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
        async_transport: Literal["httpx", "aiohttp"] = "httpx",
        settings: GradientSettings | None = None,
    ) -> None:
        super().__init__()
        self.gradient_conn_id = arguments.text(
            "gradient_conn_id", settings.conn_id if settings is not None else gradient_conn_id
        )
        self._timeout_override = arguments.optional(arguments.positive_number, "timeout", timeout)
        self._max_retries_override = arguments.optional(arguments.non_negative_int, "max_retries", max_retries)
        self._settings = (
            settings.overridden(read_timeout=self._timeout_override, max_retries=self._max_retries_override)
            if settings is not None else None
        )
        self.max_connections = arguments.positive_int("max_connections", max_connections)
        self.async_transport = arguments.one_of("async_transport", async_transport, ("httpx", "aiohttp"))
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None

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
        secrets masker."""
        if self._settings is None:
            self._settings = GradientSettings.from_connection(
                self.gradient_conn_id, self.get_connection(self.gradient_conn_id),
                read_timeout=self._timeout_override, max_retries=self._max_retries_override,
            )
        return self._settings

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.settings.max_retries, max_wait=self.settings.max_retry_wait)

    def _client_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return dict(
            base_url=s.base_url,
            headers={"Authorization": f"Bearer {s.api_key}", "User-Agent": USER_AGENT},
            timeout=httpx.Timeout(s.read_timeout, connect=s.connect_timeout),
            verify=_tls_context(),
            limits=httpx.Limits(
                max_connections=self.max_connections, max_keepalive_connections=self.max_connections
            ),
        )

    def get_conn(self) -> httpx.Client:
        """The pooled sync client (created on first use)."""
        if self._client is None or self._client.is_closed:
            self._client = httpx.Client(**self._client_kwargs())
        return self._client

    def get_async_conn(self) -> httpx.AsyncClient:
        """The pooled async client of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient.is_closed or self._aclient_loop is not loop:
            # A client's connections belong to the loop that opened them: a new loop needs a new one.
            kwargs = self._client_kwargs()
            if self.async_transport == "aiohttp":
                from httpx_aiohttp import AiohttpTransport

                kwargs["transport"] = AiohttpTransport(verify=kwargs["verify"], limits=kwargs["limits"])
            self._aclient = httpx.AsyncClient(**kwargs)
            self._aclient_loop = loop
        return self._aclient

    def close(self) -> None:
        """Close the sync client; the async one is dropped (it is closed by :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._aclient = None

    async def aclose(self) -> None:
        """Close the async client of the running loop."""
        if self._aclient is not None and self._aclient_loop is asyncio.get_running_loop():
            await self._aclient.aclose()
        self._aclient = None

    # -- requests -----------------------------------------------------------------------------

    def prepare_request(self, request: ResponseRequest | dict[str, Any]) -> ResponseRequest:
        """Validate ``request`` and fill in the connection's default model; nothing is sent."""
        req = build_request(request)
        if req.model is not None:  # the connection is read only when it is needed
            return req
        return require_model(req, self.settings.default_model,
                             defaults_from=f"the extras of connection {self.gradient_conn_id!r}")

    def create_response(
        self, request: ResponseRequest | dict[str, Any], *, timeout: float | None = None
    ) -> ResponseResult:
        """Send one request and return its parsed reply, retrying per :mod:`airflow_gradient.retry`.

        ``timeout`` (default: the connection's read timeout) limits each attempt as a whole, from
        sending to the reply's last byte. A failure once a 2xx status has arrived (the body cut
        off, or not complete in time) raises :class:`GradientProtocolError` and is not retried: the
        reply was generated and may be billed. A request with ``stream=True`` is streamed and its
        final result returned.
        """
        req = self.prepare_request(request)
        if req.stream:
            return collect(self.stream_response(req, timeout=timeout))
        body = req.to_wire()
        body.pop("stream", None)
        retrying = self.retry_policy.retrying(self._log_retry)
        started = time.monotonic()
        result = retrying(self._send_once, body, timeout)
        return _stamp(result, retrying.statistics, started)

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
        result: ResponseResult = await retrying(self._asend_once, body, timeout, observer)
        return _stamp(result, retrying.statistics, started)

    def _send_once(self, body: dict[str, Any], timeout: float | None) -> ResponseResult:
        return replies.response_result(self.request("POST", "/responses", body, timeout=timeout), self.gradient_conn_id)

    async def _asend_once(
        self, body: dict[str, Any], timeout: float | None, observer: CallObserver | None
    ) -> ResponseResult:
        if observer is not None:
            await observer.before_send()
        response = await self.arequest("POST", "/responses", body, timeout=timeout, observer=observer)
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
        result = retrying(lambda: call.read(self.request("POST", EMBEDDINGS_PATH, call.body, timeout=timeout)))
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

        async def attempt() -> EmbeddingsResult:
            if observer is not None:
                await observer.before_send()
            return call.read(await self.arequest("POST", EMBEDDINGS_PATH, call.body, timeout=timeout,
                                                 observer=observer))

        retrying = self.retry_policy.async_retrying(self._log_retry)
        result: EmbeddingsResult = await retrying(attempt)
        return call.finish(result, retrying.statistics)

    # -- one HTTP attempt ---------------------------------------------------------------------
    # Every request but a stream's body goes through _exchange / _aexchange: the reply is read whole
    # within the attempt's time limit, wire failures are named for what they are, and the key is
    # scrubbed from the reply before anything reads it. A failure after a 2xx status arrived is a
    # GradientProtocolError (never retried): the reply was generated and may be billed.

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> httpx.Response:
        """One attempt of ``method path`` (``body`` sent as JSON) through the pooled client: the
        whole reply, scrubbed of the key, in at most ``timeout`` seconds (default: the connection's
        read timeout). Not retried and not checked: :mod:`airflow_gradient.replies` reads it."""
        client = self.get_conn()
        return self._exchange(client, self._build(client, method, path, body, timeout), timeout)

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
        return await self._aexchange(client, self._build(client, method, path, body, timeout), timeout, observer)

    def _attempt_limit(self, timeout: float | None) -> float:
        return timeout if timeout is not None else self.settings.read_timeout

    def _exchange(self, client: httpx.Client, request: httpx.Request, timeout: float | None) -> httpx.Response:
        """Send ``request`` and read its whole reply, in at most ``timeout`` seconds (default: the
        connection's read timeout). httpx's own timeouts bound each read; the total is checked as
        each piece of the body arrives, so a reply trickled a byte at a time ends at the limit
        (give or take one read)."""
        attempt = _Attempt(self._attempt_limit(timeout))
        with self._transport_errors(attempt):
            attempt.response = client.send(request, stream=True)
        return self._read_body(attempt)

    def _read_body(self, attempt: _Attempt) -> httpx.Response:
        response = attempt.reply
        try:
            with self._transport_errors(attempt):
                for chunk in response.iter_bytes():
                    attempt.chunks.append(chunk)
                    if attempt.late() and not attempt.complete():
                        raise TimeoutError("the attempt's time limit passed")
        finally:
            response.close()
        return self._scrubbed(attempt)

    async def _aexchange(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        timeout: float | None,
        observer: CallObserver | None = None,
    ) -> httpx.Response:
        """Async :meth:`_exchange`: the whole attempt runs under one deadline; ``observer`` hears
        of the reply's status as soon as it arrives."""
        attempt = await self._asend_head(client, request, timeout)
        if observer is not None:
            observer.on_reply(attempt.reply.status_code, attempt.reply.headers)
        return await self._aread_body(attempt)

    async def _asend_head(self, client: httpx.AsyncClient, request: httpx.Request, timeout: float | None) -> _Attempt:
        attempt = _Attempt(self._attempt_limit(timeout))
        with self._transport_errors(attempt):
            async with asyncio.timeout(attempt.remaining()):
                attempt.response = await client.send(request, stream=True)
        return attempt

    async def _aread_body(self, attempt: _Attempt) -> httpx.Response:
        response = attempt.reply
        try:
            with self._transport_errors(attempt):
                async with asyncio.timeout(attempt.remaining()):
                    async for chunk in response.aiter_bytes():
                        attempt.chunks.append(chunk)
        finally:
            await response.aclose()
        return self._scrubbed(attempt)

    def _scrubbed(self, attempt: _Attempt) -> httpx.Response:
        return scrubbed_response(attempt.reply, b"".join(attempt.chunks), self.settings.api_key)

    def _scrub(self, text: str) -> str:
        return scrub_text(text, self.settings.api_key)

    # -- streaming ----------------------------------------------------------------------------
    # Only the opening is retried (an error status or a failed connection): once a 200 has begun,
    # the request may be billed, so a broken stream raises instead of asking again.

    def stream_response(
        self, request: ResponseRequest | dict[str, Any], *, timeout: float | None = None
    ) -> Iterator[StreamEvent]:
        """Send ``request`` with ``stream: true`` and yield its events as they arrive.

        The last event is ``kind="completed"``, its ``response`` the final :class:`ResponseResult`.
        A stream that breaks off, ends without a terminal event or carries an ``error`` frame
        raises :class:`GradientProtocolError`.
        """
        body = self._stream_body(request)
        retrying = self.retry_policy.retrying(self._log_retry)
        started = time.monotonic()
        response = retrying(self._open_stream, body, timeout)
        decoder = _decoder_for(response)
        try:
            with _broken_stream(decoder, self.settings.api_key):
                if replies.is_sse(response):
                    for sse in EventSource(response).iter_sse():
                        yield from decoder.feed(sse.event, self._scrub(sse.data))
                else:
                    yield from decoder.feed_whole(self._scrub(response.read().decode("utf-8", "replace")))
        finally:
            response.close()
        yield _completed(decoder, response, retrying.statistics, started)

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
        response: httpx.Response = await retrying(self._aopen_stream, body, timeout, observer)
        decoder = _decoder_for(response)
        try:
            with _broken_stream(decoder, self.settings.api_key):
                if replies.is_sse(response):
                    async for sse in EventSource(response).aiter_sse():
                        for event in decoder.feed(sse.event, self._scrub(sse.data)):
                            yield event
                else:
                    for event in decoder.feed_whole(self._scrub((await response.aread()).decode("utf-8", "replace"))):
                        yield event
        finally:
            await response.aclose()
        yield _completed(decoder, response, retrying.statistics, started)

    def _stream_body(self, request: ResponseRequest | dict[str, Any]) -> dict[str, Any]:
        body = self.prepare_request(request).to_wire()
        body["stream"] = True
        # Without it the chunk framing never says how many tokens were used.
        body.setdefault("stream_options", {"include_usage": True})
        return body

    def _open_stream(self, body: dict[str, Any], timeout: float | None) -> httpx.Response:
        client = self.get_conn()
        attempt = _Attempt(self._attempt_limit(timeout))
        with self._transport_errors(attempt):
            attempt.response = client.send(self._build(client, "POST", "/responses", body, timeout), stream=True)
        # An error body, or content that is not a stream, is small: read whole like any reply.
        response = self._read_body(attempt) if replies.must_read_before_use(attempt.reply) else attempt.reply
        return replies.check_stream_open(response, self.gradient_conn_id)

    async def _aopen_stream(
        self, body: dict[str, Any], timeout: float | None, observer: CallObserver | None
    ) -> httpx.Response:
        if observer is not None:
            await observer.before_send()
        client = self.get_async_conn()
        attempt = await self._asend_head(client, self._build(client, "POST", "/responses", body, timeout), timeout)
        response = attempt.reply
        if replies.must_read_before_use(response):
            response = await self._aread_body(attempt)
        if observer is not None:
            observer.on_reply(response.status_code, response.headers)
        return replies.check_stream_open(response, self.gradient_conn_id)

    @staticmethod
    def _build(
        client: httpx.Client | httpx.AsyncClient,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout: float | None,
    ) -> httpx.Request:
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        if timeout is not None:
            # Every request of every path is built here: a bad per-call timeout is refused naming it.
            timeout = arguments.positive_number("timeout", timeout)
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT_S))
        return client.build_request(method, path, **kwargs)

    @contextlib.contextmanager
    def _transport_errors(self, attempt: _Attempt | None = None) -> Iterator[None]:
        """The exceptions of httpx and of the aiohttp transport become ours, named for what
        happened (:mod:`airflow_gradient.transport_errors`); the URL is kept, the key scrubbed.

        With ``attempt``: once a 2xx status has arrived, any failure to get the rest of the reply is
        a :class:`GradientProtocolError`, not retried, since the reply was generated and may be
        billed.
        """
        try:
            yield
        except TRANSPORT_EXCEPTIONS as exc:
            raise self._transport_error(exc, attempt) from None

    def _transport_error(self, exc: BaseException, attempt: _Attempt | None) -> GradientError:
        event = what_happened(exc)
        url = self.settings.base_url
        shown = origin(exc)
        detail = self._scrub(f"{type(shown).__name__}: {shown}" if str(shown) else type(shown).__name__)
        response = attempt.response if attempt is not None else None
        limit = attempt.limit if attempt is not None else None
        if response is not None and response.status_code < 400:
            what = (f"not complete within the {limit:g} s time limit of the attempt"
                    if event == "timeout" else f"{DESCRIPTIONS[event]} ({detail})")
            expected = response.headers.get("content-length")
            return GradientProtocolError(
                f"HTTP {response.status_code} reply broke off after {response.num_bytes_downloaded}"
                f"{f' of {expected}' if expected else ''} bytes: {what}. The reply was generated and may "
                "be billed, so it is not sent again",
                status=response.status_code,
                request_id=request_id_of(response.headers),
            )
        if event == "timeout":
            within = f" within {limit:g} s" if limit is not None else ""
            return GradientTimeoutError(f"no complete reply from {url}{within} ({detail})")
        if event == "not_http":
            return GradientProtocolError(f"{DESCRIPTIONS[event]} at {url}: {detail}")
        if event in ("reset", "closed"):
            return GradientConnectionError(f"{DESCRIPTIONS[event]} at {url} before a reply ({detail})")
        return GradientConnectionError(f"cannot reach {url}: {detail}")

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
            return False, str(exc)
        except Exception as exc:  # the UI wants a reason, not a traceback
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Connected to {self.settings.base_url}: {count} models available"


def _decoder_for(response: httpx.Response) -> StreamDecoder:
    return StreamDecoder(status=response.status_code, request_id=request_id_of(response.headers))


@contextlib.contextmanager
def _broken_stream(decoder: StreamDecoder, secret: str) -> Iterator[None]:
    """A connection lost after a 200 began is a protocol error: never retried, maybe billed."""
    try:
        yield
    except TRANSPORT_EXCEPTIONS as exc:
        raise GradientProtocolError(
            f"stream broke off after {decoder.frames} frames: {DESCRIPTIONS[what_happened(exc)]} "
            f"({type(exc).__name__}: {scrub_text(str(exc), secret)})",
            status=decoder.status,
            request_id=decoder.request_id,
        ) from None


@dataclass
class _Attempt:
    """One HTTP attempt under way: its time limit, the reply once its status arrived, the body so far."""

    limit: float
    started: float = field(default_factory=time.monotonic)
    response: httpx.Response | None = None
    chunks: list[bytes] = field(default_factory=list)

    def remaining(self) -> float:
        return max(self.limit - (time.monotonic() - self.started), 0.0)

    def late(self) -> bool:
        return self.remaining() <= 0.0

    @property
    def reply(self) -> httpx.Response:
        """The reply, once its status line and headers arrived."""
        if self.response is None:
            raise RuntimeError("no reply has arrived yet")
        return self.response

    def complete(self) -> bool:
        """Whether the body is whole by its ``Content-Length`` (false when it has none)."""
        expected = self.reply.headers.get("content-length", "")
        return expected.isdigit() and self.reply.num_bytes_downloaded >= int(expected)


def _completed(
    decoder: StreamDecoder, response: httpx.Response, statistics: dict[str, Any], started: float
) -> StreamEvent:
    result = decoder.finish()
    result._call = CallInfo(request_id=decoder.request_id, rate_limit_headers=rate_limit_headers(response.headers))
    return StreamEvent(kind="completed", response=_stamp(result, statistics, started))


def _stamp(result: ResponseResult, statistics: dict[str, Any], started: float) -> ResponseResult:
    result._call.attempts = int(statistics.get("attempt_number", 1))
    result._call.latency_s = time.monotonic() - started
    return result


@cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client: building one loads the CA bundle (~40 ms), and the batch
    engine opens a client per few workers."""
    return httpx.create_ssl_context()


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    mask_secret(secret)
