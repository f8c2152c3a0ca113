"""One account's budget shared by a common.ai agent task and a batch. Run through ``python -m bench --only common_ai``.

Two tasks, each its own process, start together on one emulated account that admits 10 requests
in any second (``rpm_limit`` 600 over a 1 s window, quota headers on): an agent task making
``agent_calls`` Chat Completions calls through a ``pydanticai_gradient`` connection (agent runs of
two calls each, a tool call and the answer, ``agent_concurrency`` at a time), and a
``GradientBatchOperator`` of ``items`` items. Side by side in one run:

- ``shared``: the agent's connection borrows the batch's ``gradient`` connection
  (``gradient_conn_id``), whose ``rate_limit_store`` names a Redis connection: one pace for both.
- ``generic``: what a user has without this provider's connection type: common.ai's generic
  ``pydanticai`` connection pointed at the base URL (the openai SDK's own retries), and the batch
  pacing itself in memory. The two do not know about each other.

Figures: 429s in all, and the admitted rate over the run as a share of the limit. Redis on
127.0.0.1:6379, database :data:`REDIS_DB` (flushed before and after).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

REDIS_DB = 13
STORE_CONN = "common_ai_store"
MODEL = "llama3.3-70b-instruct"
LIMIT_PER_S = 10
ROOT = Path(__file__).resolve().parents[1]


class Account(Protocol):
    """The emulator, in-process (tests) or a child process (``python -m bench``)."""

    @property
    def base_url(self) -> str: ...

    def configure(self, **fields: Any) -> Any: ...

    def reset(self) -> None: ...


def connections_env(base_url: str, key: str, mode: str) -> dict[str, str]:
    """The Airflow connections of both tasks: ``gradient_batch`` for the batch, ``gradient_agent``
    for the agent (``pydanticai_gradient`` borrowing the batch's in ``shared`` mode)."""
    from airflow_gradient.testing import connection_env

    shared = mode == "shared"
    store = {"conn_type": "redis", "host": "127.0.0.1", "port": 6379, "extra": {"db": REDIS_DB}}
    batch_extra = {"rate_limit_store": STORE_CONN} if shared else {}
    if shared:
        agent = {"conn_type": "pydanticai_gradient", "extra": {"gradient_conn_id": "gradient_batch"}}
    else:
        agent = {"conn_type": "pydanticai", "host": base_url, "password": key,
                 "extra": {"model": f"openai-chat:{MODEL}"}}
    return {
        **connection_env(base_url, key, conn_id="gradient_batch", model=MODEL, max_retry_wait=10, **batch_extra),
        f"AIRFLOW_CONN_{STORE_CONN.upper()}": json.dumps(store),
        "AIRFLOW_CONN_GRADIENT_AGENT": json.dumps(agent),
    }


def _flush_db() -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.flushdb()
    client.close()


def shared_budget(account: Account, key: str, tmp: Path, *, mode: str = "shared", agent_calls: int = 100,
                  items: int = 500, agent_concurrency: int = 4, batch_concurrency: int = 16) -> dict[str, Any]:
    """Run both tasks at once on ``account`` and measure 429s and the share of the limit used."""
    _flush_db()
    account.reset()
    account.configure(latency=0.05, rpm_limit=LIMIT_PER_S * 60, tpm_limit=None, limit_window=1.0)
    run_dir = tmp / f"common-ai-{mode}"
    run_dir.mkdir(parents=True)
    env = {**os.environ, **connections_env(account.base_url, key, mode), "PYTHONPATH": str(ROOT)}
    sizes = {"agent": (agent_calls, agent_concurrency), "batch": (items, batch_concurrency)}
    children = {
        role: subprocess.Popen([sys.executable, "-m", "bench.common_ai", role, str(run_dir), str(n), str(c)], env=env,
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=(run_dir / f"{role}.log").open("w"), text=True)
        for role, (n, c) in sizes.items()
    }
    try:
        while len(list(run_dir.glob("ready-*"))) < len(children):  # imports done in both: start together
            for role, child in children.items():
                if child.poll() is not None:
                    log = (run_dir / f"{role}.log").read_text()[-2000:]
                    raise RuntimeError(f"the {role} task ({mode}) died before starting: {log}")
            time.sleep(0.1)
        started = time.monotonic()
        (run_dir / "go").touch()
        outputs = {role: child.communicate(timeout=900)[0] for role, child in children.items()}
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
    _flush_db()
    for role, child in children.items():
        if child.returncode != 0:
            raise RuntimeError(f"the {role} task ({mode}) failed: {(run_dir / f'{role}.log').read_text()[-3000:]}")
    done = {role: json.loads(text.strip().splitlines()[-1]) for role, text in outputs.items()}
    return {"mode": mode, "wall_s": round(time.monotonic() - started, 1), **done,
            **rate_figures(_emulator_log(account.base_url))}


def bench_common_ai(account: Account, tmp: Path, sizes: tuple[int, int]) -> dict[str, Any]:
    """Both modes side by side: ``sizes`` is (agent calls, batch items)."""
    from bench.harness import KEY

    agent_calls, items = sizes
    return {mode: shared_budget(account, KEY, tmp, mode=mode, agent_calls=agent_calls, items=items)
            for mode in ("shared", "generic")}


def rate_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """429s in all, and admitted requests per second over the run against the limit."""
    admitted = sorted(r["t"] for r in records if r["status"] == 200)
    span = admitted[-1] - admitted[0] if len(admitted) > 1 else 0.0
    rate = (len(admitted) - 1) / span if span else 0.0
    by_path: dict[str, int] = {}
    for r in records:
        by_path[r["path"]] = by_path.get(r["path"], 0) + 1
    return {"requests": len(records), "by_path": by_path, "admitted": len(admitted),
            "429s": sum(1 for r in records if r["status"] == 429),
            "admitted_per_s": round(rate, 2), "of_limit": round(rate / LIMIT_PER_S, 4)}


def _emulator_log(base_url: str) -> list[dict[str, Any]]:
    data = httpx.get(base_url.removesuffix("/v1") + "/_emulator/log", timeout=60).json()
    return data["records"] if isinstance(data, dict) else data


# -- the two tasks, each in its own process ----------------------------------------------------------


def _wait_for_go(run_dir: Path, role: str) -> None:
    (run_dir / f"ready-{role}").touch()
    while not (run_dir / "go").exists():
        time.sleep(0.02)


def _agent_task(run_dir: Path, calls: int, concurrency: int) -> None:
    """An agent task: ``calls // 2`` runs of an agent with one tool (a call, then the answer)."""
    from pydantic_ai import Agent
    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook

    agent: Agent[object, str] = PydanticAIHook.get_hook("gradient_agent").create_agent(instructions="Use the tool.")

    @agent.tool_plain
    def stock(sku: str) -> str:
        """How many of ``sku`` are in stock."""
        return f"{len(sku)} in stock"

    failures: list[str] = []

    async def runs() -> int:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> int:
            async with gate:
                try:
                    return (await agent.run(f"stock of sku-{i}?")).usage.requests
                except Exception as exc:  # a run the account refused for good: a figure, not a crash
                    failures.append(type(exc).__name__)
                    return 0

        return sum(await asyncio.gather(*(one(i) for i in range(calls // 2))))

    _wait_for_go(run_dir, "agent")
    started = time.monotonic()
    requests = asyncio.run(runs())
    print(json.dumps({"agent": {"requests": requests, "failed_runs": len(failures), "errors": sorted(set(failures)),
                                "wall_s": round(time.monotonic() - started, 1)}}))


def _batch_task(run_dir: Path, items: int, concurrency: int) -> None:
    from airflow_gradient import GradientBatchOperator

    operator = GradientBatchOperator(
        task_id="batch", gradient_conn_id="gradient_batch", inputs=[f"item {i}" for i in range(items)],
        output_path=str(run_dir / "out"), max_concurrency=concurrency, max_output_tokens=20, progress_interval=600,
    )
    _ = operator.hook.settings  # the connection read before the start line
    _wait_for_go(run_dir, "batch")
    started = time.monotonic()
    manifest = operator.execute({})
    print(json.dumps({"batch": {"counts": manifest["counts"], "rate_limited": manifest["requests"]["rate_limited"],
                                "pacing": manifest["pacing"]["description"],
                                "wall_s": round(time.monotonic() - started, 1)}}))


if __name__ == "__main__":
    role, directory, size, parallel = sys.argv[1:5]
    (_agent_task if role == "agent" else _batch_task)(Path(directory), int(size), int(parallel))
