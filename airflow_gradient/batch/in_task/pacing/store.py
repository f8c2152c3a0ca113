"""The shared pace of one account in Redis: where it lives, how a slot is reserved, how it changes.

Two keys per account, in one Redis Cluster hash slot (the ``{digest}`` tag)::

    gradient:pace:{digest}        hash: "state" (the pacing rules' PaceState, JSON), and what the
                                  reservation script reads from it: "rpm", "tpm" (the pace, per
                                  minute; empty when unknown), "tok_burst", "pause_until" (Redis
                                  time, s; the pause or the spent budget), "source", "version",
                                  "in_flight" (each live task's requests in flight, JSON),
                                  "cap", "cap_reset", "cap_at", "cap_since": the request budget
                                  the rules derived (remaining minus in flight), when it resets,
                                  when it was derived, when the request that told it was sent
    gradient:pace:{digest}:gcra   hash: "req", "tok": the theoretical arrival times (GCRA) of the
                                  next request and token, Redis time; "budget", "budget_reset",
                                  "budget_at": the request budget as reservations spend it

``digest`` is :func:`url_and_key_digest`, ``sha256(base_url + "\\0" + key)[:16]``: one account,
never the key itself. Both keys expire :data:`STATE_TTL_S` after their last use.

- :meth:`PaceStore.reserve` is the hot path: one Lua script, one round trip. It reserves ``n``
  request slots and ``m`` tokens at the stored pace (GCRA: no read-modify-write race, no burst)
  and answers when the first slot begins, in Redis time; the caller sleeps until then. During a
  pause, or when the next slot is further ahead than :data:`RESERVE_HORIZON_S`, it reserves
  nothing and says when to ask again: slots are never queued far ahead at a pace that may change.
  It never grants more request slots than the account's budget (``x-ratelimit-remaining-requests``
  minus in flight, the rules' :meth:`~airflow_gradient.batch.in_task.pacing.rules.PaceState.request_budget`),
  spent slot by slot between updates; with none left it pauses until the quota resets.
- :meth:`PaceStore.update` applies the pacing rules (Python, :mod:`~airflow_gradient.batch.in_task.pacing.rules`)
  to the stored state under optimistic concurrency (``WATCH``/``MULTI``/``EXEC``, retried when
  another worker wrote first), and stores the pace the rules derive, for the script to read.
  The GCRA times live in their own key so that reservations never void an update's ``WATCH``.

Time is Redis's ``TIME`` everywhere: workers' clocks may disagree, Redis's is one clock for all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_gradient.batch.in_task.pacing.pace import Pace
from airflow_gradient.batch.in_task.pacing.rules import PaceState
from airflow_gradient.http.wait_hints import PLAIN_PREFIX, RATE_LIMIT_HEADER_PREFIX, header_number

if TYPE_CHECKING:
    import redis.asyncio

STATE_TTL_S = 900.0
UPDATE_TRIES = 20
# A task's count of requests in flight stops counting this long after it last reported it.
IN_FLIGHT_TTL_S = 30.0
# Requests held by a spent budget go this long after the reset (the rules' arrival_margin_s; 10 ms
# in one task's memory). Shared, sends are less regular: a task sends a slot up to the limiter's
# LATE_S late, next to another task's slot on time, so that more margin keeps their arrivals out of
# a full window. Measured (bench common_ai, a 1 s window): 10 ms here drew 0-6 x 429 in four
# runs, 50 ms 1-3 in three.
SHARED_ARRIVAL_MARGIN_S = 0.05
# Slots are reserved at most this far ahead, so that a new pace (a cut, a rise) applies within it.
RESERVE_HORIZON_S = 0.25
KEY_PREFIX = "gradient:pace:"
_REMAINING_REQUESTS = f"{RATE_LIMIT_HEADER_PREFIX}remaining-requests"
_PLAIN_REMAINING = f"{PLAIN_PREFIX}remaining"

# KEYS: state, gcra. ARGV: requests, tokens, ttl_ms. Returns strings (Lua numbers become integers).
RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'rpm', 'tpm', 'pause_until', 'source', 'version', 'tok_burst')
local rpm, tpm, pause = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]) or 0
local burst = tonumber(s[6]) or 0
local n, m, horizon = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local req_at, tok_at, reserved = now, now, 0
-- PaceState.request_budget: the requests the account may still send before the quota resets. An
-- update writes it (cap, cap_reset, cap_at); reservations spend it, and a newer one only lowers it
-- before the reset (the slots reserved since the reply it was read from are not counted in it).
local c = redis.call('HMGET', KEYS[1], 'cap', 'cap_reset', 'cap_at', 'cap_since')
local cap, cap_reset, cap_at = tonumber(c[1]), tonumber(c[2]) or 0, c[3] or ''
local b = redis.call('HMGET', KEYS[2], 'budget', 'budget_reset', 'budget_at', 'req')
local budget, budget_reset = tonumber(b[1]), tonumber(b[2]) or 0
if budget and budget_reset <= now then budget = nil end
if cap and cap_reset > now and cap_at ~= (b[3] or '') then
  -- The slots reserved since the request that told it was sent (GCRA: one per 60 / rpm up to the
  -- next slot) may be in no count it was made of: the server counted them after it answered.
  if rpm and rpm > 0 then
    cap = cap - math.max(math.ceil(((tonumber(b[4]) or 0) - (tonumber(c[4]) or now)) * rpm / 60), 0)
  end
  if budget then budget = math.min(budget, cap) else budget = cap end
  budget_reset = cap_reset
  redis.call('HSET', KEYS[2], 'budget_at', cap_at, 'budget', string.format('%.6f', budget),
             'budget_reset', string.format('%.6f', budget_reset))
end
if budget and n > 0 then
  n = math.min(n, math.floor(budget))
  if n < 1 then
    n = 0
    pause = math.max(pause, budget_reset)
  end
end
if pause <= now then
  local g = redis.call('HMGET', KEYS[2], 'req', 'tok')
  local next_req, next_tok = tonumber(g[1]) or 0, tonumber(g[2]) or 0
  local per_token = 0
  if rpm and rpm > 0 and n > 0 then req_at = math.max(next_req, now) end
  if tpm and tpm > 0 and m > 0 then
    -- PaceState.wait_s/on_send: a bucket of `burst` tokens, a request larger than it as a full one
    per_token = 60 / tpm
    tok_at = now + math.max(math.max(next_tok - now, 0) - (burst - math.min(m, burst)) * per_token, 0)
  end
  -- Never further ahead than the horizon: a change of pace reaches every slot not yet reserved.
  if math.max(req_at, tok_at) - now <= horizon then
    reserved = 1
    if budget then
      redis.call('HSET', KEYS[2], 'budget', string.format('%.6f', budget - n))
    end
    if rpm and rpm > 0 and n > 0 then
      redis.call('HSET', KEYS[2], 'req', string.format('%.6f', req_at + n * 60 / rpm))
    end
    if per_token > 0 then
      redis.call('HSET', KEYS[2], 'tok', string.format('%.6f', math.max(next_tok, tok_at) + m * per_token))
    end
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
-- PEXPIRE voids an update's WATCH of the state key: only when its time to live runs low (an
-- update sets it anyway). Every reservation did, and on a Redis 100 ms away no update got through.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) / 2 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if reserved == 0 then n = 0 end
return {string.format('%.6f', now), string.format('%.6f', req_at), string.format('%.6f', tok_at),
        s[1] or '', s[2] or '', string.format('%.6f', pause), s[4] or '', s[5] or '0', reserved, n}
"""


