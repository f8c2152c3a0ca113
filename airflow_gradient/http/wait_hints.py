"""How long the server asks us to wait: the one reading of every wait hint, and its jitter.

Both the per-item retry (:mod:`airflow_gradient.http.retry`) and the batch pacer
(:mod:`airflow_gradient.batch.in_task.pacing.rules`) read hints here, so they always agree:

- ``retry-after-ms``: milliseconds.
- ``Retry-After``: seconds, or an HTTP date.
- ``x-ratelimit-reset-{requests,tokens,tokens-per-minute,...}``: unix epoch seconds per
  DigitalOcean (``docs/reliability.md``); a value below a year of seconds is read as a delay, one
  above 1e11 as epoch milliseconds, and an OpenAI-style duration (``"1s"``, ``"6m0s"``,
  ``"20ms"``) as a delay too, since gateways in front of the service may send that form. Only the
  resets of quotas that the ``x-ratelimit-remaining-*`` headers do not show left count.
- ``ratelimit-remaining`` and ``ratelimit-reset`` (DigitalOcean's API specification, no ``x-``):
  read as the request budget when no ``x-ratelimit-remaining-requests`` is sent;
  ``ratelimit-limit`` is not read (its window is not said: it is no per-minute figure).

Headers may be any mapping; names are matched case-insensitively. Every number in a header is
read by :func:`header_number`, with one rule: finite and not negative, or not said at all.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass

RATE_LIMIT_HEADER_PREFIX = "x-ratelimit-"
# DigitalOcean's API specification declares ratelimit-limit, -remaining and -reset (epoch seconds)
# too: a budget of requests over a window it does not name, so its limit is no per-minute figure.
PLAIN_PREFIX = "ratelimit-"
RATE_LIMIT_HEADER_PREFIXES = (RATE_LIMIT_HEADER_PREFIX, PLAIN_PREFIX)
# Below a year of seconds a reset value is a delay; above 1e11 it is epoch milliseconds.
_EPOCH_THRESHOLD_S = 31_536_000
_EPOCH_MS_THRESHOLD = 100_000_000_000
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_REQUEST_SUFFIXES = ("requests",)
_TOKEN_SUFFIXES = ("tokens", "tokens-per-minute")
JITTER_MIN_S = 0.25
JITTER_SPAN_S = 0.25


def hint_jitter(rand: float) -> float:
    """The 250-500 ms DigitalOcean advises adding to a server's wait hint; ``rand`` is in [0, 1).

    Spreads the retries of many concurrent calls told the same reset time.
    """
    return JITTER_MIN_S + JITTER_SPAN_S * rand


def lowered(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with lower-case names (an ``httpx.Headers`` already matches either case)."""
    return {name.lower(): value for name, value in headers.items()}


def parse_duration(text: str) -> float | None:
    """Seconds of an OpenAI-style duration (``"1s"``, ``"6m0s"``, ``"1h2m"``, ``"20ms"``), else None."""
    text = text.strip().lower()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def header_number(value: str | bytes | float | None) -> float | None:
    """A header's value as a finite number >= 0, else None (not said).

    The one reading of a number in a header (and of the pace a store keeps): a proxy's "nan" or
    "inf" says nothing (read as a number it paused a batch forever, or made a NaN pace that XCom
    refused), and neither does a negative wait, count or limit (a negative limit stalled a batch).
    """
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def reset_seconds(value: str | float | None, now_wall: float) -> float | None:
    """Seconds until an ``x-ratelimit-reset-*`` value (epoch s or ms, delay, or duration string);
    None when absent, unreadable or zero (DigitalOcean sends 0 for a quota that is not spent)."""
    number = header_number(value)
    if number is None:
        return (parse_duration(value) or None) if isinstance(value, str) else None
    if number <= 0:
        return None
    if number > _EPOCH_MS_THRESHOLD:
        return max(number / 1000.0 - now_wall, 0.0)
    return max(number - now_wall if number > _EPOCH_THRESHOLD_S else number, 0.0)


