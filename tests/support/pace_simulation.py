"""A fake-clock simulation of :class:`PaceState` against a server that enforces a sliding-window
limit: no sockets, no sleeps, the same run every time (seeded)."""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_gradient.batch.in_task.pacing.rules import PaceState

WALL = 1_800_000_000.0


@dataclass
class Simulation:
    """``limit(t)`` requests per ``window`` seconds, ``concurrency`` requests in flight at most,
    each answered after ``latency``; a share ``isolated`` of requests is refused at random."""

    limit: Callable[[float], float]
    window: float = 1.0
    concurrency: int = 16
    latency: float = 0.05
    retry_after: bool = False
    quota_headers: bool = False
    isolated: float = 0.0
    step: float = 0.005  # only when nothing is due
    timer_lateness: float | tuple[float, float] = 0.0
    """A send goes up to this late after its time (a busy event loop), or late by a time in this range."""
    late_share: float = 1.0
    """The share of wake-ups that are late at all (the others are on time)."""
    finite: bool = False
    """Send only ``items`` requests (a refused one is sent again), as a batch does; else the
    requests never run out."""
    seed: int = 1
    state: PaceState = field(default_factory=PaceState)
    log: list[tuple[float, int]] = field(default_factory=list)

    def run(self, duration: float, items: int | None = None, start: float = 0.0) -> Simulation:
        """Run until ``duration`` (or ``items`` done); the clock starts at ``start`` (a monotonic
        clock is seldom at 0)."""
        rng = random.Random(self.seed)
        admitted: deque[float] = deque()
        replies: list[tuple[float, int, int, dict[str, str]]] = []
        now, sequence, done = start, 0, 0
        duration += start
        while now < duration and (items is None or done < items):
            while replies and replies[0][0] <= now:
                _, _, status, headers = heapq.heappop(replies)
                done += status == 200
                self.state.on_reply(status, headers, 1, now=now, now_wall=WALL + now, rand=rng.random())
            while self.state.in_flight_requests < self.concurrency and (wait := self.state.wait_s(1, now)) <= 0 \
                    and not (self.finite and items is not None and done + self.state.in_flight_requests >= items):
                self.state.on_send(1, now)
                status, headers = self._serve(now, admitted, rng)
                self.log.append((now, status))
                sequence += 1
                heapq.heappush(replies, (now + self.latency, sequence, status, headers))
            # Straight to the next event: a reply, or the moment the next request may go.
            upcoming = [replies[0][0]] if replies else []
            if self.state.in_flight_requests < self.concurrency:
                upcoming.append(now + wait + self._lateness(rng))
            now = max(min(upcoming, default=now + self.step), now + 1e-6)
        return self

    def _lateness(self, rng: random.Random) -> float:
        low, high = self.timer_lateness if isinstance(self.timer_lateness, tuple) else (0.0, self.timer_lateness)
        if not high or (self.late_share < 1 and rng.random() >= self.late_share):
            return 0.0
        return rng.uniform(low, high)

    def _serve(self, now: float, admitted: deque[float], rng: random.Random) -> tuple[int, dict[str, str]]:
        limit = int(self.limit(now))
        while admitted and admitted[0] <= now - self.window:
            admitted.popleft()
        headers: dict[str, str] = {}
        if rng.random() < self.isolated:
            status = 429
        elif len(admitted) < limit:
            admitted.append(now)
            status = 200
        else:
            status = 429
            if self.retry_after:
                headers["retry-after"] = str(max(1, round(admitted[len(admitted) - limit] + self.window - now + 0.5)))
        if self.quota_headers:
            reset = admitted[0] + self.window if admitted else now
            # As DigitalOcean (and the emulator) send them: the limit per minute, what is left of the window.
            headers.update({"x-ratelimit-limit-requests": f"{limit * 60 / self.window:g}",
                            "x-ratelimit-remaining-requests": str(max(limit - len(admitted), 0)),
                            "x-ratelimit-reset-requests": f"{WALL + reset:.3f}"})
        return status, headers

    def admitted_per_window(self, start: float, end: float) -> float:
        """Requests admitted per ``window`` seconds between ``start`` and ``end``."""
        ok = sum(1 for t, status in self.log if status == 200 and start <= t < end)
        return ok / (end - start) * self.window

    def most_admitted_in(self, span: float) -> int:
        """The most requests sent within any ``span`` seconds."""
        sent = [t for t, _ in self.log]
        return max((sum(1 for u in sent[i:] if u < t + span) for i, t in enumerate(sent)), default=0)

    def refused_share(self, start: float) -> float:
        after = [status for t, status in self.log if t >= start]
        return after.count(429) / max(len(after), 1)