def url_and_key_digest(base_url: str, api_key: str) -> str:
    """The account's name in Redis: a digest of its base URL and model access key, never the key."""
    return hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Reservation:
    """What :meth:`PaceStore.reserve` reserved: ``requests`` slots from ``requests_at`` and
    ``tokens`` from ``tokens_at`` (Redis time), at the pace in ``pace``. Nothing (``reserved``
    false) while paused, or when the first slot would begin beyond the horizon. ``requests`` may be
    fewer than asked for: never more than the account's request budget (remaining minus in flight);
    with none left, ``pace.pause_until`` is when the quota resets."""

    pace: Pace
    requests: int
    requests_at: float
    tokens: float
    tokens_at: float
    reserved: bool

    @property
    def starts_at(self) -> float:
        """When the first slot begins (or would, when nothing was reserved), Redis time."""
        return max(self.requests_at, self.tokens_at, self.pace.pause_until)


@dataclass
class Lease:
    """Reserved slots a task has not handed out yet, on its local monotonic clock."""

    # Slots hold when the pace changes: they were reserved at the pace of their time and span at
    # most LEASE_S, and a probed pace changes at every flush. A pause is checked before each take.
    requests: int = 0
    request_at: float = 0.0
    request_step: float = 0.0
    tokens: float = 0.0
    token_at: float = 0.0
    token_step: float = 0.0

    def take(self, tokens: float, pace: Pace) -> float | None:
        """The local time of the next slot for a request of ``tokens``; None when more must be reserved."""
        if pace.requests_per_minute and self.requests < 1:
            return None
        if pace.tokens_per_minute and self.tokens < tokens:
            return None
        at = 0.0
        if pace.requests_per_minute:
            at, self.request_at, self.requests = self.request_at, self.request_at + self.request_step, self.requests - 1
        if pace.tokens_per_minute:
            at = max(at, self.token_at)
            self.token_at += tokens * self.token_step
            self.tokens -= tokens
        return at


