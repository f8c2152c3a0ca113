"""What tracing costs a batch (issue 20): N items at zero latency, concurrency C, four ways, each in
its own child process (a process sets its global tracer provider once), in turn (each round
starting one way further on), best of R:

- ``today``: the per-attempt span and the batch span replaced by no-ops: the batch as it was before
  spans existed (what remains is making one small object per call);
- ``no_provider``: the code as shipped, with no tracer provider set (goal: within 3 % of today);
- ``sdk_items``: an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` on an exporter that drops
  everything, ``tracing="items"``: a span per attempt (goal: within 20 %);
- ``sdk_batch``: the same provider, ``tracing="batch"``: the batch span only (goal: within 3 %).

The figure is items per second of wall time (and client CPU per item), relative to ``today``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIGS = ("today", "no_provider", "sdk_items", "sdk_batch")


def bench_observability(tmp: Path, n: int, concurrency: int = 64, rounds: int = 2) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {config: [] for config in CONFIGS}
    for round_number in range(rounds):
        # Each round starts one way further on: a load that rises or falls during the run does not
        # always favour the same way.
        for config in CONFIGS[round_number % 4:] + CONFIGS[:round_number % 4]:
            out = tmp / f"otel-{config}-{round_number}"
            done = subprocess.run([sys.executable, "-m", "bench.observability", config, str(out), str(n),
                                   str(concurrency)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{config} failed: {done.stderr[-2000:]}")
            runs[config].append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = {config: max(r["items_per_s"] for r in results) for config, results in runs.items()}
    cpu = {config: min(r["cpu_ms_per_item"] for r in results) for config, results in runs.items()}
    return {
        "n": n, "concurrency": concurrency, "rounds": rounds,
        "items_per_s_best": {config: round(value, 1) for config, value in best.items()},
        "cpu_ms_per_item_best": cpu,
        "slowdown_vs_today": {config: round(best["today"] / best[config] - 1, 4) for config in CONFIGS[1:]},
        "goals": {"no_provider": "<= 0.03", "sdk_items": "<= 0.20", "sdk_batch": "<= 0.03"},
    }


def _child(config: str, out: str, n: int, concurrency: int) -> None:
    if config == "today":
        _stub_spans()
    if config.startswith("sdk_"):
        _install_sdk()
    from airflow_gradient.observability import Telemetry
    from bench.harness import run_ours

    batch_span = _batch_span()

    tracing = "batch" if config == "sdk_batch" else "items"
    with batch_span(Telemetry(tracing=tracing, task_id="bench")):  # type: ignore[arg-type]
        run_ours(out + "-warm-up", prompts=[f"warm-up {i}" for i in range(200)], concurrency=concurrency)
    started, cpu = time.monotonic(), time.process_time()
    with batch_span(Telemetry(tracing=tracing, task_id="bench")) as trace:  # type: ignore[arg-type]
        manifest = run_ours(out, prompts=[f"observed prompt {i}" for i in range(n)], concurrency=concurrency)
        trace.finish(manifest)
    wall, cpu_s = time.monotonic() - started, time.process_time() - cpu
    assert manifest["counts"]["succeeded"] == n, manifest["counts"]
    print(json.dumps({"config": config, "items_per_s": n / wall, "wall_s": round(wall, 3),
                      "cpu_ms_per_item": round(cpu_s / n * 1000, 4)}))


def _stub_spans() -> None:
    """The batch without this feature: no span per attempt, no batch span, no item scope."""
    from contextlib import contextmanager, nullcontext

    from airflow_gradient.batch.in_task import engine
    from airflow_gradient.observability import batch_spans, spans

    spans.CallTrace.attempt = lambda self: spans._NO_ATTEMPT  # type: ignore[method-assign]
    engine.observed_item = lambda custom_id: nullcontext()  # type: ignore[assignment]

    @contextmanager
    def no_batch_span(telemetry: Any) -> Any:
        yield batch_spans.BatchTrace(None)

    batch_spans.batch_span = no_batch_span  # type: ignore[assignment]


def _batch_span() -> Any:
    from airflow_gradient.observability import batch_spans

    return batch_spans.batch_span


def _install_sdk() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
