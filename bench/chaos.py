"""Chaos: the same batch with and without the emulator's fault mix, side by side.

About 10 % 429 (half with ``Retry-After``, half with only ``x-ratelimit-reset-*``), 5 % 500/503,
and 1 % replies that hang far past ``request_timeout``. Both runs go
through ``GradientBatchOperator.execute`` with the same public arguments; only the faults differ.
Run through ``python -m bench --only chaos``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from airflow_gradient.testing.emulator.faults import CHAOS_MIX

HANG_SECONDS = 120.0


def operator_arguments(latency: float, concurrency: int) -> dict[str, Any]:
    """The operator's knobs for a faulty service.

    ``request_timeout`` turns a hung attempt into a retried timeout (the default read timeout is
    600 s); three latencies leave room for a slow reply, which must never time out after the
    server generated it (it would be paid twice). At 18 % faults the default 2 retries would fail
    about 0.6 % of items; 8 make that about 2e-7. ``item_timeout`` stays unset: reaching it fails
    the item instead of retrying it.
    """
    return {"max_concurrency": concurrency, "request_timeout": max(3 * latency, 1.0), "max_retries": 8,
            "max_output_tokens": 20, "progress_interval": 60}


def bench_chaos(emu: Any, tmp: Path, n: int, latency: float = 1.0, concurrency: int = 64) -> dict[str, Any]:
    """Wall time of ``n`` items with the fault mix over the same without; every item must succeed
    and be generated exactly once in both runs."""
    out: dict[str, Any] = {"n": n, "latency_s": latency, "concurrency": concurrency,
                           "arguments": operator_arguments(latency, concurrency)}
    try:
        for name, faults in (("clean", dict.fromkeys(CHAOS_MIX, 0.0)), ("chaos", CHAOS_MIX)):
            out[name] = _run(emu, tmp, name, n, latency, concurrency, faults)
    finally:
        # The emulator outlives this bench: the benches after it must not meet its faults.
        emu.configure(**dict.fromkeys(CHAOS_MIX, 0.0))
    out["ratio"] = round(out["chaos"]["wall_s"] / out["clean"]["wall_s"], 2)
    return out


def _run(emu: Any, tmp: Path, name: str, n: int, latency: float, concurrency: int,
         faults: dict[str, float]) -> dict[str, Any]:
    from airflow_gradient import GradientBatchOperator

    emu.reset()
    emu.configure(latency=latency, hang_seconds=HANG_SECONDS, rpm_limit=None, tpm_limit=None, **faults)
    prompts = [f"{name} prompt {i}" for i in range(n)]
    operator = GradientBatchOperator(task_id=f"bench_{name}", inputs=prompts, output_path=str(tmp / name),
                                     **operator_arguments(latency, concurrency))
    started = time.monotonic()
    manifest = operator.execute({})
    wall = time.monotonic() - started
    generated = emu.generated_counts()
    return {
        "wall_s": round(wall, 1),
        "counts": manifest["counts"],
        "requests": manifest["requests"],
        "faults_served": dict(Counter(r["fault"] for r in emu.log() if r["fault"])),
        "exactly_once": sorted(generated) == sorted(prompts) and set(generated.values()) == {1},
    }
