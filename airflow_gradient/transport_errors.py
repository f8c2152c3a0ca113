"""What went wrong on the wire, from the exceptions of httpx and of the aiohttp transport.

httpx-aiohttp maps aiohttp's errors onto httpx's coarsely (a reset or a closed connection becomes a
``ConnectTimeout``) and lets some through unmapped (a reply that is not HTTP): the original error is
kept as the cause, so :func:`what_happened` reads the whole chain and names the event itself.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Literal

import httpx

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


def origin(exc: BaseException) -> BaseException:
    """The error to show: aiohttp's own when httpx-aiohttp re-raised it under a misleading name."""
    cause = exc.__cause__
    return cause if aiohttp is not None and isinstance(cause, aiohttp.ClientError) else exc


def what_happened(exc: BaseException) -> WireEvent:
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
