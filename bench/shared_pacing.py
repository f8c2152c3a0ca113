"""Shared pacing (Redis) against in-memory pacing. Run through ``python -m bench --only shared_k4,shared_cost``.

- ``shared_k4``: K batch tasks, each its own process, on one account whose limit the emulator
  enforces with headers, each task told that limit: 429s and the aggregate admitted rate, with the
  in-memory limiter and with the Redis one (``rate_limit_store`` on the Gradient connection).
- ``shared_cost``: one task at zero latency, Redis limiter vs in-memory: throughput ratio.
- ``shared_slow``: one task told 600/min (10 req/s), Redis reached through a proxy adding 100 ms
  to every round trip vs in-memory: throughput ratio (issue 18.7).

Redis on 127.0.0.1:6379, database :data:`BENCH_DB` (flushed before and after).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DB = 7
STORE_CONN = "pace_store"
ROOT = Path(__file__).resolve().parents[1]


def store_env() -> dict[str, str]:
    """The Redis connection the Gradient connection's ``rate_limit_store`` names."""
    value = {"conn_type": "redis", "host": "127.0.0.1", "port": 6379, "extra": {"db": BENCH_DB}}
    return {f"AIRFLOW_CONN_{STORE_CONN.upper()}": json.dumps(value)}


def gradient_env(base_url: str, shared: bool) -> dict[str, str]:
    from bench.harness import KEY, MODEL
    from airflow_gradient.testing import connection_env

    extra = {"rate_limit_store": STORE_CONN} if shared else {}
    return {**connection_env(base_url, KEY, model=MODEL, **extra), **store_env()}


def _flush_db() -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=BENCH_DB)
    client.flushdb()
    client.close()


