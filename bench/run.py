"""Benchmarks of GradientBatchOperator's engine against the emulator on loopback. One command:

    .venv/bin/python -m bench            # everything (about 8 minutes)
    .venv/bin/python -m bench --quick    # smaller sizes, for a smoke run
    .venv/bin/python -m bench --only ideal,openai
    .venv/bin/python -m bench --list     # the benches, each with its goal

The emulator runs in its own process (``python -m airflow_gradient.testing.emulator``), so that the client
and the server do not share one interpreter. The in-task batch is driven through
:func:`airflow_gradient.batch.in_task.runner.run_batch`, the code the operator's ``execute`` calls; the ``.expand``
comparison runs both DAGs through ``airflow dags test``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chaos import bench_chaos
from bench.common_ai import bench_common_ai
from bench.embeddings import bench_embeddings, bench_embeddings_limit, bench_embeddings_rss, bench_embeddings_split
from bench.engine import bench_expand, bench_ideal, bench_openai, bench_rate_limit, bench_rss
from bench.harness import KEY, MODEL, Emulator, connection_env, run_ours, show, warm_up
from bench.observability import bench_observability
from bench.pacing import bench_isolated, bench_rise, bench_unannounced
from bench.reuse import bench_reuse, bench_reuse_rss
from bench.scale_out import bench_workers
from bench.shared_pacing import bench_shared_cost, bench_shared_k4, bench_shared_slow
from bench.single_request import bench_single
from bench.ui import bench_ui
from bench.storage import bench_storage


@dataclass(frozen=True)
class Run:
    """What a bench is given: the emulator, a scratch folder, the command line."""

    emu: Emulator
    tmp: Path
    args: argparse.Namespace

    def size(self, quick: Any, full: Any) -> Any:
        """``quick`` under ``--quick``, else ``full``."""
        return quick if self.args.quick else full


@dataclass(frozen=True)
class Bench:
    goal: str  # printed over its figures, and by --list
    run: Callable[[Run], dict[str, Any]]


# Run in this order; ``--only`` picks some.
BENCHES: dict[str, Bench] = {
    "single": Bench("single request at zero latency, hook vs openai responses.create (above 1: hook faster)",
                    lambda r: bench_single(r.emu.base_url, KEY, MODEL, *r.size((50, 3), (200, 5)))),
    "ideal": Bench("wall time vs ideal N*L/C (goal >= 0.90)",
                   lambda r: bench_ideal(r.emu, r.tmp, r.size(400, 2000))),
    "openai": Bench("zero-latency throughput vs openai.AsyncOpenAI + semaphore + gather (goal >= 1.5x)",
                    lambda r: bench_openai(r.emu, r.tmp, r.size(500, 2000))),
    "expand": Bench("prompts/s vs one mapped task per prompt, airflow dags test (goal >= 50x)",
                    lambda r: bench_expand(r.emu, r.tmp, r.size(5, 20), r.size(500, 2000))),
    "ratelimit": Bench("300 requests/min enforced with headers (goal: within 3 %, no 429 once paced)",
                       lambda r: bench_rate_limit(r.emu, r.tmp, r.size(40, 150), r.size(80, 420))),
    "rss": Bench("peak RSS, items written to local storage (goal < 300 MB, ratio <= 1.2)",
                 lambda r: bench_rss(r.emu, r.tmp, r.size([1000, 10000], [10000, 100000]))),
    "chaos": Bench("wall time with ~18 % faults over the same batch without (goal <= 1.5, exactly once)",
                   lambda r: bench_chaos(r.emu, r.tmp, r.size(400, 2000), r.args.chaos_latency,
                                         r.args.chaos_concurrency)),
    "isolated": Bench("wall time with 5 % isolated header-less 429s over the same without (goal <= 1.3x)",
                      lambda r: bench_isolated(r.emu, r.tmp, run_ours, r.size(400, 2000))),
    "unannounced": Bench("300/min enforced, no quota headers: rate after the first 20 s (goal >= 0.85 of the limit)",
                         lambda r: bench_unannounced(r.emu, r.tmp, run_ours, r.size(
                             {"per_second": 150, "sliding_minute": 400}, {"per_second": 450, "sliding_minute": 900}))),
    "rise": Bench("limit raised 120 -> 600/min mid-batch: seconds to 80 % of the new limit (goal <= 10 s)",
                  lambda r: bench_rise(r.emu, r.tmp, run_ours, r.size(200, 400))),
    "reuse": Bench("second run with 1 % changed, reuse_results_from (goal: sends 1 %, every row, <= 5 % of the "
                   "first run's wall time)",
                   lambda r: bench_reuse(r.emu, r.tmp, r.size(1000, 10_000), 0.2, r.args.reuse_concurrency)),
    "reuse-rss": Bench("scanning 1 million earlier rows (goal: well under 100 MB)",
                       lambda r: bench_reuse_rss(r.tmp, r.size(100_000, 1_000_000))),
    "shared_k4": Bench("K=4 tasks (processes) on one 600/min account, each told the limit: in-memory vs Redis "
                       "(goal with Redis: within 3 %, 0 x 429)",
                       lambda r: bench_shared_k4(r.emu, r.tmp, r.size(30, 200))),
    "shared_cost": Bench("one task at zero latency, Redis limiter vs in-memory: throughput (goal >= 0.8x)",
                         lambda r: bench_shared_cost(r.emu, r.tmp, r.size(500, 2000), rounds=r.size(3, 5))),
    "shared_slow": Bench("one task told 10 req/s, Redis 100 ms per round trip away vs in-memory: throughput "
                         "(goal >= 0.9x)",
                         lambda r: bench_shared_slow(r.emu, r.tmp, r.size(100, 300))),
    "workers": Bench("two workers vs one, latency-bound, no binding limit: throughput (goal >= 1.7x)",
                     lambda r: bench_workers(r.emu, r.tmp, r.size(200, 1000))),
    "common_ai": Bench("common.ai agent task (100 calls) and a batch (500 items) at once on one 10 req/s account: "
                       "shared pace (rate_limit_store) vs a generic pydanticai connection "
                       "(goal shared: <= 5 x 429, >= 0.85 of the limit)",
                       lambda r: bench_common_ai(r.emu, r.tmp, r.size((40, 150), (100, 500)))),
    "storage": Bench("10,000 items written to S3 (moto server) vs local disk, side by side (goal: within 10 %)",
                     lambda r: bench_storage(r.emu, r.tmp, r.size(2000, 10_000))),
    "embeddings": Bench("embeddings at zero latency, inputs/s vs AsyncOpenAI.embeddings.create, same packs and "
                        "concurrency (goal >= 1.3x)",
                        lambda r: bench_embeddings(r.emu, r.tmp, KEY, MODEL, r.size(20_000, 100_000))),
    "embeddings-limit": Bench("embeddings, 120 req/min + 750,000 tokens/min in headers (goal >= 95 % of the token "
                              "limit, 0 x 429)",
                              lambda r: bench_embeddings_limit(r.emu, r.tmp, MODEL, r.size(40_000, 100_000))),
    "embeddings-rss": Bench("embeddings to Parquet, 1,024 dimensions: peak RSS (goal < 500 MB)",
                            lambda r: bench_embeddings_rss(r.emu, r.tmp, connection_env(r.emu.base_url),
                                                           r.size(200_000, 1_000_000))),
    "embeddings-split": Bench("one bad text among 2,048: extra requests (goal <= 12)",
                              lambda r: bench_embeddings_split(r.emu, r.tmp, MODEL)),
    "ui": Bench("UI nav page, 30 days x 50 DAGs x 20 runs/day, server time (goal < 1 s)",
                lambda r: bench_ui()),
    "observability": Bench("tracing cost at zero latency, C=64, vs the batch without spans (goals: no provider and "
                           "tracing='batch' within 3 %, SDK + tracing='items' within 20 %)",
                           lambda r: bench_observability(r.emu, r.tmp, r.size(1000, 10_000), rounds=r.size(3, 5),
                                                             calls=r.size(5000, 20_000))),
}


def _listing() -> str:
    width = max(map(len, BENCHES))
    return "\n".join(f"  {name:<{width}}  {bench.goal}" for name, bench in BENCHES.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     epilog="benches:\n" + _listing(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the benches with their goals and exit")
    parser.add_argument("--chaos-latency", type=float, default=1.0, help="emulator latency of the chaos bench, s")
    parser.add_argument("--chaos-concurrency", type=int, default=64, help="max_concurrency of the chaos bench")
    parser.add_argument("--reuse-concurrency", type=int, default=50,
                        help="max_concurrency of the reuse bench (10,000 x 200 ms / 50 = a 40 s first run)")
    args = parser.parse_args(argv)
    if args.list:
        print(_listing())
        return
    chosen = args.only.split(",")
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        parser.error(f"unknown bench(es) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
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
            run = Run(emu, tmp, args)
            for name, bench in BENCHES.items():
                if name in chosen:
                    results[name] = bench.run(run)
                    show(bench.goal, results[name])
    finally:
        emu.close()
    print("\nSUMMARY")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
