"""What every bench shares: the emulator in its own process, the connection to it, one batch run
through the operator's code path, the rate a server saw, printing figures. Benches import from
here, never from :mod:`bench.run`, which only lists and drives them."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

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
    from airflow_gradient.batch.in_task.engine import EngineSettings
    from airflow_gradient.batch.in_task.pacing import AdaptiveRateLimiter
    from airflow_gradient.batch.in_task.runner import run_batch
    from airflow_gradient.batch.inputs import BatchInputs
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



def warm_up(emu: Emulator, tmp: Path) -> None:
    """One small batch and one SDK call first, so that no figure includes importing modules."""
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None)
    run_ours(str(tmp / "warm-up"), prompts=[f"warm-up {i}" for i in range(10)])
    asyncio.run(openai_semaphore_gather(emu.base_url, ["warm-up"], 1))


def rate_stats(records: list[dict[str, Any]], limit: int, skip: int = 0) -> dict[str, Any]:
    """What the emulator admitted of ``records``, against a ``limit`` per minute (the first ``skip``
    admitted requests, a burst before pacing, not counted in the rate)."""
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


def show(title: str, figures: dict[str, Any]) -> None:
    """Print one bench's figures under its goal."""
    print(f"\n== {title}\n{json.dumps(figures, indent=2)}", flush=True)
