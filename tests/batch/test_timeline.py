"""The manifest's timeline: bounded however long the batch ran, first and last kept, pauses kept."""

from __future__ import annotations

import pytest

from airflow_gradient.batch.timeline import MAX_SAMPLES, Timeline, downsample, merge_shards


def samples(count: int, pause_at: int | None = None) -> list[dict]:
    return [{"t": float(n * 10), "done": n, "requests": 2 * n, "rate_limited": n // 100,
             "requests_per_minute": 60.0, "tokens_per_minute": None, "source": "headers",
             "paused_s": 5.0 if n == pause_at else 0.0} for n in range(count)]


@pytest.mark.parametrize("count", [0, 1, 2, 499, 500])
def test_a_short_timeline_is_kept_whole(count: int) -> None:
    assert downsample(samples(count)) == samples(count)


@pytest.mark.parametrize("count", [501, 1000, 60_480])
def test_a_long_timeline_keeps_at_most_500_evenly_spaced_with_first_and_last(count: int) -> None:
    original = samples(count)
    kept = downsample(original)
    assert len(kept) == MAX_SAMPLES
    assert kept[0] == original[0] and kept[-1] == original[-1]
    times = [s["t"] for s in kept]
    assert times == sorted(set(times))
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) - min(gaps) <= 10.0  # evenly spaced, within one sample interval
    assert original == samples(count)  # pure: the input is left as it was


def test_a_pause_between_kept_samples_is_carried_to_the_next_kept_one() -> None:
    original = samples(5000, pause_at=2503)
    kept = downsample(original, limit=10)
    assert 2503 not in {s["done"] for s in kept}
    (marked,) = [s for s in kept if s["paused_s"] > 0]
    assert marked["paused_s"] == 5.0 and marked["done"] > 2503


def test_the_limit_must_keep_first_and_last() -> None:
    with pytest.raises(ValueError, match="limit must be >= 2"):
        downsample(samples(10), limit=1)


@pytest.mark.parametrize("count", [3, 999, 1000, 1001, 7_777])
def test_a_running_timeline_holds_bounded_memory_and_keeps_the_latest(count: int) -> None:
    timeline = Timeline(limit=500)
    for sample in samples(count, pause_at=count - 2):
        timeline.append(sample)
        assert len(timeline._held) < 1000
    kept = timeline.samples()
    assert len(kept) == min(count, 500)
    assert kept[0]["done"] == 0 and kept[-1]["done"] == count - 1
    assert any(s["paused_s"] == 5.0 for s in kept[-2:])
    times = [s["t"] for s in kept]
    assert times == sorted(set(times))


def shard_samples(count: int, rpm: float, source: str = "headers", paused_at: int = -1) -> list[dict]:
    return [{"t": 10.0 * n, "done": 5 * n, "requests": 6 * n, "rate_limited": n // 2, "requests_per_minute": rpm,
             "tokens_per_minute": None, "source": source, "paused_s": 3.0 if n == paused_at else 0.0}
            for n in range(count)]


def test_shards_timelines_go_on_one_clock_with_their_counters_added_up() -> None:
    # Shard 1 starts 5 s after shard 0 and ends sooner.
    merged = merge_shards([(0.0, shard_samples(4, 300.0)), (5.0, shard_samples(2, 200.0, paused_at=1))])
    assert [s["t"] for s in merged] == [0.0, 5.0, 10.0, 15.0, 20.0, 30.0]
    at = {s["t"]: s for s in merged}
    assert at[0.0]["done"] == 0 and at[0.0]["requests_per_minute"] == 300.0  # shard 1 not started yet
    assert (at[15.0]["done"], at[15.0]["requests"], at[15.0]["rate_limited"]) == (5 + 5, 6 + 6, 0)
    assert at[15.0]["requests_per_minute"] == 500.0 and at[15.0]["paused_s"] == 3.0
    assert at[10.0]["paused_s"] == 0.0
    # Shard 1 has ended: its counters stay, its limit no longer applies.
    assert (at[30.0]["done"], at[30.0]["requests_per_minute"]) == (15 + 5, 300.0)


def test_shards_sharing_one_pace_show_that_one_limit_and_stay_bounded() -> None:
    shared = "headers, shared via gradient_pacing"
    merged = merge_shards([(0.0, shard_samples(400, 600.0, shared)), (3.0, shard_samples(400, 600.0, shared))])
    assert len(merged) == MAX_SAMPLES and merged[0]["t"] == 0.0 and merged[-1]["t"] == 3993.0
    assert {s["requests_per_minute"] for s in merged} == {600.0}
    assert merged[-1]["done"] == 2 * 5 * 399
    assert merge_shards([]) == [] and merge_shards([(0.0, [])]) == []
