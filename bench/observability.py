"""What tracing costs a batch (issue 20): N items at zero latency, concurrency C, five ways, all in
ONE child process, interleaved round by round (each round starting one way further on, odd rounds
in reverse order), so that a shared machine's load falls on every way alike:

- ``today``: the batch without the feature's calls: ``CallTrace`` makes and does nothing, the item
  scope is a ``nullcontext``, no batch span, no tracer provider (the nearest to the code before
  spans that today's engine allows: main's pre-tracing commit differs in much else);
- ``no_provider``: the code as shipped, no tracer provider (goal: within 3 % of ``today``);
- ``off``: the code as shipped, an SDK provider set, ``tracing="off"`` (no goal: a reference);
- ``sdk_items``: an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` on an exporter that drops
  everything, ``tracing="items"`` (goal: within 20 %);
- ``sdk_batch``: the same provider, ``tracing="batch"`` (goal: within 3 %).

The API sets the global tracer provider once per process; the bench swaps the API's private slot
between runs (what OpenTelemetry's own test helpers do), and ``spans.tracer()`` follows it.

The figure is the client's CPU time per item (``time.process_time``: this process, every thread,
the span processor's worker included; the emulator is another process), which a busy machine
disturbs far less than wall time. Each way is compared with ``today`` of the same round (median of
the rounds' ratios) and best against best. Beside it, the cost of the tracing path alone: the
calls one attempt makes (``CallTrace``, the item scope, ``attempt()``, ``reply()``) in a loop of
``calls`` on a real reply, no HTTP, as CPU per attempt and as a share of ``today``'s CPU per item;
and the garbage collector's CPU per item in each way.

``python -m bench.observability profile N``: (on its own emulator) cProfile of ``sdk_items`` over N items, the top
entries and the share of OpenTelemetry and ``airflow_gradient/observability`` in the client's CPU.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

WAYS = ("today", "no_provider", "off", "sdk_items", "sdk_batch")
GOALS = {"no_provider": 0.03, "sdk_items": 0.20, "sdk_batch": 0.03}
TRACING = {"today": "items", "no_provider": "items", "off": "off", "sdk_items": "items", "sdk_batch": "batch"}


def bench_observability(emu: Any, tmp: Path, n: int, concurrency: int = 64, rounds: int = 5,
                        calls: int = 20_000) -> dict[str, Any]:
    with emu.forgetting():  # the emulator's request log would hold every body of every round
        done = subprocess.run([sys.executable, "-m", "bench.observability", "rounds", str(tmp / "otel"), str(n),
                               str(concurrency), str(rounds), str(calls)],
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the observability child failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- the child --------------------------------------------------------------------------------------


def _rounds(out: str, n: int, concurrency: int, rounds: int, calls: int) -> dict[str, Any]:
    from bench.harness import run_ours

    ways = _Ways()
    for way in WAYS:  # a warm-up of each way: imports, pools and caches outside the figures
        with ways.use(way):
            run_ours(f"{out}-warm-{way}", prompts=[f"warm-up {i}" for i in range(300)], concurrency=concurrency)
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    collector = _GcClock()
    for number in range(rounds):
        order = WAYS[number % len(WAYS):] + WAYS[:number % len(WAYS)]
        # Odd rounds run backwards, so no way always follows the same one (a way's cost can carry
        # over to the next run: the heap it grew, caches it filled).
        for way in order if number % 2 == 0 else order[::-1]:
            gc.collect()
            with ways.use(way) as batch:
                started, cpu = time.monotonic(), time.process_time()
                with collector.running(), batch() as trace:
                    manifest = run_ours(f"{out}-{way}-{number}", concurrency=concurrency,
                                        prompts=[f"observed prompt {i}" for i in range(n)])
                    trace.finish(manifest)
                ways.flush()
                wall, cpu_s = time.monotonic() - started, time.process_time() - cpu
            assert manifest["counts"]["succeeded"] == n, manifest["counts"]
            runs[way].append({"cpu_ms_per_item": cpu_s / n * 1000, "items_per_s": n / wall,
                              "gc_ms_per_item": collector.seconds / n * 1000})
    attempt_us = {way: _attempt_cost(ways, way, calls) for way in WAYS}
    return _summary(runs, attempt_us, n=n, concurrency=concurrency, rounds=rounds, calls=calls)


def _summary(runs: dict[str, list[dict[str, float]]], attempt_us: dict[str, float], **setup: Any) -> dict[str, Any]:
    def per_round(way: str, key: str) -> list[float]:
        return [r[key] for r in runs[way]]

    today_cpu, today_rate = per_round("today", "cpu_ms_per_item"), per_round("today", "items_per_s")
    cpu: dict[str, Any] = {}
    wall: dict[str, Any] = {}
    for way in WAYS:
        mine_cpu, mine_rate = per_round(way, "cpu_ms_per_item"), per_round(way, "items_per_s")
        cpu[way] = {"median_ms": round(statistics.median(mine_cpu), 4), "best_ms": round(min(mine_cpu), 4),
                    "all_ms": [round(v, 4) for v in mine_cpu],
                    "gc_median_ms": round(statistics.median(per_round(way, "gc_ms_per_item")), 4)}
        wall[way] = {"median_items_per_s": round(statistics.median(mine_rate), 1),
                     "best_items_per_s": round(max(mine_rate), 1)}
        if way != "today":
            ratios = [m / t - 1 for m, t in zip(mine_cpu, today_cpu)]
            cpu[way]["vs_today_rounds"] = [round(r, 4) for r in ratios]
            cpu[way]["vs_today_median"] = round(statistics.median(ratios), 4)
            cpu[way]["vs_today_best"] = round(min(mine_cpu) / min(today_cpu) - 1, 4)
            wall[way]["slower_median"] = round(statistics.median(t / m - 1 for m, t in zip(mine_rate, today_rate)), 4)
            wall[way]["slower_best"] = round(max(today_rate) / max(mine_rate) - 1, 4)
    base = statistics.median(today_cpu) * 1000  # us of client CPU per item, today
    isolated = {way: {"us_per_attempt": round(us - attempt_us["today"], 2),
                      "share_of_today_item": round((us - attempt_us["today"]) / base, 4)}
                for way, us in attempt_us.items() if way != "today"}
    return {**setup, "cpu_per_item": cpu, "wall": wall, "tracing_path_alone": isolated,
            "goals": {way: f"<= {goal:.0%}" for way, goal in GOALS.items()}}


def _attempt_cost(ways: _Ways, way: str, calls: int) -> float:
    """CPU microseconds of ``calls`` attempts' tracing calls on a real reply (no HTTP), per attempt;
    for ``today``, the bare loop."""
    from airflow_gradient.hooks.gradient import GradientHook
    from airflow_gradient.observability import scope
    from airflow_gradient.observability.spans import CallTrace

    hook = GradientHook()
    body = {"model": "bench-model", "input": "observed prompt", "max_output_tokens": 20}
    reply = hook.create_response(dict(body))
    base_url = hook.settings.base_url
    hook.close()
    with ways.use(way) as batch, batch():
        gc.collect()
        cpu = time.process_time()
        if way == "today":
            for _ in range(calls):
                pass
        else:
            for i in range(calls):
                with scope.item(f"item-{i}"):
                    call = CallTrace("/responses", body, base_url)
                    with call.attempt() as span:
                        span.reply(reply)
        ways.flush()
        return (time.process_time() - cpu) / calls * 1e6


class _GcClock:
    """CPU time the garbage collector takes while :meth:`running` (``seconds``): a way that makes
    more objects per item also pays for more collections, which a short loop does not show."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def _tick(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.process_time()
        else:
            self.seconds += time.process_time() - self._began

    @contextmanager
    def running(self) -> Iterator[None]:
        self.seconds = 0.0
        gc.callbacks.append(self._tick)
        try:
            yield
        finally:
            gc.callbacks.remove(self._tick)


