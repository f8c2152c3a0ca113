"""A small ``POST /v1/responses`` server written from the API documents alone, for user scenarios.

It is deliberately not the bundled emulator (which the team wrote and could share our blind
spots): a plain aiohttp app on 127.0.0.1 whose every reply is decided by a ``policy`` callable,
given the request's sequence number and the time, and returning the status and headers. Replies
carry the documented ``CreateResponseResponse`` shape (``choices`` form, ``created``, usage with
token details).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

Policy = Callable[[int, float], tuple[int, dict[str, str]]]


@dataclass
class Seen:
    """What the server received: arrival times (monotonic) and statuses it answered."""

    arrivals: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.arrivals)


def _reply(n: int, model: str) -> dict[str, object]:
    return {
        "id": f"response-{n}",
        "created": int(time.time()),
        "model": model,
        "object": "response",
        "status": "completed",
        "usage": {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
                  "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0}, "total_tokens": 10},
        "choices": [{"finish_reason": "stop", "index": 0,
                     "message": {"role": "assistant", "content": f"reply {n}"}}],
    }


@contextmanager
def scenario_server(policy: Policy, *, latency: float = 0.0) -> Iterator[tuple[str, Seen]]:
    """Serve ``policy`` on 127.0.0.1; yields the base URL (``.../v1``) and what the server saw."""
    seen = Seen()
    lock = threading.Lock()

    async def responses(request: web.Request) -> web.Response:
        body = await request.json()
        with lock:
            n = seen.count
            now = time.monotonic()
            seen.arrivals.append(now)
            status, headers = policy(n, now)
            seen.statuses.append(status)
        if latency:
            await asyncio.sleep(latency)
        if status == 200:
            return web.json_response(_reply(n, body.get("model", "m")), headers=headers)
        error = {"id": "too_many_requests" if status == 429 else "server_error", "message": f"HTTP {status}",
                 "request_id": f"req-{n}"}
        return web.json_response(error, status=status, headers=headers)

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def quota_headers(limit: int, remaining: int, reset_in_s: float = 60.0) -> dict[str, str]:
    """DigitalOcean's request quota headers (reset as unix epoch seconds)."""
    return {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": str(int(time.time() + reset_in_s))}