# The rules, as the store calls them: (stored state or None, Redis time) -> (new state, its pace).
Transition = Callable[[dict[str, Any] | None, float, "InFlight"], tuple[dict[str, Any], Pace]]


@dataclass(frozen=True)
class InFlight:
    """Requests (and their estimated tokens) in flight: of one task, or of all live ones."""

    requests: float = 0.0
    tokens: float = 0.0


def _per_minute(value: bytes | str) -> float | None:
    """A stored pace field: empty or 0 is no pace."""
    return header_number(value.decode() if isinstance(value, bytes) else value) or None


class PaceStore:
    """One account's shared pace in Redis (see the module docstring).

    :param client: a ``redis.asyncio.Redis`` of the running event loop.
    :param digest: :func:`url_and_key_digest` of the account.
    """

    def __init__(self, client: redis.asyncio.Redis, digest: str, *, ttl_s: float = STATE_TTL_S) -> None:
        self.client = client
        self.key = f"{KEY_PREFIX}{{{digest}}}"
        self.gcra_key = f"{self.key}:gcra"
        self.ttl_ms = int(ttl_s * 1000)
        self._reserve = client.register_script(RESERVE_LUA)

    async def reserve(self, requests: int, tokens: float, horizon_s: float = RESERVE_HORIZON_S) -> Reservation:
        """Reserve ``requests`` slots and ``tokens`` tokens at the stored pace, in one round trip,
        when the first slot begins within ``horizon_s``; else reserve nothing and say when it would."""
        raw = await self._reserve(keys=[self.key, self.gcra_key],
                                  args=[requests, f"{tokens:.3f}", self.ttl_ms, f"{horizon_s:.6f}"])
        now, req_at, tok_at, rpm, tpm, pause, source, version, reserved, granted = (
            v.decode() if isinstance(v, bytes) else v for v in raw
        )
        pace = Pace(_per_minute(rpm), _per_minute(tpm), source, now=float(now), pause_until=float(pause),
                    version=int(version or 0))
        return Reservation(pace, int(granted), float(req_at), tokens, float(tok_at), bool(int(reserved)))

    async def read(self) -> Pace:
        """The stored pace: a reservation of nothing."""
        return (await self.reserve(0, 0)).pace

    async def update(self, transition: Transition, task: str = "", in_flight: InFlight = InFlight()) -> Pace:
        """Apply ``transition`` to the stored state atomically; returns the pace it derived.

        ``task`` reports its ``in_flight`` requests; the transition gets the sum over the tasks that
        reported within :data:`IN_FLIGHT_TTL_S`. A task that died (SIGKILL, a lost worker) stops
        counting then, instead of holding the account's budget for ever.
        """
        from redis.exceptions import WatchError

        async with self.client.pipeline(transaction=True) as pipe:
            for _ in range(UPDATE_TRIES):
                try:
                    await pipe.watch(self.key)
                    raw, stored_version, raw_tasks = await pipe.hmget(self.key, "state", "version", "in_flight")
                    seconds, micros = await pipe.time()
                    now = seconds + micros / 1e6
                    version = int(stored_version or 0) + 1
                    tasks = {name: entry for name, entry in (json.loads(raw_tasks) if raw_tasks else {}).items()
                             if entry[2] >= now - IN_FLIGHT_TTL_S}
                    if task:
                        tasks[task] = [in_flight.requests, in_flight.tokens, now]
                        if not in_flight.requests:
                            del tasks[task]
                    total = InFlight(sum(e[0] for e in tasks.values()), sum(e[1] for e in tasks.values()))
                    state, derived = transition(json.loads(raw) if raw else None, now, total)
                    pipe.multi()
                    pipe.hset(self.key, mapping={
                        "state": json.dumps(state, separators=(",", ":")),
                        "in_flight": json.dumps(tasks, separators=(",", ":")),
                        "rpm": _field(derived.requests_per_minute),
                        "tpm": _field(derived.tokens_per_minute),
                        "tok_burst": f"{derived.token_burst:.3f}",
                        "pause_until": f"{derived.pause_until:.6f}",
                        "source": derived.source,
                        "version": version,
                        **dict(zip(_BUDGET_FIELDS, _budget_fields(derived.request_budget, derived.budget_since, now))),
                    })
                    pipe.pexpire(self.key, self.ttl_ms)
                    await pipe.execute()
                except WatchError:
                    continue
                return dataclasses.replace(derived, now=now, version=version)
        raise WatchError(f"the shared pace of {self.key} changed {UPDATE_TRIES} times while being updated")


