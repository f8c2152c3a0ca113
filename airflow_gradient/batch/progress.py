"""The counters of a running batch and the progress line they make."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from airflow_gradient.batch.rows import USAGE_KEYS, add_usage
from airflow_gradient.batch.timeline import Timeline
from airflow_gradient.pricing import Spend, SpendByModel


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class BatchProgress:
    """What this attempt of the batch has done so far. ``total`` counts the items it must send."""

    total: int
    started: float = field(default_factory=time.monotonic)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    requests_sent: int = 0
    retries: int = 0
    rate_limited: int = 0
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))
    # What the rows sent cost; reused rows (copied from an earlier run) are counted apart.
    spend: Spend = field(default_factory=Spend)
    reused: int = 0
    reused_usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))
    reused_spend: Spend = field(default_factory=Spend)
    # This attempt's rows by the model that answered them (the manifest's ``models`` adds earlier tries').
    models: SpendByModel = field(default_factory=SpendByModel)
    # One sample per progress interval, for the manifest's ``timeline`` (the UI draws it).
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped

    def record(self, row: dict[str, Any]) -> None:
        """Count one finished row (see :mod:`airflow_gradient.batch.rows` for its shape)."""
        status = row["status"]
        if status == "succeeded":
            self.succeeded += 1
        elif status == "failed":
            self.failed += 1
        else:
            self.skipped += 1
        if row.get("reused"):
            self.reused += 1
            add_usage(self.reused_usage, row)
            self.reused_spend.add_row(row)
            return
        self.retries += max(row.get("attempts", 0) - 1, 0)
        add_usage(self.usage, row)
        self.spend.add_row(row)
        self.models.add_row(row)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, pacing: str) -> str:
        elapsed = max(self.elapsed(), 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 else "?"
        return (
            f"batch: {self.done}/{self.total} done ({self.succeeded} succeeded, {self.failed} failed, "
            f"{self.skipped} skipped), {self.requests_sent / elapsed:.1f} req/s, "
            f"{self.usage['total_tokens']:,} tokens, {self.rate_limited} x 429, {self.spend.describe()}, "
            + (f"{self.reused} reused, " if self.reused else "")
            + f"ETA {eta}, pacing: {pacing}"
        )
