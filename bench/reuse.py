"""Reuse across runs (``reuse_results_from``): a corpus run twice with a few documents changed, and
the memory of scanning a million earlier rows.

- ``reuse``: N documents (a JSONL rows file, as the summarisation example reads) at latency L and
  concurrency C; then a fraction of the documents change and the batch runs again with
  ``reuse_results_from`` naming the first run's output. The second run must send only the changed
  ones, write a row for every document, and take at most 5 % of the first run's wall time.
- ``reuse-rss``: a synthetic part file of 1 million succeeded rows (each with a ``request_digest``)
  is scanned by :meth:`ReuseIndex.scan` in a child process; its peak RSS above the RSS it had
  before the scan (Airflow's imports) is the scan's own memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("ledger invoice region rollout incident budget summary contract review latency customer "
         "quarter forecast deploy network storage policy").split()


def _write_corpus(path: Path, n: int, changed: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    rng = random.Random(13)
    with path.open("w") as handle:
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(40))
            if i in changed:
                text += " (revised)"
            handle.write(json.dumps({"custom_id": f"doc-{i:06d}", "text": text}) + "\n")


def _run(rows: Path, out: Path, concurrency: int, reuse_from: Path | None, model: str) -> dict[str, Any]:
    from airflow.sdk import ObjectStoragePath
    from airflow_gradient.batch.in_task.engine import EngineSettings
    from airflow_gradient.batch.in_task.pacing import AdaptiveRateLimiter
    from airflow_gradient.batch.in_task.runner import run_batch
    from airflow_gradient.batch.inputs import BatchInputs
    from airflow_gradient.batch.in_task.runner import pool_hooks

    inputs = BatchInputs(rows_path=ObjectStoragePath(str(rows)), render=lambda row: f"Summarise: {row['text']}",
                         shared={"max_output_tokens": 20}, default_model=model)
    started, cpu = time.monotonic(), time.process_time()
    manifest = run_batch(
        hooks=pool_hooks("gradient_default", concurrency),
        inputs=inputs,
        limiter=AdaptiveRateLimiter(None),
        settings=EngineSettings(max_concurrency=concurrency, progress_interval=30),
        output_path=ObjectStoragePath(str(out)),
        reuse_results_from=str(reuse_from) if reuse_from else None,
    )
    manifest["measured_wall_s"] = round(time.monotonic() - started, 3)
    manifest["cpu_s"] = round(time.process_time() - cpu, 3)
    return manifest


def _rows_written(out: Path) -> int:
    return sum(1 for part in out.glob("part-*.jsonl") for _ in part.open())


def bench_reuse(emu: Any, tmp: Path, n: int, latency: float, concurrency: int, changed_fraction: float = 0.01,
                model: str = "bench-model") -> dict[str, Any]:
    """Two runs of the same corpus, ``changed_fraction`` of it changed in between."""
    emu.reset()
    emu.configure(latency=latency, rpm_limit=None, tpm_limit=None)
    rows = tmp / "reuse-corpus.jsonl"
    _write_corpus(rows, n)
    with emu.forgetting():
        first = _run(rows, tmp / "reuse-run1", concurrency, None, model)
    changed = set(random.Random(29).sample(range(n), int(n * changed_fraction)))
    _write_corpus(rows, n, changed)
    emu.reset()
    second = _run(rows, tmp / "reuse-run2", concurrency, tmp / "reuse-run1", model)
    sent = len([r for r in emu.log() if r["path"] == "/v1/responses"])
    ratio = second["measured_wall_s"] / first["measured_wall_s"]
    return {
        "n": n, "latency_s": latency, "concurrency": concurrency, "changed": len(changed),
        "first": {"wall_s": first["measured_wall_s"], "sent": first["requests"]["sent"]},
        "second": {"wall_s": second["measured_wall_s"], "cpu_s": second["cpu_s"], "sent_per_emulator": sent,
                   "sent": second["requests"]["sent"], "reused": second["reused"]["items"],
                   "rows_written": _rows_written(tmp / "reuse-run2"),
                   "succeeded": second["counts"]["succeeded"]},
        "second_over_first": round(ratio, 4),
    }


def _synthetic_rows(path: Path, n: int) -> None:
    """``n`` succeeded rows shaped like the engine's, each with its own ``request_digest``."""
    with path.open("w") as handle:
        for i in range(n):
            digest = hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest()
            handle.write(json.dumps({
                "index": i, "custom_id": f"doc-{i:07d}", "status": "succeeded",
                "output_text": f"Summary of document {i}: the quarter closed on budget and the rollout finished.",
                "tool_calls": [], "finish_reason": "stop",
                "usage": {"input_tokens": 812, "output_tokens": 64, "total_tokens": 876, "cached_tokens": 0,
                          "reasoning_tokens": 0, "tool_output_tokens": 0},
                "response_id": f"resp_{i}", "model": "bench-model", "attempts": 1, "latency_s": 0.2,
                "error": None, "request_digest": digest}) + "\n")


def bench_reuse_rss(tmp: Path, n: int) -> dict[str, Any]:
    """Peak RSS of scanning ``n`` earlier rows, in a child process."""
    earlier = tmp / "reuse-earlier"
    earlier.mkdir(exist_ok=True)
    part = earlier / "part-00001-00000.jsonl"
    _synthetic_rows(part, n)
    child = subprocess.run([sys.executable, "-m", "bench.reuse", str(earlier)], capture_output=True, text=True,
                           cwd=ROOT, env=os.environ)
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-3000:])
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    figures["rows_file_mb"] = round(part.stat().st_size / 2**20, 1)
    return figures


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    """Start the peak RSS (VmHWM) again from the current RSS, so that a spike while importing
    Airflow is not taken for the scan's memory (Linux: ``clear_refs`` value 5)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def scan_child(location: str) -> None:
    from airflow.sdk import ObjectStoragePath  # noqa: F401  (imported before the scan, as in a task)
    from airflow_gradient.batch.reuse import ReuseIndex

    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _reset_peak()
    before = _status_mb("VmRSS")
    started = time.monotonic()
    index = ReuseIndex.scan(location)
    assert index is not None
    peak = _status_mb("VmHWM")
    print(json.dumps({"rows": index.summary.reusable, "scan_s": round(time.monotonic() - started, 1),
                      "rss_before_scan_mb": round(before, 1), "peak_rss_during_scan_mb": round(peak, 1),
                      "scan_mb": round(peak - before, 1), "peak_rss_while_importing_mb": round(process_peak, 1)}))


if __name__ == "__main__":
    scan_child(sys.argv[1])
