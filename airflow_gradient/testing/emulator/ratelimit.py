"""Enforced rate limits: requests and tokens per sliding window (60 s unless told), and the quota headers.

A request costs one request and ``tokens`` tokens, where the caller estimates ``tokens`` as the
request's input tokens plus its ``max_output_tokens`` (or, when unset, the reply's output tokens).
An admitted request counts until ``window`` seconds (60 by default) after it arrived; a rejected
one never counts. A shorter window scales the per-minute limits to it: with a 1 s window,
``rpm=300`` admits 5 requests in any second, as a server enforcing a per-second rate does. A request
costing more tokens than ``tpm_limit`` is never admitted, as on the real service.

Headers follow DigitalOcean's names (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
plus ``-tokens-per-minute`` aliases); ``reset`` is the unix time, in seconds, at which the oldest
request in the window leaves it. The ``ratelimit`` names (``quota_header_names``) send only
``ratelimit-{limit,remaining,reset}``, of requests per window, as the API specification declares.
Without a configured limit a large nominal one is reported, so clients that pace themselves from
the headers never slow down for nothing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 60.0
NOMINAL_REQUEST_LIMIT = 1_000_000
NOMINAL_TOKEN_LIMIT = 1_000_000_000


@dataclass(frozen=True)
class Verdict:
    """The limiter's answer: admitted or not, and how long to wait when not."""

    admitted: bool
    retry_after: float | None = None

    @property
    def retry_after_header(self) -> str | None:
        """``Retry-After`` as whole seconds, rounded up (never 0: the window has not moved yet)."""
        return None if self.retry_after is None else str(max(1, math.ceil(self.retry_after)))


class SlidingWindow:
    """Admitted requests of the last 60 s, as ``(unix time, tokens)``, and their token total.
    Not thread-safe: the emulator's state calls it under its lock."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, int]] = deque()
        # The sum of the entries' tokens, kept as they come and go: no request sums the window.
        self._tokens_used = 0

    def clear(self) -> None:
        self._entries.clear()
        self._tokens_used = 0

    def _expire(self, now: float, window: float) -> None:
        while self._entries and self._entries[0][0] + window <= now:
            self._tokens_used -= self._entries.popleft()[1]

    def admit(self, tokens: int, now: float, rpm: int | None, tpm: int | None, window: float = WINDOW_S) -> Verdict:
        """Count the request if both limits allow it, else say when they will."""
        self._expire(now, window)
        rpm = _scaled(rpm, window) if rpm is not None else None
        tpm = _scaled(tpm, window) if tpm is not None else None
        waits = [w for w in (self._request_wait(now, rpm, window), self._token_wait(tokens, now, tpm, window))
                 if w is not None]
        if waits:
            return Verdict(admitted=False, retry_after=max(waits))
        self._entries.append((now, tokens))
        self._tokens_used += tokens
        return Verdict(admitted=True)

    def _request_wait(self, now: float, rpm: int | None, window: float) -> float | None:
        if rpm is None or len(self._entries) < rpm:
            return None
        # One slot frees when the entry that puts us at the limit leaves the window.
        return self._entries[len(self._entries) - rpm][0] + window - now

    def _token_wait(self, tokens: int, now: float, tpm: int | None, window: float) -> float | None:
        if tpm is None:
            return None
        if tokens > tpm:
            return window
        used = self._tokens_used
        if used + tokens <= tpm:
            return None
        # Room appears when enough of the oldest entries have left the window (refusals only).
        for when, cost in self._entries:
            used -= cost
            if used + tokens <= tpm:
                return when + window - now
        return window

    def headers(self, now: float, rpm: int | None, tpm: int | None, window: float = WINDOW_S) -> dict[str, str]:
        """The quota headers as they stand at ``now``: limits per minute, remaining in the window."""
        self._expire(now, window)
        reset = self._entries[0][0] + window if self._entries else now
        used_tokens = self._tokens_used
        request_limit = rpm or NOMINAL_REQUEST_LIMIT
        token_limit = tpm or NOMINAL_TOKEN_LIMIT
        out = {
            "x-ratelimit-limit-requests": str(request_limit),
            "x-ratelimit-remaining-requests": str(max(0, _scaled(request_limit, window) - len(self._entries))),
            "x-ratelimit-reset-requests": f"{reset:.3f}",
        }
        for suffix in ("tokens", "tokens-per-minute"):
            out[f"x-ratelimit-limit-{suffix}"] = str(token_limit)
            out[f"x-ratelimit-remaining-{suffix}"] = str(max(0, _scaled(token_limit, window) - used_tokens))
            out[f"x-ratelimit-reset-{suffix}"] = f"{reset:.3f}"
        return out

    def plain_headers(self, now: float, rpm: int | None, window: float = WINDOW_S) -> dict[str, str]:
        """The un-prefixed headers of DigitalOcean's API specification: the requests of the window
        (not per minute), what is left of them, and the reset as whole epoch seconds."""
        self._expire(now, window)
        reset = self._entries[0][0] + window if self._entries else now
        limit = _scaled(rpm or NOMINAL_REQUEST_LIMIT, window)
        return {"ratelimit-limit": str(limit), "ratelimit-remaining": str(max(0, limit - len(self._entries))),
                "ratelimit-reset": str(math.ceil(reset))}


def _scaled(per_minute: int, window: float) -> int:
    """A per-minute limit over a window of ``window`` seconds (at least 1)."""
    if window == WINDOW_S:
        return per_minute
    return max(1, math.floor(per_minute * window / WINDOW_S + 1e-9))
