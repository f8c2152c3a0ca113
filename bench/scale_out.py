"""Scaling out: the same batch on two workers (two shards) against one worker (the whole batch).

A worker here is an OS process of its own running the operator's code path on its shard
(``shard_index``/``shard_count``), as a Celery worker's task process does; each has the same
``max_concurrency``. The load is latency-bound (every reply takes :data:`LATENCY` s) and the
emulator enforces no limit, so one worker's throughput is its concurrency over the latency, and a
second worker should nearly double it. Throughput is items over the sending time the manifests
report (the slowest shard's), so interpreter start-up and imports are not counted.
Run through ``python -m bench --only workers``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LATENCY = 1.0
CONCURRENCY = 20
ROOT = Path(__file__).resolve().parents[1]


def bench_workers(
    emu: Any, tmp: Path, n: int, latency: float = LATENCY, concurrency: int = CONCURRENCY
) -> dict[str, Any]:
    """Throughput of ``n`` items on one worker and on two; every item must succeed once."""
    from bench.harness import connection_env

    rows = tmp / f"workers-rows-{n}.jsonl"
    with rows.open("w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"custom_id": f"item-{i}", "text": f"item {i}"}) + "\n")
    out: dict[str, Any] = {"n": n, "latency_s": latency, "concurrency_per_worker": concurrency}
    for workers in (1, 2):
        emu.reset()
        emu.configure(latency=latency, rpm_limit=None, tpm_limit=None)
        env = {**os.environ, **connection_env(emu.base_url), "PYTHONPATH": str(ROOT)}
        target = tmp / f"workers-{workers}"
        procs = [subprocess.Popen([sys.executable, "-m", "bench.scale_out", str(rows), str(target), str(index),
                                   str(workers), str(concurrency)], stdout=subprocess.PIPE, text=True, env=env,
                                  cwd=ROOT) for index in range(workers)]
        manifests = []
        for proc in procs:
            stdout, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed with {proc.returncode}: {stdout[-2000:]}")
            manifests.append(json.loads(stdout.strip().splitlines()[-1]))
        succeeded = sum(m["counts"]["succeeded"] for m in manifests)
        generated = emu.generated_counts()
        assert succeeded == n and len(generated) == n and set(generated.values()) == {1}, (succeeded, len(generated))
        wall = max(m["wall_time_s"] for m in manifests)
        out[f"{workers}_worker"] = {"wall_s": wall, "items_per_s": round(n / wall, 1),
                                    "per_worker_items": [m["total"] for m in manifests]}
    out["ideal_one_worker_items_per_s"] = round(concurrency / latency, 1)
    out["ratio"] = round(out["2_worker"]["items_per_s"] / out["1_worker"]["items_per_s"], 2)
    return out


def worker(rows_path: str, out_dir: str, index: int, count: int, concurrency: int) -> None:
    """One worker: shard ``index`` of ``count`` (the whole batch when ``count`` is 1); prints its manifest."""
    from airflow_gradient.batch.inputs import Shard
    from airflow_gradient.batch.parts import shard_dir_name
    from bench.harness import run_ours

    shard = Shard(index, count) if count > 1 else None
    target = Path(out_dir) / shard_dir_name(shard) if shard is not None else Path(out_dir)
    manifest = run_ours(str(target), rows_path=rows_path, shard=shard, concurrency=concurrency)
    print(json.dumps({key: manifest[key] for key in ("total", "counts", "wall_time_s")}))


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
