"""Embeddings at batch scale (issue 19), against the emulator in its own process.

- ``embeddings``: N short texts at zero latency, the batch (``run_embeddings_batch``, the code the
  operator's ``execute`` calls, writing Parquet and then JSONL to local disk) against
  ``openai.AsyncOpenAI().embeddings.create`` with the same packs of 2,048 texts and the same
  concurrency (the SDK's default: it asks for base64 and decodes each vector into floats; its
  vectors are only held, not stored). Alternating rounds; inputs per second (best and median
  ratios), and this process's CPU seconds per run, the steadier figure on a shared machine.
- ``embeddings-limit``: an account of 120 requests and 750,000 tokens a minute, announced in the
  quota headers and enforced over a sliding minute; texts of 20 tokens, so tokens bind (37,500 texts
  a minute). The tokens admitted per minute after the first minute (the first holds the burst sent
  before any header was read), and the 429s.
- ``embeddings-rss``: N texts of 20 tokens at 1,024 dimensions from a JSONL rows file to Parquet,
  in a child process; its peak RSS sampled with psutil (and ``ru_maxrss``).
- ``embeddings-split``: one text over the model's context among 2,048, at several positions: the
  requests the batch needed beyond the one a clean pack takes.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACK = 2048
WORDS = ("kettle teapot sencha lamp desk chair boots jacket stove grinder press espresso keyboard "
         "headphones trail road cushion leather steel glass").split()


def _text(i: int, words: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words - 1)) + f" #{i}"


def run_embed(out_dir: str, *, texts: list[str] | None = None, rows_path: str | None = None,
              output_format: str = "jsonl", concurrency: int = 4, requests_per_minute: float | None = None,
              tokens_per_minute: float | None = None, model: str) -> dict[str, Any]:
    """One embeddings batch through the operator's code path; returns its manifest."""
    from airflow.sdk import ObjectStoragePath
    from airflow_gradient.batch.in_task.embeddings.items import Packing, item_builder
    from airflow_gradient.batch.in_task.embeddings.runner import run_embeddings_batch
    from airflow_gradient.batch.in_task.engine import EngineSettings
    from airflow_gradient.batch.in_task.pacing import AdaptiveRateLimiter
    from airflow_gradient.batch.in_task.runner import pool_hooks
    from airflow_gradient.batch.inputs import BatchInputs

    inputs = BatchInputs(inputs=texts, rows_path=ObjectStoragePath(rows_path) if rows_path else None,
                         render=(lambda row: row["text"]) if rows_path else None, build_item=item_builder(model))
    return run_embeddings_batch(
        packing=Packing(PACK), output_format=output_format,
        hooks=pool_hooks("gradient_default", concurrency), inputs=inputs,
        limiter=AdaptiveRateLimiter(requests_per_minute, tokens_per_minute),
        settings=EngineSettings(max_concurrency=concurrency, progress_interval=30),
        output_path=ObjectStoragePath(out_dir),
    )


def _all_succeeded(manifest: dict[str, Any]) -> None:
    if manifest["counts"]["succeeded"] != manifest["total"]:
        from airflow_gradient import read_results

        errors = {json.dumps(row["error"]) for row in read_results(manifest).values() if row["error"]}
        raise AssertionError(f"{manifest['counts']}: {sorted(errors)[:3]}")


