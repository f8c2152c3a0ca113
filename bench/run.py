"""Benchmarks of GradientBatchOperator's engine against the emulator on loopback. One command:

    .venv/bin/python -m bench            # everything (about 8 minutes)
    .venv/bin/python -m bench --quick    # smaller sizes, for a smoke run
    .venv/bin/python -m bench --only ideal,openai

The emulator runs in its own process (``python -m airflow_gradient.testing.emulator``), so that the client
and the server do not share one interpreter. The in-task batch is driven through
:func:`airflow_gradient.batch.run_batch`, the code the operator's ``execute`` calls; the ``.expand``
comparison runs both DAGs through ``airflow dags test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import httpx

from bench.chaos import bench_chaos
from bench.pacing import bench_isolated, bench_rise, bench_unannounced
from bench.reuse import bench_reuse, bench_reuse_rss
from bench.ui import bench_ui
from bench.scale_out import bench_workers
from bench.shared_pacing import bench_shared_cost, bench_shared_k4
from bench.single_request import bench_single

KEY = "bench-key"
MODEL = "bench-model"
ROOT = Path(__file__).resolve().parents[1]


# -- the emulator process ---------------------------------------------------------------------------


class Emulator:
    """``python -m airflow_gradient.testing.emulator`` in a child process, driven over its HTTP controls."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_gradient.testing.emulator",
             "--port", str(self.port), "--api-key", KEY],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.control = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.control.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.1)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def configure(self, **fields: Any) -> None:
        self.control.post("/_emulator/config", json=fields).raise_for_status()

    def reset(self) -> None:
        self.control.post("/_emulator/reset").raise_for_status()

    def log(self) -> list[dict[str, Any]]:
        data = self.control.get("/_emulator/log").json()
        return data["records"] if isinstance(data, dict) else data

    def generated_counts(self) -> dict[str, int]:
        return self.control.get("/_emulator/generated_counts").json()

    @contextmanager
    def forgetting(self) -> Iterator[None]:
        """Reset the emulator every second while a long run goes on.

        The emulator keeps every request, body included, in its log: clearing it keeps the server's
        memory flat over 100k requests. Only for runs that do not read the log or rely on
        rate-limit windows.
        """
        stop = threading.Event()

        def loop() -> None:
            with httpx.Client(base_url=self.url, timeout=60) as client:
                while not stop.wait(1.0):
                    client.post("/_emulator/reset")

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def close(self) -> None:
        self.control.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def connection_env(base_url: str) -> dict[str, str]:
    from airflow_gradient.testing import connection_env as env_for

    return env_for(base_url, KEY, model=MODEL)


# -- our batch, in process --------------------------------------------------------------------------


def run_ours(
    out_dir: str,
    *,
    prompts: list[str] | None = None,
    rows_path: str | None = None,
    shard: Any = None,
    concurrency: int = 64,
    requests_per_minute: float | None = None,
    max_output_tokens: int = 20,
    max_retries: int | None = None,
    limiter: Any = None,
) -> dict[str, Any]:
    """One batch through the operator's code path; returns its manifest."""
    from airflow.sdk import ObjectStoragePath
    from airflow_gradient.batch import AdaptiveRateLimiter, BatchInputs, EngineSettings, run_batch
    from airflow_gradient.batch.in_task.runner import pool_hooks

    render = None
    if rows_path is not None:
        render = lambda row: f"Summarise: {row['text']}"  # noqa: E731
    inputs = BatchInputs(
        inputs=prompts,
        rows_path=ObjectStoragePath(rows_path) if rows_path else None,
        render=render,
        shared={"max_output_tokens": max_output_tokens},
        default_model=MODEL,
        shard=shard,
    )
    return run_batch(
        hooks=pool_hooks("gradient_default", concurrency, max_retries),
        inputs=inputs,
        limiter=limiter or AdaptiveRateLimiter(requests_per_minute),
        settings=EngineSettings(max_concurrency=concurrency, progress_interval=30),
        output_path=ObjectStoragePath(out_dir),
    )


