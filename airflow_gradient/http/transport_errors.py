"""What went wrong on the wire, from the exceptions of httpx and of the aiohttp transport.

httpx-aiohttp maps aiohttp's errors onto httpx's coarsely (a reset or a closed connection becomes a
``ConnectTimeout``) and lets some through unmapped (a reply that is not HTTP): the original error is
kept as the cause, so :func:`wire_event_of` reads the whole chain and names the event itself.
:func:`transport_error` turns such an exception into ours, for the attempt it ended
(:mod:`airflow_gradient.http.attempt`).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Literal

import httpx

from airflow_gradient.exceptions import (
    GradientConnectionError,
    GradientError,
    GradientProtocolError,
    GradientTimeoutError,
)
from airflow_gradient.http.errors import request_id_of
from airflow_gradient.http.scrub import scrub_text

try:  # the batch's transport; optional
    import aiohttp
except ImportError:  # pragma: no cover - httpx-aiohttp not installed
    aiohttp = None  # type: ignore[assignment]

WireEvent = Literal["timeout", "reset", "closed", "refused", "not_http", "other"]

DESCRIPTIONS: dict[WireEvent, str] = {
    "timeout": "timed out",
    "reset": "connection reset by the server",
    "closed": "connection closed by the server",
    "refused": "connection refused",
    "not_http": "the server did not answer in HTTP",
    "other": "transport error",
}

# The exceptions an HTTP exchange may end with, whichever transport carried it (TimeoutError: the
# attempt's own time limit). Not OSError: both transports wrap socket errors, and a local file's
# error (a full disk while downloading) is not the server's.
TRANSPORT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.TransportError,
    TimeoutError,
    *((aiohttp.ClientError,) if aiohttp is not None else ()),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _os_event(exc: BaseException) -> WireEvent | None:
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    code = getattr(exc, "errno", None)
    if code in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    if code == errno.ECONNREFUSED:
        return "refused"
    return None


def _aiohttp_event(exc: BaseException) -> WireEvent | None:
    if aiohttp is None or not isinstance(exc, aiohttp.ClientError):
        return None
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "closed"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "closed"  # the body ended before its announced length
    if isinstance(exc, aiohttp.ClientResponseError):
        return "not_http"  # a bad status line or headers: aiohttp raises no status errors here
    return None


def error_to_show(exc: BaseException) -> BaseException:
    """The error to quote: aiohttp's own when httpx-aiohttp re-raised it under a misleading name."""
    cause = exc.__cause__
    return cause if aiohttp is not None and isinstance(cause, aiohttp.ClientError) else exc


def wire_event_of(exc: BaseException) -> WireEvent:
    """The event behind a transport exception of httpx or aiohttp (or their causes)."""
    for link in _chain(exc):
        if (event := _aiohttp_event(link) or _os_event(link)) is not None:
            return event
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc).lower()
        if "disconnected" in text or "peer closed" in text or "incomplete" in text:
            return "closed"
        return "not_http"
    if isinstance(exc, httpx.ConnectError):
        return "refused" if "refused" in str(exc).lower() else "other"
    return "other"


def transport_error(
    exc: BaseException,
    *,
    url: str,
    secret: str | None,
    reply: httpx.Response | None,
    limit: float | None,
    billed: bool = True,
) -> GradientError:
    """Our error for a transport failure of an attempt to ``url`` limited to ``limit`` seconds,
    the key scrubbed from its text. Once a 2xx status has arrived (``reply``), any failure to get
    the rest is a :class:`GradientProtocolError`, not retried: the reply was generated and may be
    billed. Where nothing is ``billed`` (object storage), it is a transport error, retried."""
    event = wire_event_of(exc)
    shown = error_to_show(exc)
    detail = scrub_text(f"{type(shown).__name__}: {shown}" if str(shown) else type(shown).__name__, secret)
    if reply is not None and reply.status_code < 400:
        what = (f"not complete within the {limit:g} s time limit of the attempt"
                if event == "timeout" and limit is not None else f"{DESCRIPTIONS[event]} ({detail})")
        expected = reply.headers.get("content-length")
        broke_off = (f"HTTP {reply.status_code} reply broke off after {reply.num_bytes_downloaded}"
                     f"{f' of {expected}' if expected else ''} bytes: {what}")
        if not billed:
            lost = GradientTimeoutError if event == "timeout" else GradientConnectionError
            return lost(f"{broke_off} (from {url})")
        return GradientProtocolError(
            f"{broke_off}. The reply was generated and may be billed, so it is not sent again",
            status=reply.status_code,
            request_id=request_id_of(reply.headers),
        )
    if event == "timeout":
        within = f" within {limit:g} s" if limit is not None else ""
        return GradientTimeoutError(f"no complete reply from {url}{within} ({detail})")
    if event == "not_http":
        return GradientProtocolError(f"{DESCRIPTIONS[event]} at {url}: {detail}")
    if event in ("reset", "closed"):
        return GradientConnectionError(f"{DESCRIPTIONS[event]} at {url} before a reply ({detail})")
    return GradientConnectionError(f"cannot reach {url}: {detail}")


def broken_stream_error(exc: BaseException, *, frames: int, status: int | None, request_id: str | None,
                        secret: str | None) -> GradientProtocolError:
    """A connection lost after a stream's 200 began: never retried, since it may be billed."""
    return GradientProtocolError(
        f"stream broke off after {frames} frames: {DESCRIPTIONS[wire_event_of(exc)]} "
        f"({type(exc).__name__}: {scrub_text(str(exc), secret)})",
        status=status,
        request_id=request_id,
    )