class _Ways:
    """Puts this process in one of the :data:`WAYS` at a time."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        self.sdk = TracerProvider()
        self.sdk.add_span_processor(BatchSpanProcessor(Drop()))
        self.provider: Any = None

    def flush(self) -> None:
        """Every span ended so far is through the processor (its CPU inside the figure)."""
        if self.provider is not None:
            self.provider.force_flush()

    @contextmanager
    def use(self, way: str) -> Iterator[Callable[[], Any]]:
        """Run ``way`` inside; yields what makes the batch span (a no-op for ``today``)."""
        from opentelemetry import trace

        from airflow_gradient.observability import Telemetry
        from airflow_gradient.observability.batch_spans import BatchTrace, batch_span

        self.provider = self.sdk if way.startswith("sdk_") or way == "off" else None
        trace._TRACER_PROVIDER = self.provider  # type: ignore[attr-defined]  # None: the API's proxy
        undo = _stub_tracing() if way == "today" else (lambda: None)
        try:
            if way == "today":
                yield lambda: nullcontext(BatchTrace(None))
            else:
                yield lambda: batch_span(Telemetry(tracing=TRACING[way], task_id="bench"))  # type: ignore[arg-type]
        finally:
            undo()
            trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


def _stub_tracing() -> Callable[[], None]:
    """The batch without the feature's per-call work; returns what puts it back."""
    from airflow_gradient.batch.in_task import engine
    from airflow_gradient.observability import spans

    saved = spans.CallTrace.__init__, spans.CallTrace.attempt, engine.observed_item

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        self._held = None

    spans.CallTrace.__init__ = init  # type: ignore[method-assign]
    spans.CallTrace.attempt = lambda self: spans._NO_ATTEMPT  # type: ignore[method-assign,assignment]
    engine.observed_item = lambda custom_id: nullcontext()  # type: ignore[assignment]

    def undo() -> None:
        spans.CallTrace.__init__, spans.CallTrace.attempt, engine.observed_item = saved  # type: ignore[method-assign]

    return undo


