"""The one pace value (how fast requests and tokens may go, where that comes from, what holds them
back) and the :class:`RateLimiter` protocol, whose ``pacing()`` answers with it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

SAFETY = 0.98
"""Requests and tokens go at this fraction of the ceiling."""
TOKEN_BURST = 1 - SAFETY
"""Tokens that may go at once, as a fraction of a minute's tokens (a sliding 60 s window on the
server sees at most ``TOKEN_BURST + SAFETY`` of the limit)."""


@dataclass(frozen=True)
class Pace:
    """A pace: requests and tokens per minute (None: no limit of that kind) and where they come
    from: ``configured``, ``headers``, ``probing`` (found from 429s) or ``unpaced``, joined with
    ``/`` when requests and tokens differ.

    ``PaceState.ceiling`` (:mod:`~airflow_gradient.batch.in_task.pacing.rules`) gives the limits
    themselves; ``PaceState.pace`` the pace sent at (:data:`SAFETY` of them) with what else holds
    requests back. Times are on the clock of whoever made it (``now``): local monotonic time in
    memory, Redis time when shared.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    source: str = "unpaced"
    now: float = 0.0
    pause_until: float = 0.0
    """No request before this time: a pause after 429s, or a spent request budget."""
    token_burst: float = 0.0
    """Tokens that may go at once (:data:`TOKEN_BURST` of a minute's)."""
    request_budget: tuple[float, float] | None = None
    """Requests the account may still send, and when that resets; None: no budget known."""
    budget_since: float = 0.0
    """When the request whose reply told that budget was sent: the requests sent since may be
    missing from it (the server counted them after it answered)."""
    version: int = 0
    """How many times a store changed it (0 in memory)."""

    @property
    def unpaced(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None

    @property
    def paused_s(self) -> float:
        return max(self.pause_until - self.now, 0.0)

    def describe(self) -> str:
        """For progress lines: ``"588 req/min (headers), paused 1.2 s"``."""
        if self.unpaced:
            text = "unpaced"
        else:
            parts = [f"{self.requests_per_minute:.0f} req/min" if self.requests_per_minute else "",
                     f"{self.tokens_per_minute:.0f} tok/min" if self.tokens_per_minute else ""]
            text = ", ".join(p for p in parts if p) + f" ({self.source})"
        return text + (f", paused {self.paused_s:.1f} s" if self.paused_s > 0 else "")

    def as_dict(self) -> dict[str, float | str | None]:
        """The manifest's ``pacing``: the pace per minute, its source, and :meth:`describe`."""
        return {
            "requests_per_minute": round(self.requests_per_minute, 1) if self.requests_per_minute else None,
            "tokens_per_minute": round(self.tokens_per_minute, 1) if self.tokens_per_minute else None,
            "source": self.source,
            "description": self.describe(),
        }


@runtime_checkable
class RateLimiter(Protocol):
    """What the engine needs of a limiter. Calls come from one event loop."""

    async def acquire(self, tokens: int) -> None:
        """Wait until one request estimated at ``tokens`` tokens may be sent."""

    def on_reply(self, status: int | None, headers: Mapping[str, str], tokens: int) -> bool | None:
        """An acquired request ended: ``status`` is None when no reply came (timeout, drop).

        True when that reply was a 429 the pacer drew on itself (probing for a limit the server does
        not announce): the engine does not count it against the item's ``max_retries``.
        """

    def on_usage(self, estimated: int, actual: int) -> None:
        """A reply reported ``actual`` tokens for a request estimated at ``estimated``."""

    def pacing(self) -> Pace:
        """The current pace, for humans."""