async def openai_semaphore_gather(base_url: str, prompts: list[str], concurrency: int) -> float:
    """The hand-written alternative: ``openai.AsyncOpenAI`` + a semaphore + ``asyncio.gather``."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=2)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> str:
        async with semaphore:
            reply = await client.responses.create(model=MODEL, input=prompt, max_output_tokens=20)
            return reply.output_text

    started = time.monotonic()
    texts = await asyncio.gather(*(one(p) for p in prompts))
    elapsed = time.monotonic() - started
    await client.close()
    assert len(texts) == len(prompts)
    return elapsed


# -- the benchmarks -------------------------------------------------------------------------------


def warm_up(emu: Emulator, tmp: Path) -> None:
    """One small batch and one SDK call first, so that no figure includes importing modules."""
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None)
    run_ours(str(tmp / "warm-up"), prompts=[f"warm-up {i}" for i in range(10)])
    asyncio.run(openai_semaphore_gather(emu.base_url, ["warm-up"], 1))


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


def _rate_stats(records: list[dict[str, Any]], limit: int, skip: int = 0) -> dict[str, Any]:
    admitted = sorted(r["t"] for r in records if r["status"] == 200)
    paced = admitted[skip:]
    rate = (len(paced) - 1) / (paced[-1] - paced[0]) * 60 if len(paced) > 1 else 0.0
    window_max = max(sum(1 for u in admitted if t <= u < t + 60) for t in admitted)
    # After the first 60 s the window holds only paced requests, not the first burst.
    steady = [t for t in admitted if t >= admitted[0] + 60]
    steady_rate = (len(steady) - 1) / (steady[-1] - steady[0]) * 60 if len(steady) > 1 else None
    statuses = [r["status"] for r in sorted(records, key=lambda r: r["t"])]
    last_429 = max((i for i, s in enumerate(statuses) if s == 429), default=None)
    return {"requests": len(records), "admitted": len(admitted), "429s": statuses.count(429),
            "settled_after_request": None if last_429 is None else last_429 + 1,
            "paced_rate_per_min": round(rate, 1), "of_limit": round(rate / limit, 4),
            "rate_after_first_minute": None if steady_rate is None else round(steady_rate, 1),
            "max_in_any_60s": window_max}


def bench_rate_limit(emu: Emulator, tmp: Path, n_known: int, n_unknown: int, limit: int = 300) -> dict[str, Any]:
    out: dict[str, Any] = {"limit_per_min": limit}
    for name, n, told in (("told", n_known, limit), ("learnt", n_unknown, None)):
        emu.reset()
        emu.configure(latency=0.05, rpm_limit=limit, tpm_limit=None)
        concurrency = 64
        started = time.monotonic()
        manifest = run_ours(str(tmp / f"rpm-{name}"), prompts=[f"{name} prompt {i}" for i in range(n)],
                            concurrency=concurrency, requests_per_minute=told)
        stats = _rate_stats(emu.log(), limit, skip=0 if told else concurrency)
        stats.update(n=n, wall_s=round(time.monotonic() - started, 1), succeeded=manifest["counts"]["succeeded"],
                     rate_limited_seen=manifest["requests"]["rate_limited"], pacing=manifest["pacing"])
        out[name] = stats
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
                [sys.executable, "-m", "bench.run", "--rss-child", str(rows), str(tmp / f"rss-out-{n}")],
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


BENCHES = ("single", "ideal", "openai", "expand", "ratelimit", "rss", "chaos", "isolated", "unannounced", "rise",
           "reuse", "reuse-rss", "shared_k4", "shared_cost", "workers", "ui")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--chaos-latency", type=float, default=1.0, help="emulator latency of the chaos bench, s")
    parser.add_argument("--chaos-concurrency", type=int, default=64, help="max_concurrency of the chaos bench")
    parser.add_argument("--reuse-concurrency", type=int, default=50,
                        help="max_concurrency of the reuse bench (10,000 x 200 ms / 50 = a 40 s first run)")
    parser.add_argument("--rss-child", nargs=2, metavar=("ROWS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    quick = args.quick
    chosen = args.only.split(",")
    # Before Airflow is imported: the hook logs a warning per retry, hundreds under chaos, and the
    # figures count them anyway.
    os.environ.setdefault("AIRFLOW__LOGGING__NAMESPACE_LEVELS", "airflow.task.hooks=ERROR")
    emu = Emulator()
    os.environ.update(connection_env(emu.base_url))
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="gradient-bench-") as tmp_name:
            tmp = Path(tmp_name)
            warm_up(emu, tmp)
            if "single" in chosen:
                results["single"] = bench_single(emu.base_url, KEY, MODEL, *((50, 3) if quick else (200, 5)))
                _show("single request at zero latency, hook vs openai responses.create (above 1: hook faster)",
                      results["single"])
            if "ideal" in chosen:
                results["ideal"] = bench_ideal(emu, tmp, 400 if quick else 2000)
                _show("wall time vs ideal N*L/C (goal >= 0.90)", results["ideal"])
            if "openai" in chosen:
                results["openai"] = bench_openai(emu, tmp, 500 if quick else 2000)
                _show("zero-latency throughput vs openai.AsyncOpenAI + semaphore + gather (goal >= 1.5x)",
                      results["openai"])
            if "expand" in chosen:
                results["expand"] = bench_expand(emu, tmp, 5 if quick else 20, 500 if quick else 2000)
                _show("prompts/s vs one mapped task per prompt, airflow dags test (goal >= 50x)", results["expand"])
            if "ratelimit" in chosen:
                results["ratelimit"] = bench_rate_limit(emu, tmp, 40 if quick else 150, 80 if quick else 420)
                _show("300 requests/min enforced with headers (goal: within 3 %, no 429 once paced)",
                      results["ratelimit"])
            if "rss" in chosen:
                results["rss"] = bench_rss(emu, tmp, [1000, 10000] if quick else [10000, 100000])
                _show("peak RSS, items written to local storage (goal < 300 MB, ratio <= 1.2)", results["rss"])
            if "chaos" in chosen:
                results["chaos"] = bench_chaos(emu, tmp, 400 if quick else 2000, args.chaos_latency,
                                               args.chaos_concurrency)
                _show("wall time with ~18 % faults over the same batch without (goal <= 1.5, exactly once)",
                      results["chaos"])
            if "isolated" in chosen:
                results["isolated"] = bench_isolated(emu, tmp, run_ours, 400 if quick else 2000)
                _show("wall time with 5 % isolated header-less 429s over the same without (goal <= 1.3x)",
                      results["isolated"])
            if "unannounced" in chosen:
                sizes = {"per_second": 150, "sliding_minute": 400} if quick else \
                    {"per_second": 450, "sliding_minute": 900}
                results["unannounced"] = bench_unannounced(emu, tmp, run_ours, sizes)
                _show("300/min enforced, no quota headers: rate after the first 20 s (goal >= 0.85 of the limit)",
                      results["unannounced"])
            if "rise" in chosen:
                results["rise"] = bench_rise(emu, tmp, run_ours, 200 if quick else 400)
                _show("limit raised 120 -> 600/min mid-batch: seconds to 80 % of the new limit (goal <= 10 s)",
                      results["rise"])
            if "ui" in chosen:
                results["ui"] = bench_ui()
                _show("UI nav page, 30 days x 50 DAGs x 20 runs/day, server time (goal < 1 s)", results["ui"])
            if "reuse" in chosen:
                results["reuse"] = bench_reuse(emu, tmp, 1000 if quick else 10_000, 0.2, args.reuse_concurrency)
                _show("second run with 1 % changed, reuse_results_from (goal: sends 1 %, every row, <= 5 % "
                      "of the first run's wall time)", results["reuse"])
            if "reuse-rss" in chosen:
                results["reuse-rss"] = bench_reuse_rss(tmp, 100_000 if quick else 1_000_000)
                _show("scanning 1 million earlier rows (goal: well under 100 MB)", results["reuse-rss"])
            if "shared_k4" in chosen:
                results["shared_k4"] = bench_shared_k4(emu, tmp, 30 if quick else 200)
                _show("K=4 tasks (processes) on one 600/min account, each told the limit: in-memory vs Redis "
                      "(goal with Redis: within 3 %, 0 x 429)", results["shared_k4"])
            if "shared_cost" in chosen:
                results["shared_cost"] = bench_shared_cost(emu, tmp, 500 if quick else 2000, rounds=3 if quick else 5)
                _show("one task at zero latency, Redis limiter vs in-memory: throughput (goal >= 0.8x)",
                      results["shared_cost"])
            if "workers" in chosen:
                results["workers"] = bench_workers(emu, tmp, 200 if quick else 1000)
                _show("two workers vs one, latency-bound, no binding limit: throughput (goal >= 1.7x)",
                      results["workers"])
    finally:
        emu.close()
    print("\nSUMMARY")
    print(json.dumps(results, indent=2))


def _show(title: str, figures: dict[str, Any]) -> None:
    print(f"\n== {title}\n{json.dumps(figures, indent=2)}", flush=True)


if __name__ == "__main__":
    main()
