"""How long the server asks us to wait: the one reading of every wait hint, and its jitter.

Both the per-item retry (:mod:`airflow_gradient.retry`) and the batch pacer
(:mod:`airflow_gradient.batch.in_task.pace_rules`) read hints here, so they always agree:

- ``retry-after-ms``: milliseconds.
- ``Retry-After``: seconds, or an HTTP date.
- ``x-ratelimit-reset-{requests,tokens,tokens-per-minute,...}``: unix epoch seconds per
  DigitalOcean (``docs/reliability.md``); a value below a year of seconds is read as a delay, one
  above 1e11 as epoch milliseconds, and an OpenAI-style duration (``"1s"``, ``"6m0s"``,
  ``"20ms"``) as a delay too, since gateways in front of the service may send that form. Only the
  resets of quotas that the ``x-ratelimit-remaining-*`` headers do not show left count.

Headers may be any mapping; names are matched case-insensitively.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping

RATE_LIMIT_HEADER_PREFIX = "x-ratelimit-"
# Below a year of seconds a reset value is a delay; above 1e11 it is epoch milliseconds.
_EPOCH_THRESHOLD_S = 31_536_000
_EPOCH_MS_THRESHOLD = 100_000_000_000
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
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


def header_number(value: str | float | None) -> float | None:
    """A header's value as a finite number, else None: a proxy's "nan" or "inf" says nothing (read
    as a number it paused a batch forever, or made a NaN pace that XCom refused)."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


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
    """The soonest non-zero ``x-ratelimit-reset-*`` delay of a quota the headers do not show left;
    0.0 when every such reset is already past, None when there is none.

    A reset whose ``x-ratelimit-remaining-*`` twin shows room for a request is skipped: that
    window is not what refused the request (an upstream provider's 429 while quota remains), and
    its reset may be a whole minute away. DigitalOcean sends 0 for such a reset anyway; gateways
    that send OpenAI's form give every window's reset.
    """
    headers = lowered(headers)
    reset = RATE_LIMIT_HEADER_PREFIX + "reset"
    delays = [
        delay for name, value in headers.items()
        if name.startswith(reset) and not _quota_left(headers.get(RATE_LIMIT_HEADER_PREFIX + "remaining"
                                                                  + name[len(reset):]))
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
        return max(ms / 1000.0, 0.0)
    if value := headers.get("retry-after"):
        if (seconds := header_number(value)) is not None:
            return max(seconds, 0.0)
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
    """The ``x-ratelimit-*`` headers, names lower-cased."""
    return {k: v for k, v in lowered(headers).items() if k.startswith(RATE_LIMIT_HEADER_PREFIX)}