def soonest_reset_seconds(headers: Mapping[str, str], now_wall: float) -> float | None:
    """The soonest non-zero ``x-ratelimit-reset-*`` (or ``ratelimit-reset``) delay of a quota the
    headers do not show left; 0.0 when every such reset is already past, None when there is none.

    A reset whose ``x-ratelimit-remaining-*`` twin shows room for a request is skipped: that
    window is not what refused the request (an upstream provider's 429 while quota remains), and
    its reset may be a whole minute away. DigitalOcean sends 0 for such a reset anyway; gateways
    that send OpenAI's form give every window's reset.
    """
    headers = lowered(headers)
    delays = [
        delay for name, value in headers.items() for prefix in RATE_LIMIT_HEADER_PREFIXES
        if name.startswith(reset := prefix + "reset")
        and not _quota_left(headers.get(prefix + "remaining" + name[len(reset):]))
        and (delay := reset_seconds(value, now_wall)) is not None
    ]
    positive = [d for d in delays if d > 0]
    return min(positive) if positive else (0.0 if delays else None)


def _quota_left(remaining: str | None) -> bool:
    left = header_number(remaining)
    return left is not None and left >= 1


def retry_after_seconds(headers: Mapping[str, str], status: int, now_wall: float) -> float | None:
    """Seconds the server asks us to wait before the next request, or None when it did not say.

    Order: ``retry-after-ms``, ``Retry-After`` (seconds or HTTP date), then, for a 429 only, the
    soonest non-zero ``x-ratelimit-reset-*`` of a quota not shown left
    (:func:`soonest_reset_seconds`).
    """
    headers = lowered(headers)
    if (ms := header_number(headers.get("retry-after-ms"))) is not None:
        return ms / 1000.0
    if value := headers.get("retry-after"):
        if (seconds := header_number(value)) is not None:
            return seconds
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None:
            return max(parsed.timestamp() - now_wall, 0.0)
    if status == 429:
        return soonest_reset_seconds(headers, now_wall)
    return None


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``x-ratelimit-*`` and ``ratelimit-*`` headers, names lower-cased."""
    return {k: v for k, v in lowered(headers).items() if k.startswith(RATE_LIMIT_HEADER_PREFIXES)}


def tells_quota(headers: Mapping[str, str]) -> bool:
    """Whether reply ``headers`` tell a quota's limit or what is left of it."""
    return any(name.startswith((f"{RATE_LIMIT_HEADER_PREFIX}limit-", f"{RATE_LIMIT_HEADER_PREFIX}remaining-"))
               or name == PLAIN_PREFIX + "remaining" for name in lowered(headers))


@dataclass(frozen=True)
class QuotaReading:
    """What one reply's ``x-ratelimit-*`` headers say about one kind of quota."""

    limit: float | None = None
    remaining: float | None = None
    reset_s: float | None = None

    @classmethod
    def read(cls, headers: Mapping[str, str], suffixes: tuple[str, ...], now_wall: float) -> QuotaReading:
        """``headers`` must have lower-case names (see :func:`lowered`)."""

        def first(kind: str) -> str | None:
            return next((v for s in suffixes if (v := headers.get(f"{RATE_LIMIT_HEADER_PREFIX}{kind}-{s}"))), None)

        return cls(limit=header_number(first("limit")), remaining=header_number(first("remaining")),
                   reset_s=reset_seconds(first("reset"), now_wall))

    @classmethod
    def read_plain(cls, headers: Mapping[str, str], now_wall: float) -> QuotaReading:
        """``ratelimit-remaining`` and ``ratelimit-reset``: a budget of requests, no limit per minute."""
        return cls(remaining=header_number(headers.get(PLAIN_PREFIX + "remaining")),
                   reset_s=reset_seconds(headers.get(PLAIN_PREFIX + "reset"), now_wall))

    @property
    def spent(self) -> bool:
        """Whether the headers show this quota's window spent (nothing remaining)."""
        return self.remaining is not None and self.remaining <= 0

    @classmethod
    def read_both(cls, headers: Mapping[str, str], now_wall: float) -> tuple[QuotaReading, QuotaReading]:
        """The request quota and the token quota; ``headers`` with lower-case names."""
        requests = cls.read(headers, _REQUEST_SUFFIXES, now_wall)
        if requests.remaining is None:
            plain = cls.read_plain(headers, now_wall)
            requests = dataclasses.replace(requests, remaining=plain.remaining, reset_s=plain.reset_s)
        return requests, cls.read(headers, _TOKEN_SUFFIXES, now_wall)