_BUDGET_FIELDS = ("cap", "cap_reset", "cap_at", "cap_since")


def _budget_fields(budget: tuple[float, float] | None, since: float, now: float) -> tuple[str, ...]:
    # cap_at tells the script a new budget was derived (it merges each one once).
    if budget is None:
        return ("", "", "", "")
    return f"{budget[0]:.6f}", f"{budget[1]:.6f}", f"{now:.6f}", f"{since:.6f}"


def _field(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


# -- the rules, as the store applies them ----------------------------------------------------------
# Every rule is PaceState's (pacing/rules.py); ``now`` is Redis time, a unix time, so it serves as
# ``now_wall`` too. What is the store's own: how the limits several tasks were told combine.


def _state(stored: dict[str, Any] | None) -> PaceState:
    return PaceState.from_dict(stored) if stored else PaceState()


def joined(stored: dict[str, Any] | None, rpm: float | None, tpm: float | None, now: float,
           in_flight: InFlight) -> tuple[dict[str, Any], Pace]:
    """A task joins with the limits it was told: the lowest told limit wins."""
    state = _with_in_flight(_join(_state(stored), rpm, tpm), in_flight)
    return state.to_dict(), state.pace(now)


def _with_in_flight(state: PaceState, in_flight: InFlight) -> PaceState:
    # The live tasks' own counts, not the sum of every send and reply ever applied: a task that
    # died with requests in flight would hold the budget (remaining minus in flight) for ever.
    state.in_flight_requests = int(in_flight.requests)
    state.in_flight_tokens = in_flight.tokens
    return state


def _join(state: PaceState, rpm: float | None, tpm: float | None) -> PaceState:
    state.arrival_margin_s = SHARED_ARRIVAL_MARGIN_S
    state.configured_rpm = _lowest(state.configured_rpm, rpm)
    state.configured_tpm = _lowest(state.configured_tpm, tpm)
    return state


def _lowest(*values: float | None) -> float | None:
    known = [v for v in values if v]
    return min(known) if known else None


@dataclass
class Event:
    """A send (``status`` unused) or a reply (``status`` None: no reply came), at local time ``at``."""

    sent: bool
    status: int | None
    headers: dict[str, str]
    tokens: float
    at: float
    sent_at: float | None = None
    """A reply: when the oldest of this task's requests then in flight was sent (its own, or earlier)."""


def applied(stored: dict[str, Any] | None, events: list[Event], offset: float, now: float,
            in_flight: InFlight | None = None, limits: tuple[float | None, float | None] = (None, None),
            rand: Callable[[], float] = random.random) -> tuple[dict[str, Any], Pace]:
    # Joined again each time: the state may have expired, or Redis restarted empty, since this task joined.
    state = _join(_state(stored), *limits)
    since: float | None = None
    for event in events:
        # Each event at its own time on Redis's clock (never in Redis's future).
        at = min(event.at + offset, now)
        if event.sent:
            state.on_send(event.tokens, at)
        else:
            state.on_reply(event.status, event.headers, event.tokens, now=at, now_wall=at, rand=rand())
            told_budget = _REMAINING_REQUESTS in event.headers or _PLAIN_REMAINING in event.headers
            if told_budget and event.sent_at is not None:
                since = min(event.sent_at + offset, now)
    if in_flight is not None:
        _with_in_flight(state, in_flight)
    return state.to_dict(), state.pace(now, since)
