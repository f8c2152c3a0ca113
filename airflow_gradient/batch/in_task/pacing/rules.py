"""The pacing rules of a batch, as a pure state and its transitions (no IO, no clock, no asyncio).

:class:`PaceState` holds everything the pacer knows; its methods are the transitions. Every method
takes the time explicitly: ``now`` is a clock in seconds that only has to be monotonic and shared by
whoever holds the state (``time.monotonic()`` in one task; a shared clock such as wall time when
several workers keep one state in a store), and ``now_wall`` is unix time, used only to read
epoch and HTTP-date headers. Randomness (the jitter of a pause) comes in as ``rand`` in [0, 1).
The fields are JSON values (scalars, and rule 1's log of send times), so a store can hold the state
(:meth:`PaceState.to_dict`, :meth:`PaceState.from_dict`) and apply the same transitions atomically.

Questions: :meth:`PaceState.ceiling` (the limits now, as a
:class:`~airflow_gradient.batch.in_task.pacing.pace.Pace`), :meth:`PaceState.pace` (the pace sent
at), :meth:`PaceState.wait_s` (how long a request of ``tokens`` must wait now). Transitions:
:meth:`PaceState.on_send` (a request leaves, after ``wait_s`` returned 0),
:meth:`PaceState.on_reply` (its reply came; ``status`` None: none came), :meth:`PaceState.on_usage`
(the reply's usage corrects the token estimate).

The rules:

1. **Pace.** Requests and tokens are spaced by GCRA (one "next allowed" time per kind:
   ``next_request_at``, ``next_tokens_at``) at :data:`SAFETY` of the ceiling. A request never
   goes before its time on that schedule; tokens drain from a bucket of :data:`TOKEN_BURST` of a
   minute's tokens. A request woken late (timers are, more so on a busy worker) keeps the
   schedule, so the pace is not lost for good: the next ones catch up, never closer than
   :data:`CATCH_UP_GAP` of an interval to the last, and never more than the limit allows in a
   second: a log of the last sends (``recent_sends``, as many as the limit allows in a second,
   :func:`log_of`) holds each request until the one that many sends back is a second old (the
   limit's own spacing, no SAFETY: that margin is what a late send may use), plus
   :data:`ARRIVAL_MARGIN_S`. A server counting per second (sliding or fixed) or per minute never
   sees more than its limit. A request more than that second late, or held by a pause, was not
   delayed but not wanted (the first, a lull, the server's "stop"): the schedule starts again from
   it. A probed limit (rule 7) is a guess: no catching up there; a mirrored one (rule 8) uses
   the log alone.
2. **Ceiling.** The lower of the configured limit and what the server said; without a
   ``x-ratelimit-limit-requests`` header, the probed request rate takes the server's place.
   Quota headers, when they come, replace a probed rate (``probe_limit`` goes back to None).
3. **Budget.** ``x-ratelimit-remaining-*`` minus what is in flight is a budget: at zero, requests
   wait for ``x-ratelimit-reset-*``.
4. **Quota 429.** A 429 whose quota headers show the window spent (remaining 0) pauses every
   request until the wait hint (``Retry-After``..., at least :data:`MIN_PAUSE_S`) plus jitter; a
   later success whose headers show quota left lifts that pause.
5. **Isolated 429.** A 429 whose headers show quota left, or a header-less 429 that is not part
   of a run (rule 6), pauses nothing: only its own item waits (the retry policy). When no probe
   runs (no run of 429s was seen), it changes no rate at all.
6. **Run of 429s.** Header-less 429s are a run when :data:`RUN_LENGTH` come with no success in
   between (each within :data:`RUN_SPAN_S` of the last), or when the 429 share of recent replies
   (an exponential average over about 10 replies, ``refusal_ratio``) reaches :data:`RUN_RATIO`.
   A run pauses every request for the wait hint (else the retry backoff, longer with each run
   in a row) plus jitter and, when no header tells the request limit, cuts the probed rate: the
   server's capacity is estimated as the requests it admitted since the probe period began, over
   the time actually elapsed plus the time it asks us to wait
   (``period_admitted * 60 / (elapsed + hint)``, elapsed at least :data:`MIN_SPAN_S`); the limit
   found (``probe_limit``) is the lower of that and the current pace, and the pace restarts at
   :data:`BETA` of it when sending resumes. Successes that come back before sending resumes
   were admitted in that span too (replies come in any order): each adds ``60 / cut_span_s``.
   When nothing got through since the last cut (or the start), the server's window is still
   full, or it is out: the run pauses (longer each time) but lowers nothing.
7. **Probe.** The probed rate follows CUBIC's curve in time, ``probe_limit * (1 + CUBIC_C *
   (t - K)**3)`` with ``K = cbrt((1 - BETA) / CUBIC_C)``: back to the limit found in ``K``
   seconds (about 2 s), flat there, then faster and faster (4x in about 8 s), so a limit that
   rises mid-batch is followed within about 10 s. The rise depends on time only, never on
   headers: it goes on when the server sends none. Past :data:`PROBE_RELEASE` times the limit
   found with no 429 saying stop, the probe ends: the batch is unpaced again. A lone header-less 429 while probing means
   the probe went too far: above ``probe_limit``, the limit becomes :data:`EROSION` of the rate
   refused (the last that got through); at or below it, ``probe_limit`` itself was too high and
   is lowered to :data:`PLATEAU_EROSION` of it; either way the rate
   holds there for :data:`PROBE_HOLD_S` before rising again. Changes of the probe need
   :data:`CHANGE_HOLD_S` since the last one, so the 429s of requests already in flight count once.
8. **Window mirror.** When the run that cut the probed limit (rule 6) came with a wait hint longer
   than the time elapsed since the probe period began, and the two add up to at least
   :data:`MIRROR_MIN_WINDOW_S`, the server evidently counts over a window of about
   ``elapsed + hint`` (``mirror_window_s``) holding about the requests it admitted: such a window
   frees in the shape it filled (a first burst leaves a sliding minute all at once). While that
   probed limit paces, requests are not spaced: rule 1's log holds every send of the last window
   (at most :data:`MIRROR_LOG_MAX`) and a request goes while fewer than the probed rate's share of
   the window (``probed_rpm * mirror_window_s / 60``) went in the last window (plus
   ``arrival_margin_s``), or once the probe's curve has risen to allow one more. The probe's cuts,
   hold, rise and erosions move that share as they move the even pace. Only a probed limit
   bursts so; quota headers replace the mirror with the probe (rule 2). :meth:`PaceState.wait_s`
   answers with the mirror; the Redis store's reservations space slots at :meth:`PaceState.pace`
   (GCRA), so a shared pace stays even (its stored state carries the log, at most
   :data:`MIRROR_LOG_MAX` floats).

State fields (all times on the ``now`` clock):

==========================  =========================================================================
configured_rpm / _tpm       the user's limits per minute, or None
header_rpm / _tpm           the latest ``x-ratelimit-limit-requests`` / ``-tokens``, or None
remaining_requests / _tok.  the latest ``x-ratelimit-remaining-*``, or None (cleared at the reset)
reset_requests_at / _tok.   when that window resets, or None
in_flight_requests / _tok.  requests (and their estimated tokens) sent and not answered yet
next_request_at / _tokens   GCRA: when the next request / token is due at the current pace
recent_sends                when the last requests went (rule 1's log; a list, the one non-scalar)
arrival_margin_s            how long after a request leaves the server's window the next may go
probe_limit                 the request limit (per minute) found by probing, or None
probe_epoch_at              the origin ``t = 0`` of the probe curve
probe_hold_until            the probed rate stays at ``probe_limit`` until then (after a fall back)
probe_changed_at            when a 429 last changed the probe (cut, fall back, erosion), or None
period_start / _admitted    the probe's measurement: since when, and how many requests succeeded
cut_span_s                  the span (elapsed + hint) the last cut measured over
probe_window_s              the longest wait a run of 429s asked for: the server's window, roughly
mirror_window_s             the server's window mirrored by rule 8 (0: none, the probe paces evenly)
paused_until / pause_reason no request before this time; ``quota`` or ``run`` (or None)
refusals_in_a_row           header-less 429s since the last success; last_refusal_at: the last one
refusal_ratio               exponential average of the 429 share of replies (alpha 0.1)
cuts_in_a_row               cuts with no success between them (the backoff's exponent)
rate_limited                429 replies seen; isolated_429s: of which isolated; cuts: probe cuts
==========================  =========================================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_gradient.batch.in_task.pacing.pace import SAFETY, TOKEN_BURST, Pace
from airflow_gradient.http.retry import backoff_seconds
from airflow_gradient.http.wait_hints import QuotaReading, hint_jitter, lowered, retry_after_seconds
from airflow_gradient.observability.batch_spans import pacing_wait

MIN_PAUSE_S = 1.0
"""The shortest pause after a quota 429 (DigitalOcean: wait at least 1 s)."""
ARRIVAL_MARGIN_S = 0.01
"""A request held until a request leaves the server's window (at a reset the headers tell, rounded
to the millisecond or the second; at the end of rule 1's log) goes this much later, so that it
arrives after it even when it travels faster than the one before (``arrival_margin_s``; a store
shared by several tasks sets more). More costs pace at every reset: against a 1 s window, the
50 ms this was held 5 % of the limit (issue 18.1)."""
CATCH_UP_GAP = 0.5
"""Late requests catch up on the schedule at most twice as fast as it goes: never closer than this
share of the interval to the last one (so never two at once)."""
LOG_MAX = 100
"""The longest log of sends (rule 1): a limit of more than 100 a second is logged over a shorter
window, a whole fraction of the second (:func:`log_of`)."""
RUN_LENGTH = 4
RUN_SPAN_S = 5.0
RUN_RATIO = 0.35
RATIO_ALPHA = 0.1
BETA = 0.8
CUBIC_C = 0.03
CHANGE_HOLD_S = 1.0
PROBE_HOLD_S = 3.0
EROSION = 0.95
PLATEAU_EROSION = 0.85
MIN_SPAN_S = 1.0
PERIOD_S = 60.0
MIN_PROBE_RPM = 1.0
PROBE_RELEASE = 16.0
MIRROR_MIN_WINDOW_S = 10.0
"""Rule 8: the shortest window a run of 429s must imply (elapsed + wait hint) to be mirrored.
``Retry-After`` counts whole seconds: a 1 s window told as 2 s would be mirrored at half its rate,
and bursts cannot probe past that (a burst above the limit is refused whole). Shorter windows (a
server counting per second) are paced evenly."""
MIRROR_LOG_MAX = 1000
"""Rule 8: the most sends the log keeps while mirroring (a float each, in the shared store's JSON
too); a window found to hold more is paced evenly."""



def _cubic_k() -> float:
    return float(((1 - BETA) / CUBIC_C) ** (1 / 3))


@dataclass
class PaceState:
    """Everything the pacer knows; see the module docstring for the fields and the rules."""

    configured_rpm: float | None = None
    configured_tpm: float | None = None
    header_rpm: float | None = None
    header_tpm: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests_at: float | None = None
    reset_tokens_at: float | None = None
    in_flight_requests: int = 0
    in_flight_tokens: float = 0.0
    next_request_at: float = 0.0
    next_tokens_at: float = 0.0
    recent_sends: list[float] = dataclasses.field(default_factory=list)
    arrival_margin_s: float = ARRIVAL_MARGIN_S
    probe_limit: float | None = None
    probe_epoch_at: float = 0.0
    probe_hold_until: float = 0.0
    probe_changed_at: float | None = None
    probe_window_s: float = 0.0
    mirror_window_s: float = 0.0
    cut_span_s: float = 0.0
    period_start: float | None = None
    period_admitted: float = 0.0
    paused_until: float = 0.0
    pause_reason: str | None = None
    refusals_in_a_row: int = 0
    last_refusal_at: float | None = None
    refusal_ratio: float = 0.0
    cuts_in_a_row: int = 0
    rate_limited: int = 0
    isolated_429s: int = 0
    cuts: int = 0

    # -- storage ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, float | int | str | None]:
        """The state as JSON scalars."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PaceState:
        """A state from :meth:`to_dict`; unknown keys are ignored, missing ones take defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    # -- questions --------------------------------------------------------------------------------

    def probed_rpm(self, now: float) -> float | None:
        """The probed request rate per minute at ``now`` (rule 7), or None when not probing."""
        if self.probe_limit is None:
            return None
        k = _cubic_k()
        x = now - self.probe_epoch_at - k
        if x >= 0:  # past the limit found: flat until the hold ends, then rising faster and faster
            x = max(now - max(self.probe_epoch_at + k, self.probe_hold_until), 0.0)
        factor = 1 + CUBIC_C * x**3
        if factor > PROBE_RELEASE:
            return None  # far above any limit found, and no 429 said stop: there is none
        return max(self.probe_limit * factor, MIN_PROBE_RPM)

    def ceiling(self, now: float) -> Pace:
        """The request and token limits per minute at ``now`` (rule 2), and their source."""
        rpm, rpm_source = self._request_limit(now)
        tpm, tpm_source = _lower(self.configured_tpm, self.header_tpm, "headers")
        sources = [s for s in (rpm_source, tpm_source) if s]
        return Pace(rpm, tpm, "/".join(dict.fromkeys(sources)) or "unpaced", now=now)

    def pace(self, now: float, budget_since: float | None = None) -> Pace:
        """The pace at ``now``: :data:`SAFETY` of the ceiling, and until when nothing may go (the
        pause, or the spent budget) whatever the pace; ``budget_since``: see :class:`Pace`."""
        ceiling = self.ceiling(now)
        # wait_s with the GCRA times at ``now`` is the other waits: the pause and the budget.
        blocked = dataclasses.replace(self, next_request_at=now, next_tokens_at=now, recent_sends=[]).wait_s(1, now)
        return Pace(
            requests_per_minute=ceiling.requests_per_minute * SAFETY if ceiling.requests_per_minute else None,
            tokens_per_minute=ceiling.tokens_per_minute * SAFETY if ceiling.tokens_per_minute else None,
            source=ceiling.source,
            now=now,
            pause_until=now + blocked,
            token_burst=TOKEN_BURST * ceiling.tokens_per_minute if ceiling.tokens_per_minute else 0.0,
            request_budget=self.request_budget(now),
            budget_since=now if budget_since is None else budget_since,
        )

    def request_budget(self, now: float) -> tuple[float, float] | None:
        """Rule 3: the requests that may still go before the quota resets, and when it resets
        (``x-ratelimit-remaining-requests`` minus those in flight); None while no budget is known."""
        self._expire_budgets(now)
        if self.remaining_requests is None or self.reset_requests_at is None:
            return None
        return self.remaining_requests - self.in_flight_requests, self.reset_requests_at

    def wait_s(self, tokens: float, now: float) -> float:
        """Seconds a request estimated at ``tokens`` tokens must wait at ``now``; 0: it may go."""
        self._expire_budgets(now)
        ceiling = self.ceiling(now)
        waits = [self.paused_until - now]
        if (budget := self.request_budget(now)) is not None and budget[0] < 1:
            waits.append(budget[1] - now)
        if self.remaining_tokens is not None and self.reset_tokens_at is not None \
                and self.remaining_tokens - self.in_flight_tokens < tokens:
            waits.append(self.reset_tokens_at - now)
        if ceiling.requests_per_minute:
            waits.append(self.request_due(now) - now)
        if ceiling.tokens_per_minute:
            # A bucket of TOKEN_BURST of a minute's tokens: the request fits once the tokens sent
            # before it, plus its own (a larger request counts as a full bucket), drained to it.
            per_token = 60.0 / (ceiling.tokens_per_minute * SAFETY)
            burst = TOKEN_BURST * ceiling.tokens_per_minute
            waits.append(max(self.next_tokens_at - now, 0.0) - (burst - min(tokens, burst)) * per_token)
        return max(max(waits), 0.0)

    def request_due(self, now: float) -> float:
        """Rule 1: when the next request may go, at the request limit of ``now``: on its schedule,
        at least :data:`CATCH_UP_GAP` of an interval after the last request, and one log window
        (:meth:`send_log`) after the request that many sends back."""
        if self._mirroring(now):
            count, window = self.send_log(now)
            if len(self.recent_sends) < count:
                return now
            # The oldest send counted leaves the window, or the probe rises to allow one more.
            return min(self.recent_sends[-count] + window + self.arrival_margin_s,
                       self._probe_reaches((count + 1) * 60.0 / window))
        due = self.next_request_at
        rpm, _ = self._request_limit(now)
        if self.recent_sends and rpm:
            due = max(due, self.recent_sends[-1] + CATCH_UP_GAP * 60.0 / (rpm * SAFETY))
            count, window = self.send_log(now)
            if len(self.recent_sends) >= count:
                due = max(due, self.recent_sends[-count] + window + self.arrival_margin_s)
        return due

    def send_log(self, now: float) -> tuple[int, float]:
        """Rule 1's log at the request limit of ``now``: how many sends it holds and the window they
        must span (:func:`log_of`), for a limit the user or the server told. A probed limit is a
        guess, pushed past the server's on purpose: catching up at it would push harder, so there
        the log is the last send alone, and a late request is not made up for."""
        rpm, source = self._request_limit(now)
        if not rpm:
            return 1, 0.0
        if source == "probing":
            if self.mirror_window_s:
                # Rule 8: the probed rate's share of the window, all of which may go at once; never
                # below the limit found: the server told how many it admits (the curve's restart
                # below it is for an even pace, and a window left short costs a whole window).
                share = max(rpm, self.probe_limit or 0.0) * self.mirror_window_s / 60.0
                return max(int(share + 1e-9), 1), self.mirror_window_s
            return 1, 0.0
        return log_of(rpm)

    def _mirroring(self, now: float) -> bool:
        """Rule 8: whether the request limit of ``now`` is a probed one with a window mirrored."""
        return bool(self.mirror_window_s) and self._request_limit(now)[1] == "probing"

    def _probe_reaches(self, rpm: float) -> float:
        """When the probed rate (rule 7) reaches ``rpm``, if no 429 changes the probe before (a
        millisecond late, so the count it allows has grown whatever the rounding)."""
        assert self.probe_limit is not None  # only called while probing
        rise = (rpm / self.probe_limit - 1) / CUBIC_C
        x = math.copysign(abs(rise) ** (1 / 3), rise)
        start = self.probe_epoch_at + _cubic_k()
        return (start + x if x < 0 else max(start, self.probe_hold_until) + x) + 1e-3

    def _request_limit(self, now: float) -> tuple[float | None, str]:
        """The request limit per minute at ``now`` (rule 2), and where it comes from."""
        server_rpm = self.header_rpm if self.header_rpm is not None else self.probed_rpm(now)
        server_source = "headers" if self.header_rpm is not None else "probing"
        return _lower(self.configured_rpm, server_rpm, server_source)

    # -- transitions ------------------------------------------------------------------------------

    def on_send(self, tokens: float, now: float) -> None:
        """A request estimated at ``tokens`` tokens leaves at ``now``."""
        ceiling = self.ceiling(now)
        if (rpm := ceiling.requests_per_minute):
            count, window = self.send_log(now)
            if self._mirroring(now):
                # Rule 8: every send of the last window, whatever the count allowed (the probe's
                # count moves; a log cut to a lower one would forget sends still counted). No
                # schedule: a burst must not push an even pace that takes over into the future.
                recent = self.recent_sends[-(MIRROR_LOG_MAX - 1):]
                self.recent_sends = [*(t for t in recent if t > now - window), now]
                self.next_request_at = now
            else:
                # Rule 1: a late request keeps the schedule (the next ones catch up). One more than
                # the log's window late, or held by a pause, starts it again: a lull, or the
                # server's "stop", is not made up for.
                kept = now - self.next_request_at <= window and self.paused_until <= self.next_request_at
                due = self.next_request_at if kept else now
                self.next_request_at = due + 60.0 / (rpm * SAFETY)
                self.recent_sends = [*self.recent_sends[-(count - 1):], now] if count > 1 else [now]
        if ceiling.tokens_per_minute:
            self.next_tokens_at = max(self.next_tokens_at, now) + tokens * 60.0 / (ceiling.tokens_per_minute * SAFETY)
        self.in_flight_requests += 1
        self.in_flight_tokens += tokens
        if self.period_start is None:
            self.period_start = now
        if self.probe_limit is not None and self.probed_rpm(now) is None:
            self.probe_limit = None
            self.mirror_window_s = 0.0

    def on_usage(self, estimated: float, actual: float, now: float) -> None:
        """A reply used ``actual`` tokens for a request sent as ``estimated``: the difference is
        charged to (or refunded from) the token pace."""
        tpm = self.ceiling(now).tokens_per_minute
        if tpm:
            self.next_tokens_at += (actual - estimated) * 60.0 / (tpm * SAFETY)

    def on_reply(self, status: int | None, headers: Mapping[str, str], tokens: float, *,
                 now: float, now_wall: float, rand: float) -> bool:
        """The reply to a request sent with ``tokens`` came at ``now`` (``status`` None: none came).

        ``rand`` in [0, 1) draws the jitter of a pause this reply may cause. True when the reply is
        a 429 met while probing, with no quota shown spent: the probe's cost, not the item's.
        """
        self.in_flight_requests = max(self.in_flight_requests - 1, 0)
        self.in_flight_tokens = max(self.in_flight_tokens - tokens, 0.0)
        if status is None:
            return False
        headers = lowered(headers)
        requests, token_quota = QuotaReading.read_both(headers, now_wall)
        probing = self.probe_limit is not None and self.header_rpm is None
        self._read_quota(requests, token_quota, now)
        self.refusal_ratio += RATIO_ALPHA * ((status == 429) - self.refusal_ratio)
        if status == 429:
            self.rate_limited += 1
            self.next_tokens_at -= self._token_cost(tokens, now)  # a refused request used no tokens
            self._on_429(requests, token_quota, retry_after_seconds(headers, 429, now_wall), now, rand)
            return probing and not requests.spent and not token_quota.spent
        if status < 400:
            self._on_success(now)
        return False

    # -- rules ------------------------------------------------------------------------------------

    def _token_cost(self, tokens: float, now: float) -> float:
        tpm = self.ceiling(now).tokens_per_minute
        return tokens * 60.0 / (tpm * SAFETY) if tpm else 0.0

    def _read_quota(self, requests: QuotaReading, token_quota: QuotaReading, now: float) -> None:
        if requests.limit:
            if self.header_rpm is None and self.probe_limit is not None:
                self.probe_limit = None  # rule 2: what the server says replaces the probed rate
                self.mirror_window_s = 0.0
            self.header_rpm = requests.limit
        if token_quota.limit:
            self.header_tpm = token_quota.limit
        if requests.remaining is not None:
            self.remaining_requests = requests.remaining
            self.reset_requests_at = (now + requests.reset_s + self.arrival_margin_s
                                      if requests.reset_s is not None else None)
        if token_quota.remaining is not None:
            self.remaining_tokens = token_quota.remaining
            self.reset_tokens_at = (now + token_quota.reset_s + self.arrival_margin_s
                                    if token_quota.reset_s is not None else None)

    def _expire_budgets(self, now: float) -> None:
        if self.reset_requests_at is not None and now >= self.reset_requests_at:
            self.remaining_requests = self.reset_requests_at = None
        if self.reset_tokens_at is not None and now >= self.reset_tokens_at:
            self.remaining_tokens = self.reset_tokens_at = None

    def _quota_left(self) -> bool:
        """Whether the latest headers show room for one more request beyond those in flight."""
        budgets = [(self.remaining_requests, self.in_flight_requests), (self.remaining_tokens, self.in_flight_tokens)]
        known = [(left, busy) for left, busy in budgets if left is not None]
        return bool(known) and all(left - busy >= 1 for left, busy in known)

    def _on_success(self, now: float) -> None:
        self.refusals_in_a_row = 0
        self.cuts_in_a_row = 0
        if self.pause_reason == "run" and now < self.paused_until and self.probe_limit is not None \
                and self.cut_span_s > 0:
            # A request sent before the cut got through: the server admitted it in the span the
            # limit was measured over (replies come back in any order).
            self.probe_limit += 60.0 / self.cut_span_s
            return
        self.period_admitted += 1
        if self.period_start is not None and now - self.period_start > PERIOD_S:
            # Keep the measured rate, over the last half period only: old history weighs no more.
            self.period_admitted *= (PERIOD_S / 2) / (now - self.period_start)
            self.period_start = now - PERIOD_S / 2
        if self.pause_reason == "quota" and self.paused_until > now and self._quota_left():
            # Rule 4: the account still has quota, so that 429 was not about our pace.
            self.paused_until = now
            self.pause_reason = None

    def _on_429(self, requests: QuotaReading, token_quota: QuotaReading, hint: float | None,
                now: float, rand: float) -> None:
        remaining = [q.remaining for q in (requests, token_quota) if q.remaining is not None]
        if requests.spent or token_quota.spent:
            self._pause(max(hint or 0.0, MIN_PAUSE_S) + hint_jitter(rand), "quota", now)  # rule 4
            return
        if remaining:
            self.isolated_429s += 1  # rule 5: the headers show quota left
            return
        if self.last_refusal_at is not None and now - self.last_refusal_at > RUN_SPAN_S:
            self.refusals_in_a_row = 0
        self.refusals_in_a_row += 1
        self.last_refusal_at = now
        run = self.refusals_in_a_row >= RUN_LENGTH or self.refusal_ratio >= RUN_RATIO
        if not run:
            self.isolated_429s += 1
        # 429s of requests sent before the last change of pace or pause say nothing new.
        changed = self.probe_changed_at
        if self.paused_until > now or (changed is not None and now < changed + CHANGE_HOLD_S):
            return
        if run:
            self._run(hint, now, rand)
        elif self.probe_limit is not None and self.header_rpm is None:
            self._probe_refused(now)

    def _probe_refused(self, now: float) -> None:
        """Rule 7: a lone 429 while probing. Above the limit found, the probe fell back to it;
        at or below it, that limit was too high."""
        assert self.probe_limit is not None  # only called while probing
        probed = self.probed_rpm(now) or 0.0
        if probed > self.probe_limit:
            # The last rate that got through is just below the one refused.
            self.probe_limit = probed * EROSION
        else:
            self.probe_limit = max(self.probe_limit * PLATEAU_EROSION, MIN_PROBE_RPM)
        self._hold_probe(now + max(PROBE_HOLD_S, self.probe_window_s), now)

    def _hold_probe(self, until: float, now: float) -> None:
        """Keep the probed rate at ``probe_limit`` until ``until``, then rise along the curve."""
        self.probe_hold_until = until
        self.probe_epoch_at = now - _cubic_k()
        self.probe_changed_at = now

    def _run(self, hint: float | None, now: float, rand: float) -> None:
        self.cuts_in_a_row += 1
        wait = hint if hint else backoff_seconds(self.cuts_in_a_row, rng=lambda: rand)
        self._pause(wait + hint_jitter(rand), "run", now)
        self.refusals_in_a_row = 0
        self.refusal_ratio = 0.0
        if self.header_rpm is not None:
            return  # the server tells its limit: no guessing (rule 2)
        resume = self.paused_until
        if self.period_admitted <= 0:
            # Nothing got through since the last cut, or since the start: the server's window is
            # still full, or the server is out. Waiting (longer each time) is the answer, not a
            # lower rate: a rate measured from nothing admitted is a made-up one.
            if self.probe_limit is not None:
                self._hold_probe(resume, now)
            else:
                self.period_start = resume
            return
        elapsed = now - self.period_start if self.period_start is not None else 0.0
        self.cut_span_s = max(elapsed + (hint or 0.0), MIN_SPAN_S)
        found = max(self.period_admitted, 1.0) * 60.0 / self.cut_span_s
        current = self.ceiling(now).requests_per_minute
        self.probe_limit = max(min(found, current) if current else found, MIN_PROBE_RPM)
        self.cuts += 1
        if hint and hint > elapsed and self.cut_span_s >= MIRROR_MIN_WINDOW_S \
                and self.period_admitted <= MIRROR_LOG_MAX:
            # Rule 8: the server admitted these in a moment and asks for a long wait: it counts
            # over a window of about elapsed + hint, which frees in the shape it filled.
            self.mirror_window_s = self.cut_span_s
        # The curve restarts at BETA of the limit found when sending resumes, and stays at that
        # limit at least as long as the longest wait the server asked for: a long wait means a
        # long window, whose 429s come late.
        self.probe_window_s = max(self.probe_window_s, hint or 0.0)
        self.probe_epoch_at = resume
        self.probe_hold_until = resume + self.probe_window_s
        self.probe_changed_at = now
        self.period_start = resume
        self.period_admitted = 0.0

    def _pause(self, seconds: float, reason: str, now: float) -> None:
        if now + seconds > self.paused_until:
            self.paused_until = now + seconds
            self.pause_reason = reason
            pacing_wait(seconds, reason)  # an event on the batch span, when one is traced


def log_of(rpm: float) -> tuple[int, float]:
    """Rule 1's log at a limit of ``rpm`` requests per minute: how many sends it holds, and the
    window they must span. The requests the limit allows in one second, over that second (at 600 a
    minute: 10 sends, 1 s); at least one request, over its own interval (under 60 a minute); past
    :data:`LOG_MAX` a second, the limit's share of an equal part of the second (at 12,000 a minute:
    100 sends over 0.5 s), so the parts still add up to at most the limit in any second."""
    per_second = int(rpm // 60)
    if per_second < 1:
        return 1, 60.0 / rpm
    count = per_second // -(-per_second // LOG_MAX)
    return count, count * 60.0 / rpm


def _lower(configured: float | None, server: float | None, server_source: str) -> tuple[float | None, str]:
    if configured and (not server or configured <= server):
        return configured, "configured"
    if server:
        return server, server_source
    return None, ""
