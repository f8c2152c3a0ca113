"""The manifest's ``timeline``: how a batch went, one sample per progress interval, bounded.

A sample holds counters as they stood at that moment (``done``, ``requests``, ``rate_limited``:
cumulative, so any two samples give the rate between them, whichever samples are kept) and the pace
in force then (``requests_per_minute``, ``tokens_per_minute``, ``source``, ``paused_s``). ``t`` is
seconds since the attempt started; the task instance's start date places it on a clock.

However long the batch runs, the manifest keeps at most :data:`MAX_SAMPLES` of them
(:func:`downsample`), so its XCom stays small: a week at one sample every 10 s is 60,480 samples,
of which 500 evenly spaced ones are kept. The shards of a sharded batch each keep their own;
:func:`merge_shards` makes the whole batch's from them. The Airflow UI plugin
(:mod:`airflow_gradient.plugins`) draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_gradient.batch.in_task.pacing import Pace
    from airflow_gradient.batch.progress import BatchProgress

MAX_SAMPLES = 500

Sample = dict[str, Any]


def downsample(samples: Sequence[Sample], limit: int = MAX_SAMPLES) -> list[Sample]:
    """At most ``limit`` of ``samples``, evenly spaced, the first and the last always among them.

    A kept sample stands for those dropped since the previous kept one: its ``paused_s`` is the
    longest pause among them, so a pause between two kept samples is still marked. Counters need
    no such care: they are cumulative. Pure: ``samples`` is not changed.
    """
    if limit < 2:
        raise ValueError(f"downsample keeps the first and the last sample: limit must be >= 2, got {limit}")
    count = len(samples)
    if count <= limit:
        return [dict(sample) for sample in samples]
    # Strictly increasing for count > limit, from 0 to count - 1.
    kept = [round(i * (count - 1) / (limit - 1)) for i in range(limit)]
    out: list[Sample] = []
    previous = -1
    for index in kept:
        sample = dict(samples[index])
        stood_for = samples[previous + 1:index + 1]
        sample["paused_s"] = max(float(s.get("paused_s") or 0.0) for s in stood_for)
        out.append(sample)
        previous = index
    return out


def sample(elapsed_s: float, progress: BatchProgress, pacing: Pace) -> Sample:
    """The sample for this moment of a batch."""
    return {
        "t": round(elapsed_s, 1),
        "done": progress.done,
        "requests": progress.requests_sent,
        "rate_limited": progress.rate_limited,
        "requests_per_minute": round(pacing.requests_per_minute, 1) if pacing.requests_per_minute else None,
        "tokens_per_minute": round(pacing.tokens_per_minute, 1) if pacing.tokens_per_minute else None,
        "source": pacing.source,
        "paused_s": round(pacing.paused_s, 1),
    }


class Timeline:
    """The samples of one running batch, in memory bounded however long it runs.

    Every ``stride``-th sample is held; when twice ``limit`` are held, every other one is dropped
    and the stride doubles, so those held stay evenly spaced. A dropped sample's pause is carried
    to the next one held (as :func:`downsample` does), and the latest sample is always kept as the
    last. :meth:`samples` returns at most ``limit``.
    """

    def __init__(self, limit: int = MAX_SAMPLES) -> None:
        if limit < 2:
            raise ValueError(f"a timeline keeps the first and the last sample: limit must be >= 2, got {limit}")
        self.limit = limit
        self._held: list[Sample] = []
        self._stride = 1
        self._seen = 0
        self._carry = 0.0  # the longest pause among samples dropped since the last one held
        self._latest: Sample | None = None  # the newest sample when it is not held

    def add(self, elapsed_s: float, progress: BatchProgress, pacing: Pace) -> None:
        """Record this moment of the batch (called once per progress interval, and at the end)."""
        self.append(sample(elapsed_s, progress, pacing))

    def append(self, new: Sample) -> None:
        new = {**new, "paused_s": max(float(new.get("paused_s") or 0.0), self._carry)}
        self._seen += 1
        if (self._seen - 1) % self._stride:
            self._carry, self._latest = new["paused_s"], new
            return
        self._held.append(new)
        self._carry, self._latest = 0.0, None
        if len(self._held) >= 2 * self.limit:
            kept = self._held[::2]
            for index in range(1, len(kept)):  # each kept one stands for the one dropped before it
                kept[index]["paused_s"] = max(kept[index]["paused_s"], self._held[2 * index - 1]["paused_s"])
            # 2 * limit is even: the newest held was dropped, and stays the latest.
            self._latest, self._carry = self._held[-1], self._held[-1]["paused_s"]
            self._held, self._stride = kept, self._stride * 2

    def samples(self) -> list[Sample]:
        """What goes to the manifest: at most ``limit`` samples, the first and the latest included."""
        held = self._held + ([self._latest] if self._latest is not None else [])
        return downsample(held, self.limit)


def merge_shards(shards: Sequence[tuple[float, Sequence[Sample]]], limit: int = MAX_SAMPLES) -> list[Sample]:
    """One timeline for a sharded batch, from each shard's ``(offset, samples)``: ``offset`` is
    when the shard started, in seconds after the first one did, so ``offset + t`` places its samples
    on the batch's clock.

    At each moment any shard took a sample, the counters are added up (a shard counts as its last
    sample so far, nothing before its first). The pace in force adds up the limits of the shards
    still running, except when they share one pace (``source`` says "shared via" a store): then it
    is that one limit. ``paused_s`` is the longest pause of the samples taken at that moment. At
    most ``limit`` samples (:func:`downsample`).
    """
    placed = [[(offset + float(s.get("t", 0.0)), s) for s in samples] for offset, samples in shards if samples]
    moments = sorted({when for shard in placed for when, _ in shard})
    out: list[Sample] = []
    at = [-1] * len(placed)  # each shard's last sample at or before the moment
    for moment in moments:
        merged: Sample = {"t": round(moment, 1), "done": 0, "requests": 0, "rate_limited": 0, "paused_s": 0.0}
        paces: list[tuple[Any, Any, str]] = []
        for index, shard in enumerate(placed):
            while at[index] + 1 < len(shard) and shard[at[index] + 1][0] <= moment:
                at[index] += 1
            if at[index] < 0:
                continue
            when, sample = shard[at[index]]
            for counter in ("done", "requests", "rate_limited"):
                merged[counter] += int(sample.get(counter) or 0)
            if when == moment:
                merged["paused_s"] = max(merged["paused_s"], float(sample.get("paused_s") or 0.0))
            if moment <= shard[-1][0]:  # still running
                paces.append((sample.get("requests_per_minute"), sample.get("tokens_per_minute"),
                              str(sample.get("source") or "")))
        shared = any("shared via" in source for _, _, source in paces)
        for key, position in (("requests_per_minute", 0), ("tokens_per_minute", 1)):
            limits = [float(pace[position]) for pace in paces if pace[position] is not None]
            merged[key] = (max(limits) if shared else round(sum(limits), 1)) if limits else None
        merged["source"] = ", ".join(sorted({source for _, _, source in paces if source}))
        out.append(merged)
    return downsample(out, limit)
