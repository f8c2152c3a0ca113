"""ONE HTTP attempt, sync or async: every request of both hooks (JSON calls, stream openings,
presigned uploads and downloads) is sent here.

An attempt sends the request under its time limit (``request_timeout``, else the connection's read
timeout: :meth:`~airflow_gradient.http.settings.GradientSettings.attempt_limit`), reads the whole
body (or hands it to a sink, such as a file), scrubs the key from what came back
(:mod:`airflow_gradient.http.scrub`) and turns a transport failure into our error
(:func:`~airflow_gradient.http.transport_errors.transport_error`). A failure once a 2xx status
has arrived is a :class:`GradientProtocolError`, never retried: the reply was generated and may be
billed. :class:`Attempt` holds everything the sync and async paths share; they differ only in the
calls that wait on the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from httpx_sse import EventSource

from airflow_gradient import arguments
from airflow_gradient.http import replies
from airflow_gradient.http.scrub import scrub_text, scrubbed_response
from airflow_gradient.http.settings import DEFAULT_CONNECT_TIMEOUT_S
from airflow_gradient.http.streams import StreamDecoder
from airflow_gradient.http.transport_errors import TRANSPORT_EXCEPTIONS, broken_stream_error, transport_error
from airflow_gradient.models.events import StreamEvent

Sink = Callable[[bytes], object]


class CallObserver(Protocol):
    """Lets a caller (the batch engine) pace and watch each HTTP attempt of an async call."""

    async def before_send(self) -> None: ...

    def on_reply(self, status: int, headers: httpx.Headers) -> None: ...


def build_request(
    client: httpx.Client | httpx.AsyncClient,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    request_timeout: float | None = None,
    **kwargs: Any,
) -> httpx.Request:
    """A request from ``client`` (its base URL, key and headers); ``body`` is sent as JSON, other
    ``kwargs`` go to ``httpx``. ``request_timeout`` also bounds each read and the connect."""
    if body is not None:
        kwargs["json"] = body
    if request_timeout is not None:
        # Every request of every path is built here: a bad per-call timeout is refused naming it.
        request_timeout = arguments.positive_number("timeout", request_timeout)
        kwargs["timeout"] = httpx.Timeout(request_timeout, connect=min(request_timeout, DEFAULT_CONNECT_TIMEOUT_S))
    return client.build_request(method, url, **kwargs)


@dataclass
class Attempt:
    """One HTTP attempt under way: its time limit, the reply once its status arrived, the body so far.

    ``url`` and ``secret`` are for errors: the place named, the key scrubbed. ``billed``: whether
    a 2xx reply may cost money (false for object storage), so that one cut off is not sent again.
    """

    limit: float
    url: str
    secret: str | None
    billed: bool = True
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

    def scrubbed(self) -> httpx.Response:
        """The reply with the body read so far, the key removed."""
        return scrubbed_response(self.reply, b"".join(self.chunks), self.secret)

    def scrub(self, text: str) -> str:
        return scrub_text(text, self.secret)


    @contextlib.contextmanager
    def transport_errors(self) -> Iterator[None]:
        """The exceptions of httpx and of the aiohttp transport become ours (see the module)."""
        try:
            yield
        except TRANSPORT_EXCEPTIONS as exc:
            raise transport_error(exc, url=self.url, secret=self.secret, reply=self.response,
                                  limit=self.limit, billed=self.billed) from None

    # -- sync: httpx's own timeouts bound each read; the total is checked as each piece of the
    # body arrives, so a reply trickled a byte at a time ends at the limit (give or take one read).

    def send(self, client: httpx.Client, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the reply as soon as its status and headers arrived."""
        with self.transport_errors():
            self.response = client.send(request, stream=True)
        return self.response

    def read_body(self, sink: Sink | None = None) -> httpx.Response:
        """Read the rest of the reply into memory (or into ``sink``, such as a file), then close it."""
        response, keep = self.reply, sink or self.chunks.append
        try:
            with self.transport_errors():
                for chunk in response.iter_bytes():
                    keep(chunk)
                    if self.late() and not self.complete():
                        raise TimeoutError("the attempt's time limit passed")
        finally:
            response.close()
        return self.scrubbed()

    # -- async: the whole attempt runs under one deadline.

    async def asend(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """Async :meth:`send`."""
        with self.transport_errors():
            async with asyncio.timeout(self.remaining()):
                self.response = await client.send(request, stream=True)
        return self.response

    async def aread_body(self, sink: Sink | None = None) -> httpx.Response:
        """Async :meth:`read_body`."""
        response, keep = self.reply, sink or self.chunks.append
        try:
            with self.transport_errors():
                async with asyncio.timeout(self.remaining()):
                    async for chunk in response.aiter_bytes():
                        keep(chunk)
        finally:
            await response.aclose()
        return self.scrubbed()


def exchange(
    client: httpx.Client, request: httpx.Request, attempt: Attempt, sink: Sink | None = None
) -> httpx.Response:
    """Send ``request`` and read its whole reply within ``attempt``'s limit."""
    attempt.send(client, request)
    return attempt.read_body(sink)


async def aexchange(
    client: httpx.AsyncClient,
    request: httpx.Request,
    attempt: Attempt,
    observer: CallObserver | None = None,
    sink: Sink | None = None,
) -> httpx.Response:
    """Async :func:`exchange`; ``observer`` hears of the reply's status as soon as it arrives."""
    response = await attempt.asend(client, request)
    if observer is not None:
        observer.on_reply(response.status_code, response.headers)
    return await attempt.aread_body(sink)


# -- streams: only the opening is an attempt that may be retried (an error status or a failed
# connection); once a 200 has begun, the request may be billed, so a broken stream raises.


def open_stream(client: httpx.Client, request: httpx.Request, attempt: Attempt, conn_id: str) -> httpx.Response:
    """Open a stream: the reply, its body still to read, when it is one; else its error."""
    response = attempt.send(client, request)
    # An error body, or content that is not a stream, is small: read whole like any reply.
    if replies.must_read_before_use(response):
        response = attempt.read_body()
    return replies.check_stream_open(response, conn_id)


async def aopen_stream(
    client: httpx.AsyncClient,
    request: httpx.Request,
    attempt: Attempt,
    conn_id: str,
    observer: CallObserver | None = None,
) -> httpx.Response:
    """Async :func:`open_stream`; ``observer`` hears of the reply's status."""
    response = await attempt.asend(client, request)
    if replies.must_read_before_use(response):
        response = await attempt.aread_body()
    if observer is not None:
        observer.on_reply(response.status_code, response.headers)
    return replies.check_stream_open(response, conn_id)


def stream_events(response: httpx.Response, decoder: StreamDecoder, secret: str | None) -> Iterator[StreamEvent]:
    """The events of an open stream, fed frame by frame to ``decoder`` (the key scrubbed)."""
    try:
        with _broken_stream(decoder, secret):
            if replies.is_sse(response):
                for sse in EventSource(response).iter_sse():
                    yield from decoder.feed(sse.event, scrub_text(sse.data, secret))
            else:
                yield from decoder.feed_whole(scrub_text(response.read().decode("utf-8", "replace"), secret))
    finally:
        response.close()


async def astream_events(
    response: httpx.Response, decoder: StreamDecoder, secret: str | None
) -> AsyncGenerator[StreamEvent, None]:
    """Async :func:`stream_events`."""
    try:
        with _broken_stream(decoder, secret):
            if replies.is_sse(response):
                async for sse in EventSource(response).aiter_sse():
                    for event in decoder.feed(sse.event, scrub_text(sse.data, secret)):
                        yield event
            else:
                text = (await response.aread()).decode("utf-8", "replace")
                for event in decoder.feed_whole(scrub_text(text, secret)):
                    yield event
    finally:
        await response.aclose()


@contextlib.contextmanager
def _broken_stream(decoder: StreamDecoder, secret: str | None) -> Iterator[None]:
    try:
        yield
    except TRANSPORT_EXCEPTIONS as exc:
        raise broken_stream_error(exc, frames=decoder.frames, status=decoder.status,
                                  request_id=decoder.request_id, secret=secret) from None
