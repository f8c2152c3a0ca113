"""Enforced rate limits: requests and tokens per sliding 60 s window, and the quota headers.

A request costs one request and ``tokens`` tokens, where the caller estimates ``tokens`` as the
request's input tokens plus its ``max_output_tokens`` (or, when unset, the reply's output tokens).
An admitted request counts until 60 s after it arrived; a rejected one never counts. A request
costing more tokens than ``tpm_limit`` is never admitted, as on the real service.

Headers follow DigitalOcean's names (``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
plus ``-tokens-per-minute`` aliases); ``reset`` is the unix time, in seconds, at which the oldest
request in the window leaves it. Without a configured limit a large nominal one is reported, so
clients that pace themselves from the headers never slow down for nothing.
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

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0][0] + WINDOW_S <= now:
            self._tokens_used -= self._entries.popleft()[1]

    def admit(self, tokens: int, now: float, rpm: int | None, tpm: int | None) -> Verdict:
        """Count the request if both limits allow it, else say when they will."""
        self._expire(now)
        waits = [w for w in (self._request_wait(now, rpm), self._token_wait(tokens, now, tpm)) if w is not None]
        if waits:
            return Verdict(admitted=False, retry_after=max(waits))
        self._entries.append((now, tokens))
        self._tokens_used += tokens
        return Verdict(admitted=True)

    def _request_wait(self, now: float, rpm: int | None) -> float | None:
        if rpm is None or len(self._entries) < rpm:
            return None
        # One slot frees when the entry that puts us at the limit leaves the window.
        return self._entries[len(self._entries) - rpm][0] + WINDOW_S - now

    def _token_wait(self, tokens: int, now: float, tpm: int | None) -> float | None:
        if tpm is None:
            return None
        if tokens > tpm:
            return WINDOW_S
        used = self._tokens_used
        if used + tokens <= tpm:
            return None
        # Room appears when enough of the oldest entries have left the window (refusals only).
        for when, cost in self._entries:
            used -= cost
            if used + tokens <= tpm:
                return when + WINDOW_S - now
        return WINDOW_S

    def headers(self, now: float, rpm: int | None, tpm: int | None) -> dict[str, str]:
        """The quota headers as they stand at ``now``."""
        self._expire(now)
        reset = self._entries[0][0] + WINDOW_S if self._entries else now
        used_tokens = self._tokens_used
        request_limit = rpm or NOMINAL_REQUEST_LIMIT
        token_limit = tpm or NOMINAL_TOKEN_LIMIT
        out = {
            "x-ratelimit-limit-requests": str(request_limit),
            "x-ratelimit-remaining-requests": str(max(0, request_limit - len(self._entries))),
            "x-ratelimit-reset-requests": f"{reset:.3f}",
        }
        for suffix in ("tokens", "tokens-per-minute"):
            out[f"x-ratelimit-limit-{suffix}"] = str(token_limit)
            out[f"x-ratelimit-remaining-{suffix}"] = str(max(0, token_limit - used_tokens))
            out[f"x-ratelimit-reset-{suffix}"] = f"{reset:.3f}"
        return out
