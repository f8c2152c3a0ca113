"""Pacing on the replies the real service sends (issue 10), against the emulator in its process.

- ``isolated``: 2000 items, 200 ms latency, C=64, 5 % isolated 429s without any header, against
  the same batch without them (goal <= 1.3x).
- ``unannounced``: a limit of 300/min enforced, no quota header at all: the rate achieved after
  the first 20 s against the limit (goal >= 0.85) and the 429s. Once with a server counting per
  second (5 in any second), once with a sliding 60 s window (the emulator's default).
- ``rise``: the limit goes from 120/min to 600/min mid-batch: seconds until the achieved rate
  reaches 80 % of the new limit (goal <= 10 s), with quota headers and without (probing).

Run through ``python -m bench --only isolated,unannounced,rise``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

ISOLATED_429 = 0.05
RATE_WINDOW_S = 3.0


def bench_isolated(emu: Any, tmp: Path, run_ours: Any, n: int, latency: float = 0.2,
                   concurrency: int = 64) -> dict[str, Any]:
    """Wall time with 5 % isolated header-less 429s over the same batch without them."""
    out: dict[str, Any] = {"n": n, "latency_s": latency, "concurrency": concurrency}
    for name, share in (("clean", 0.0), ("isolated_429s", ISOLATED_429)):
        emu.reset()
        emu.configure(latency=latency, rpm_limit=None, tpm_limit=None, quota_headers=False,
                      rate_429_isolated_bare=share, seed=11)
        started = time.monotonic()
        manifest = run_ours(str(tmp / f"isolated-{name}"), prompts=[f"{name} {i}" for i in range(n)],
                            concurrency=concurrency, max_retries=8)
        out[name] = {"wall_s": round(time.monotonic() - started, 2), "succeeded": manifest["counts"]["succeeded"],
                     "requests": manifest["requests"], "pacing": manifest["pacing"]["description"]}
    emu.configure(quota_headers=True, rate_429_isolated_bare=0.0)
    out["ratio"] = round(out["isolated_429s"]["wall_s"] / out["clean"]["wall_s"], 3)
    return out


def _admitted(records: list[dict[str, Any]]) -> list[float]:
    return sorted(r["t"] for r in records if r["status"] == 200)


def bench_unannounced(emu: Any, tmp: Path, run_ours: Any, sizes: dict[str, int], limit: int = 300,
                      latency: float = 0.05, concurrency: int = 64) -> dict[str, Any]:
    """The rate achieved after the first 20 s under a limit no header announces."""
    out: dict[str, Any] = {"limit_per_min": limit}
    for name, window in (("per_second", 1.0), ("sliding_minute", 60.0)):
        n = sizes[name]
        emu.reset()
        emu.configure(latency=latency, rpm_limit=limit, tpm_limit=None, quota_headers=False, limit_window=window)
        started = time.monotonic()
        manifest = run_ours(str(tmp / f"unannounced-{name}"), prompts=[f"{name} {i}" for i in range(n)],
                            concurrency=concurrency, max_retries=20)
        log = sorted(emu.log(), key=lambda r: r["t"])
        first, last = log[0]["t"], log[-1]["t"]

        def rate_after(skip: float) -> float | None:
            settled = [t for t in _admitted(log) if t >= first + skip]  # noqa: B023 (called in this pass)
            return round(len(settled) / (last - first - skip) * 60, 1) if last - first > skip else None  # noqa: B023

        rate = rate_after(20)
        # The first burst fills a sliding minute at once: nothing gets through until it slides.
        after_window = rate_after(max(20, window))
        after = [r for r in log if r["t"] >= first + 20]
        out[name] = {
            "n": n, "window_s": window, "wall_s": round(time.monotonic() - started, 1),
            "succeeded": manifest["counts"]["succeeded"],
            "rate_after_20s_per_min": rate,
            "of_limit": None if rate is None else round(rate / limit, 3),
            "rate_after_first_window_per_min": after_window,
            "of_limit_after_first_window": None if after_window is None else round(after_window / limit, 3),
            "429s": sum(r["status"] == 429 for r in log), "requests": len(log),
            "429s_after_20s": sum(r["status"] == 429 for r in after), "requests_after_20s": len(after),
            "rate_limited_seen": manifest["requests"]["rate_limited"], "pacing": manifest["pacing"]["description"],
        }
    emu.configure(quota_headers=True, limit_window=60.0)
    return out


def bench_rise(emu: Any, tmp: Path, run_ours: Any, n: int, before: int = 120, after: int = 600,
               raise_at_s: float = 30.0, latency: float = 0.05, concurrency: int = 64) -> dict[str, Any]:
    """Seconds from raising the limit until the achieved rate reaches 80 % of the new one."""
    out: dict[str, Any] = {"before_per_min": before, "after_per_min": after, "raised_at_s": raise_at_s, "n": n}
    for name, headers, window in (("quota_headers", True, 60.0), ("no_headers_probing", False, 1.0)):
        emu.reset()
        emu.configure(latency=latency, rpm_limit=before, tpm_limit=None, quota_headers=headers, limit_window=window)
        raised: list[float] = []
        timer = threading.Timer(raise_at_s, lambda: (emu.configure(rpm_limit=after), raised.append(time.monotonic())))  # noqa: B023
        timer.start()
        try:
            manifest = run_ours(str(tmp / f"rise-{name}"), prompts=[f"{name} {i}" for i in range(n)],
                                concurrency=concurrency, max_retries=20)
        finally:
            timer.cancel()
        admitted = _admitted(emu.log())
        reached = None
        if raised:
            t = raised[0]
            while t < admitted[-1] - RATE_WINDOW_S:
                in_window = sum(1 for u in admitted if t <= u < t + RATE_WINDOW_S)
                if in_window / RATE_WINDOW_S * 60 >= 0.8 * after:
                    reached = round(t + RATE_WINDOW_S - raised[0], 1)
                    break
                t += 0.25
        out[name] = {"window_s": window, "seconds_to_80_percent": reached,
                     "429s": sum(r["status"] == 429 for r in emu.log()),
                     "succeeded": manifest["counts"]["succeeded"], "pacing": manifest["pacing"]["description"]}
    emu.configure(quota_headers=True, limit_window=60.0)
    return out