def _profile(out: str, n: int, concurrency: int) -> None:
    """cProfile of ``sdk_items``: the top entries by own time, and the tracing share."""
    import cProfile
    import pstats

    from bench.harness import run_ours

    ways = _Ways()
    with ways.use("sdk_items") as batch:
        run_ours(f"{out}-warm", prompts=[f"warm-up {i}" for i in range(300)], concurrency=concurrency)
        profiler = cProfile.Profile()
        profiler.enable()
        with batch() as trace:
            trace.finish(run_ours(out, prompts=[f"observed prompt {i}" for i in range(n)], concurrency=concurrency))
        ways.flush()
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    tracing = {"opentelemetry": 0.0, "airflow_gradient/observability": 0.0}
    for (filename, _, _), row in stats.stats.items():  # type: ignore[attr-defined]
        for part in tracing:
            if part in filename:
                tracing[part] += row[2]
    print(f"own time of everything: {total:.2f} s over {n} items")
    for part, seconds in tracing.items():
        print(f"  {part}: {seconds:.2f} s ({seconds / total:.1%}), {seconds / n * 1e6:.1f} us per item")
    stats.sort_stats("tottime").print_stats(25)
    print("the tracing entries alone:")
    stats.sort_stats("tottime").print_stats("opentelemetry|observability", 20)
    print("what an attempt's own steps call:")
    stats.print_callees(r"observability/spans.py:\d+\((__init__|__enter__|reply|_end)\)")


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "rounds":
        print(json.dumps(_rounds(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))))
    elif command == "profile":  # on its own: starts an emulator
        import os
        import tempfile

        from bench.harness import Emulator, connection_env

        emulator = Emulator()
        os.environ.update(connection_env(emulator.base_url))
        try:
            emulator.configure(latency=0.0)
            with tempfile.TemporaryDirectory(prefix="gradient-bench-") as scratch, emulator.forgetting():
                _profile(f"{scratch}/otel", int(rest[0]), int(rest[1]) if len(rest) > 1 else 64)
        finally:
            emulator.close()
    else:
        raise SystemExit(f"unknown command {command!r}: rounds or profile")