def bench_shared_k4(emu: Any, tmp: Path, per_task: int, limit: int = 600, k: int = 4,
                    concurrency: int = 16) -> dict[str, Any]:
    """K processes, one account at ``limit``/min, each told ``limit``: in-memory vs Redis."""
    from bench.harness import rate_stats

    out: dict[str, Any] = {"k": k, "per_task": per_task, "limit_per_min": limit, "concurrency": concurrency}
    for mode in ("memory", "redis"):
        _flush_db()
        emu.reset()
        emu.configure(latency=0.05, rpm_limit=limit, tpm_limit=None)
        run_dir = tmp / f"k4-{mode}"
        run_dir.mkdir()
        env = {**os.environ, **gradient_env(emu.base_url, mode == "redis"), "PYTHONPATH": str(ROOT)}
        children = [
            subprocess.Popen([sys.executable, "-m", "bench.shared_pacing", str(run_dir), str(i), str(per_task),
                              str(limit), str(concurrency)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=(run_dir / f"stderr-{i}.txt").open("w"), text=True)
            for i in range(k)
        ]
        while len(list(run_dir.glob("ready-*"))) < k:  # imports done in every child: start together
            if any(child.poll() is not None for child in children):
                raise RuntimeError(f"a {mode} child died before starting")
            time.sleep(0.1)
        started = time.monotonic()
        (run_dir / "go").touch()
        manifests = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
        stats = rate_stats(emu.log(), limit)
        stats.update(wall_s=round(time.monotonic() - started, 1),
                     succeeded=sum(m["counts"]["succeeded"] for m in manifests),
                     pacing=sorted({m["pacing"]["description"] for m in manifests}),
                     store_lost=sum(f.read_text().count("Rate-limit store") for f in run_dir.glob("stderr-*")))
        out[mode] = stats
    _flush_db()
    return out


def bench_shared_cost(emu: Any, tmp: Path, n: int, concurrency: int = 64, rounds: int = 3) -> dict[str, Any]:
    """One task at zero latency: requests/s with the Redis limiter over the in-memory one."""
    from airflow_gradient.batch.in_task.pacing import AdaptiveRateLimiter, limiter_for
    from airflow_gradient.hooks.gradient import GradientHook
    from bench.harness import run_ours

    emu.reset()
    emu.configure(latency=0.0, rpm_limit=None, tpm_limit=None)
    os.environ.update(gradient_env(emu.base_url, shared=True))
    settings = GradientHook().settings
    rates: dict[str, list[float]] = {"memory": [], "redis": []}
    with emu.forgetting():
        for r in range(rounds):
            for mode in ("memory", "redis"):
                _flush_db()
                limiter = AdaptiveRateLimiter() if mode == "memory" else limiter_for(None, settings)
                started = time.monotonic()
                manifest = run_ours(str(tmp / f"cost-{mode}-{r}"), prompts=[f"{mode} {r} prompt {i}" for i in range(n)],
                                    concurrency=concurrency, limiter=limiter)
                rates[mode].append(n / (time.monotonic() - started))
                assert manifest["counts"]["succeeded"] == n, manifest["counts"]
    os.environ.update(gradient_env(emu.base_url, shared=False))
    _flush_db()
    best = {mode: max(values) for mode, values in rates.items()}
    median = {mode: sorted(values)[rounds // 2] for mode, values in rates.items()}
    return {"n": n, "concurrency": concurrency,
            "memory_req_s": [round(x) for x in rates["memory"]], "redis_req_s": [round(x) for x in rates["redis"]],
            "ratio_best": round(best["redis"] / best["memory"], 2),
            "ratio_median": round(median["redis"] / median["memory"], 2)}


class SlowProxy:
    """127.0.0.1:port -> Redis, every chunk delivered ``delay_s`` after it came, each way: a round
    trip costs ``2 * delay_s`` more, and pipelined chunks keep their order and spacing."""

    def __init__(self, delay_s: float, upstream_port: int = 6379) -> None:
        import socket
        import threading

        self.delay_s = delay_s
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: Any, sink: Any) -> None:
        import queue
        import threading

        due: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def deliver() -> None:
            while True:
                at, data = due.get()
                if not data:
                    break
                time.sleep(max(at - time.monotonic(), 0.0))
                try:
                    sink.sendall(data)
                except OSError:
                    break

        threading.Thread(target=deliver, daemon=True).start()
        try:
            while data := source.recv(65536):
                due.put((time.monotonic() + self.delay_s, data))
        except OSError:
            pass
        due.put((0.0, b""))

    def close(self) -> None:
        self.listener.close()


def bench_shared_slow(emu: Any, tmp: Path, n: int, limit: int = 600, concurrency: int = 16,
                      delay_s: float = 0.05) -> dict[str, Any]:
    """One task told ``limit``/min: Redis 2 x ``delay_s`` away per round trip vs in memory."""
    from airflow_gradient.batch.in_task.pacing import AdaptiveRateLimiter
    from airflow_gradient.batch.in_task.pacing import SharedRateLimiter
    from airflow_gradient.batch.in_task.pacing.factory import async_client
    from bench.harness import run_ours

    proxy = SlowProxy(delay_s)
    kwargs = {"host": "127.0.0.1", "port": proxy.port, "db": BENCH_DB}
    rates: dict[str, float] = {}
    try:
        for mode in ("memory", "redis"):
            _flush_db()
            emu.reset()
            emu.configure(latency=0.02, rpm_limit=limit, tpm_limit=None)
            limiter = (AdaptiveRateLimiter(limit) if mode == "memory" else
                       SharedRateLimiter(lambda: async_client(kwargs), "slow", limit, store_name="slow redis"))
            started = time.monotonic()
            manifest = run_ours(str(tmp / f"slow-{mode}"), prompts=[f"slow {mode} {i}" for i in range(n)],
                                concurrency=concurrency, limiter=limiter)
            rates[mode] = n / (time.monotonic() - started)
            assert manifest["counts"]["succeeded"] == n, manifest["counts"]
            rates[f"{mode}_429s"] = manifest["requests"]["rate_limited"]
            sent = sorted(r["t"] for r in emu.log())
            rates[f"{mode}_paced"] = (len(sent) - 1) / (sent[-1] - sent[0]) * 60
            rates[f"{mode}_max_1s"] = max(sum(1 for u in sent if t <= u < t + 1) for t in sent)
            if isinstance(limiter, SharedRateLimiter):
                rates["redis_losses"], rates["redis_late_slots"] = limiter.losses, limiter.late_slots
    finally:
        proxy.close()
        _flush_db()
    return {"n": n, "limit_per_min": limit, "round_trip_added_s": 2 * delay_s,
            "memory_req_s": round(rates["memory"], 2), "redis_req_s": round(rates["redis"], 2),
            "ratio": round(rates["redis"] / rates["memory"], 3),
            "429s": {"memory": rates["memory_429s"], "redis": rates["redis_429s"]},
            "paced_per_min": {"memory": round(rates["memory_paced"], 1), "redis": round(rates["redis_paced"], 1)},
            "max_in_any_1s": {"memory": rates["memory_max_1s"], "redis": rates["redis_max_1s"]},
            "redis_losses": rates["redis_losses"], "redis_late_slots": rates["redis_late_slots"]}


def _child(run_dir: str, index: str, per_task: str, limit: str, concurrency: str) -> None:
    """One of the K tasks: the operator's own path, limiter chosen from the connection."""
    from airflow_gradient import GradientBatchOperator

    operator = GradientBatchOperator(
        task_id=f"task_{index}", inputs=[f"task {index} prompt {i}" for i in range(int(per_task))],
        output_path=str(Path(run_dir) / f"out-{index}"), max_concurrency=int(concurrency),
        requests_per_minute=float(limit), max_output_tokens=20, progress_interval=600,
    )
    _ = operator.hook.settings  # read the connection before the start line
    (Path(run_dir) / f"ready-{index}").touch()
    while not (Path(run_dir) / "go").exists():
        time.sleep(0.02)
    manifest = operator.execute({})
    print(json.dumps({"counts": manifest["counts"], "pacing": manifest["pacing"]}))


if __name__ == "__main__":
    _child(*sys.argv[1:6])
