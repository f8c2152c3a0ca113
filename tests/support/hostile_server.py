"""A small hostile HTTP server for tests: raw bytes on a socket, written from the API documents alone.

The emulator speaks correct HTTP; this server does what a broken proxy or a hostile peer does: a
200 whose body stops half way, a reply that is not HTTP, a body trickled a byte a second, a reset
connection, an echo of the ``Authorization`` header. Each request is answered by the behaviour its
prompt (the ``input`` of the JSON body) names, so one batch can hold good and hostile items.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawRequest:
    """One request as it arrived: the request line, headers (lower-case names) and JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        value = self.body.get("input")
        return value if isinstance(value, str) else json.dumps(value)


Behaviour = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]


def reply_body(prompt: str, text: str | None = None, **fields: Any) -> dict[str, Any]:
    """A documented ``/v1/responses`` reply for ``prompt``; ``fields`` replace top-level fields."""
    body: dict[str, Any] = {
        "id": f"resp_{abs(hash(prompt)) % 10**8}",
        "object": "response",
        "created_at": 1_700_000_000,
        "model": "test-model",
        "status": "completed",
        "output": [{"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": text if text is not None else f"ok: {prompt}"}]}],
        "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
    }
    body.update(fields)
    return body


def http_bytes(status: int, body: bytes, content_type: str = "application/json", *,
               content_length: int | None = None, extra_headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 reply; ``content_length`` may promise more bytes than ``body`` holds."""
    headers = {"content-type": content_type, "content-length": str(len(body) if content_length is None
                                                                    else content_length),
               "connection": "close", **(extra_headers or {})}
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body


async def send_json(writer: asyncio.StreamWriter, status: int, payload: Any, **kwargs: Any) -> None:
    """Write ``payload`` as a JSON reply (``ensure_ascii`` keeps lone surrogates as ``\\udXXX``)."""
    writer.write(http_bytes(status, json.dumps(payload).encode(), **kwargs))
    await writer.drain()


async def good(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    await send_json(writer, 200, reply_body(request.prompt))


@dataclass
class HostileServer:
    """Serves on 127.0.0.1 in a background thread; ``behaviours`` maps a prompt prefix to what the
    server does for it (the longest matching prefix wins; others get a good reply)."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())

    def start(self) -> HostileServer:
        self._thread.start()
        self._ready.wait()
        return self

    def stop(self) -> None:
        def cancel_all() -> None:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.stop()

        self._loop.call_soon_threadsafe(cancel_all)
        self._thread.join(timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            self.requests[request.prompt] += 1
            matches = [prefix for prefix in self.behaviours if request.prompt.startswith(prefix)]
            behaviour = self.behaviours[max(matches, key=len)] if matches else good
            await behaviour(request, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _ = line.split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if ":" in h)}
    raw = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawRequest(method, path, headers, json.loads(raw) if raw else {})


@contextmanager
def hostile_server(behaviours: dict[str, Behaviour]) -> Iterator[HostileServer]:
    server = HostileServer(behaviours).start()
    try:
        yield server
    finally:
        server.stop()