async def _openai_embed(base_url: str, key: str, model: str, texts: list[str], concurrency: int) -> float:
    """The hand-written alternative: ``AsyncOpenAI.embeddings.create`` per pack of 2,048, a semaphore."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=2)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(chunk: list[str]) -> int:
        async with semaphore:
            reply = await client.embeddings.create(model=model, input=chunk)
            return len(reply.data)

    started = time.monotonic()
    counts = await asyncio.gather(*(one(texts[i:i + PACK]) for i in range(0, len(texts), PACK)))
    elapsed = time.monotonic() - started
    await client.close()
    assert sum(counts) == len(texts)
    return elapsed


def bench_embeddings(emu: Any, tmp: Path, key: str, model: str, n: int, concurrency: int = 4,
                     rounds: int = 5) -> dict[str, Any]:
    emu.reset()
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None, embedding_dimensions=256)
    texts = [_text(i, 8) for i in range(n)]
    names = ("parquet", "openai", "jsonl")
    rates: dict[str, list[float]] = {name: [] for name in names}
    # This process's CPU seconds per run (every thread, user + system): on a shared machine the
    # wall clock follows the CPU share each run got, the CPU time does not.
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with emu.forgetting():
        asyncio.run(_openai_embed(emu.base_url, key, model, texts[:10], 1))  # warm-up
        for r in range(rounds):
            for name in names:
                started, cpu_started = time.monotonic(), _cpu_seconds()
                if name == "openai":
                    asyncio.run(_openai_embed(emu.base_url, key, model, texts, concurrency))
                else:
                    manifest = run_embed(str(tmp / f"embed-{name}-{r}"), texts=texts, output_format=name,
                                         concurrency=concurrency, model=model)
                    _all_succeeded(manifest)
                rates[name].append(n / (time.monotonic() - started))
                cpu[name].append(_cpu_seconds() - cpu_started)
    best = {name: max(values) for name, values in rates.items()}
    median = {name: statistics.median(values) for name, values in rates.items()}
    least_cpu = {name: min(values) for name, values in cpu.items()}
    return {"n": n, "dimensions": 256, "concurrency": concurrency, "pack": PACK,
            **{f"{name}_inputs_s": [round(x) for x in values] for name, values in rates.items()},
            **{f"{name}_cpu_s": [round(x, 2) for x in values] for name, values in cpu.items()},
            **{f"ratio_{name}_best": round(best[name] / best["openai"], 2) for name in ("parquet", "jsonl")},
            **{f"ratio_{name}_median": round(median[name] / median["openai"], 2) for name in ("parquet", "jsonl")},
            **{f"cpu_ratio_{name}": round(least_cpu["openai"] / least_cpu[name], 2) for name in ("parquet", "jsonl")},
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_embeddings_limit(emu: Any, tmp: Path, model: str, n: int, rpm: int = 120,
                           tpm: int = 750_000) -> dict[str, Any]:
    emu.reset()
    emu.configure(latency=0.0, rpm_limit=rpm, tpm_limit=tpm, limit_window=60.0, embedding_dimensions=64)
    texts = [_text(i, 20) for i in range(n)]  # 20 words: 20 tokens to the emulator
    started = time.monotonic()
    manifest = run_embed(str(tmp / "embed-limit"), texts=texts, concurrency=8, model=model)
    wall = time.monotonic() - started
    records = sorted((r for r in emu.log() if r["path"] == "/v1/embeddings"), key=lambda r: r["t"])
    admitted = [(r["t"], sum(len(t.split()) for t in r["body"]["input"])) for r in records if r["status"] == 200]
    first = admitted[0][0]
    steady = [(t, tokens) for t, tokens in admitted if t >= first + 60]
    steady_rate = (sum(tokens for _, tokens in steady[1:]) / (steady[-1][0] - steady[0][0]) * 60
                   if len(steady) > 1 else None)
    overall = sum(tokens for _, tokens in admitted) / max(admitted[-1][0] - first, 1e-9) * 60
    return {"n": n, "wall_s": round(wall, 1), "requests": len(records),
            "429s": sum(r["status"] == 429 for r in records),
            "succeeded": manifest["counts"]["succeeded"], "tokens": manifest["usage"]["total_tokens"],
            "tokens_per_min_after_first_minute": None if steady_rate is None else round(steady_rate),
            "of_token_limit": None if steady_rate is None else round(steady_rate / tpm, 4),
            "tokens_per_min_overall": round(overall), "pacing": manifest["pacing"]["description"]}


def bench_embeddings_split(emu: Any, tmp: Path, model: str,
                           positions: tuple[int, ...] = (0, 777, 1500, 2047)) -> dict[str, Any]:
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None, embedding_dimensions=16, embedding_context_tokens=100)
    extra: dict[int, int] = {}
    for position in positions:
        emu.reset()
        texts = [_text(i, 8) for i in range(PACK)]
        texts[position] = " ".join(["long"] * 200)
        manifest = run_embed(str(tmp / f"embed-split-{position}"), texts=texts, model=model)
        assert manifest["counts"] == {"succeeded": PACK - 1, "failed": 1, "skipped": 0}, manifest["counts"]
        extra[position] = sum(1 for r in emu.log() if r["path"] == "/v1/embeddings") - 1
    return {"pack": PACK, "extra_requests_by_position": extra, "max_extra": max(extra.values())}


def bench_embeddings_rss(emu: Any, tmp: Path, env: dict[str, str], n: int, concurrency: int = 2) -> dict[str, Any]:
    emu.reset()
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None, embedding_dimensions=1024)
    rows = tmp / f"embed-rows-{n}.jsonl"
    with rows.open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"custom_id": f"t-{i}", "text": _text(i, 20)}) + "\n")
    with emu.forgetting():
        child = subprocess.run(
            [sys.executable, "-m", "bench.embeddings", "--rss-child", str(rows), str(tmp / f"embed-rss-{n}"),
             str(concurrency)],
            capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT,
        )
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-3000:])
    return json.loads(child.stdout.strip().splitlines()[-1])


def rss_child(rows_path: str, out_dir: str, concurrency: int) -> None:
    import psutil

    process, peak, stop = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    manifest = run_embed(out_dir, rows_path=rows_path, output_format="parquet", concurrency=concurrency,
                         model=os.environ.get("BENCH_MODEL", "bench-model"))
    stop.set()
    sampler.join()
    print(json.dumps({"items": manifest["total"], "succeeded": manifest["counts"]["succeeded"],
                      "dimensions": manifest["dimensions"], "concurrency": concurrency,
                      "wall_s": round(time.monotonic() - started, 1),
                      "peak_rss_mb_psutil": round(peak[0] / 2**20, 1),
                      "peak_rss_mb_ru_maxrss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "parts": len(manifest["parts"])}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss-child"]:
        rss_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
