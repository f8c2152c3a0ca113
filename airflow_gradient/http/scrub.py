"""Keeping the model access key out of everything that came from the server.

A server or proxy may echo the ``Authorization`` header back: in an error body, a 400's ``param``,
a header, even a 200's text. Every reply the hook reads goes through :func:`scrubbed_response`
before anything looks at it, and every other piece of server text (stream frames, transport error
messages) through :func:`scrub_text`, so the key cannot reach rows, XCom, logs or exception text.
"""

from __future__ import annotations

import httpx

REDACTED = "***"
# A key shorter than this is not a real model access key (test set-ups use "k"): replacing every
# occurrence of it would garble replies for nothing.
MIN_SECRET_CHARS = 8
# Headers describing the body as it came over the wire; the rebuilt reply's body is already
# decoded and may be shorter.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def scrub_text(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if not secret or len(secret) < MIN_SECRET_CHARS or secret not in text:
        return text
    return text.replace(secret, REDACTED)


def scrubbed_response(response: httpx.Response, body: bytes, secret: str | None) -> httpx.Response:
    """A read copy of ``response`` holding ``body`` (its decoded content), ``secret`` removed from
    the body and from every header value."""
    if secret and len(secret) >= MIN_SECRET_CHARS:
        body = body.replace(secret.encode(), REDACTED.encode())
    headers = [(name, scrub_text(value, secret)) for name, value in response.headers.multi_items()
               if name.lower() not in _WIRE_HEADERS]
    try:
        request: httpx.Request | None = response.request
    except RuntimeError:  # a reply built without its request (tests, files)
        request = None
    return httpx.Response(response.status_code, headers=headers, content=body, request=request)
