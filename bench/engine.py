"""The in-task engine against the emulator: wall time against the ideal, throughput against the
``openai`` SDK, against one mapped task per prompt, a told and a learnt rate limit, memory.
Run through ``python -m bench --only ideal,openai,expand,ratelimit,rss``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Emulator, connection_env, openai_semaphore_gather, rate_stats, run_ours

def bench_ideal(emu: Emulator, tmp: Path, n: int, latency: float = 0.2, concurrency: int = 64) -> dict[str, Any]:
    emu.reset()
    emu.configure(latency=latency, rpm_limit=None, tpm_limit=None)
    with emu.forgetting():
        manifest = run_ours(str(tmp / "ideal"), prompts=[f"ideal prompt {i}" for i in range(n)],
                            concurrency=concurrency)
    assert manifest["counts"]["succeeded"] == n, manifest["counts"]
    ideal = n * latency / concurrency
    wall = manifest["wall_time_s"]
    return {"n": n, "latency_s": latency, "concurrency": concurrency, "ideal_s": round(ideal, 3),
            "wall_s": wall, "ratio_of_ideal": round(ideal / wall, 3)}


def bench_openai(emu: Emulator, tmp: Path, n: int, concurrency: int = 64, rounds: int = 3) -> dict[str, Any]:
    emu.reset()
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None)
    ours, theirs = [], []
    with emu.forgetting():
        for r in range(rounds):
            prompts = [f"round {r} prompt {i}" for i in range(n)]
            started = time.monotonic()
            manifest = run_ours(str(tmp / f"zero-{r}"), prompts=prompts, concurrency=concurrency)
            ours.append(n / (time.monotonic() - started))
            assert manifest["counts"]["succeeded"] == n
            theirs.append(n / asyncio.run(openai_semaphore_gather(emu.base_url, prompts, concurrency)))
    return {"n": n, "concurrency": concurrency, "ours_req_s": [round(x) for x in ours],
            "openai_req_s": [round(x) for x in theirs], "ratio_best": round(max(ours) / max(theirs), 2),
            "ratio_median": round(sorted(ours)[rounds // 2] / sorted(theirs)[rounds // 2], 2)}


def bench_rate_limit(emu: Emulator, tmp: Path, n_known: int, n_unknown: int, limit: int = 300) -> dict[str, Any]:
    out: dict[str, Any] = {"limit_per_min": limit}
    # The last: issue 18.1, 600/min told against a server counting 10 in any second.
    for name, n, told, window in (("told", n_known, limit, 60.0), ("learnt", n_unknown, None, 60.0),
                                  ("told_600_per_second_window", 2 * n_known, 600, 1.0)):
        emu.reset()
        emu.configure(latency=0.05, rpm_limit=told or limit, tpm_limit=None, limit_window=window)
        concurrency = 64
        started = time.monotonic()
        manifest = run_ours(str(tmp / f"rpm-{name}"), prompts=[f"{name} prompt {i}" for i in range(n)],
                            concurrency=concurrency, requests_per_minute=told)
        stats = rate_stats(emu.log(), told or limit, skip=0 if told else concurrency)
        if window < 60:
            admitted = sorted(r["t"] for r in emu.log() if r["status"] == 200)
            stats["max_in_any_1s"] = max(sum(1 for u in admitted if t <= u < t + 1) for t in admitted)
        stats.update(n=n, wall_s=round(time.monotonic() - started, 1), succeeded=manifest["counts"]["succeeded"],
                     rate_limited_seen=manifest["requests"]["rate_limited"], pacing=manifest["pacing"])
        out[name] = stats
    emu.configure(limit_window=60.0)
    return out


def bench_rss(emu: Emulator, tmp: Path, sizes: list[int]) -> dict[str, Any]:
    emu.reset()
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None)
    out: dict[str, Any] = {}
    with emu.forgetting():
        for n in sizes:
            rows = tmp / f"rows-{n}.jsonl"
            with rows.open("w") as handle:
                for i in range(n):
                    handle.write(json.dumps({"custom_id": f"doc-{i}", "text": f"document {i} " * 8}) + "\n")
            child = subprocess.run(
                [sys.executable, "-m", "bench.engine", str(rows), str(tmp / f"rss-out-{n}")],
                capture_output=True, text=True, env={**os.environ, **connection_env(emu.base_url)}, cwd=ROOT,
            )
            if child.returncode != 0:
                raise RuntimeError(child.stderr[-3000:])
            out[n] = json.loads(child.stdout.strip().splitlines()[-1])
    first, last = out[sizes[0]], out[sizes[-1]]
    out["ratio_largest_to_smallest"] = round(last["peak_rss_mb"] / first["peak_rss_mb"], 3)
    return out


def rss_child(rows_path: str, out_dir: str) -> None:
    started = time.monotonic()
    manifest = run_ours(out_dir, rows_path=rows_path, concurrency=64)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"items": manifest["total"], "succeeded": manifest["counts"]["succeeded"],
                      "wall_s": round(time.monotonic() - started, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}))


EXPAND_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_gradient import GradientResponseOperator

with DAG("bench_expand", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")):
    GradientResponseOperator.partial(task_id="ask", max_output_tokens=20).expand(
        input=[f"mapped prompt {{i}}" for i in range({n})])
"""

BATCH_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_gradient import GradientBatchOperator

with DAG("bench_batch", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")):
    GradientBatchOperator(task_id="ask", inputs=[f"batch prompt {{i}}" for i in range({n})], max_output_tokens=20,
                          output_path="{out}/{{{{ run_id }}}}/", max_concurrency=64, progress_interval=60)
"""


def bench_expand(emu: Emulator, tmp: Path, n_mapped: int, n_batch: int) -> dict[str, Any]:
    emu.reset()
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None)
    home = tmp / "airflow-home"
    (home / "dags").mkdir(parents=True)
    env = {**os.environ, **connection_env(emu.base_url), "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    (home / "dags" / "bench_expand.py").write_text(EXPAND_DAG.format(n=n_mapped))
    (home / "dags" / "bench_batch.py").write_text(BATCH_DAG.format(n=n_batch, out=tmp / "dags-out"))
    out: dict[str, Any] = {}
    for dag_id, n in (("bench_expand", n_mapped), ("bench_batch", n_batch)):
        started = time.monotonic()
        done = subprocess.run([*airflow, "dags", "test", dag_id], env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if done.returncode != 0 or "failed" in done.stdout.splitlines()[-1:]:
            raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
        out[dag_id] = {"prompts": n, "wall_s": round(wall, 1), "prompts_per_s": round(n / wall, 2)}
    out["ratio"] = round(out["bench_batch"]["prompts_per_s"] / out["bench_expand"]["prompts_per_s"], 1)
    return out




if __name__ == "__main__":
    rss_child(sys.argv[1], sys.argv[2])
