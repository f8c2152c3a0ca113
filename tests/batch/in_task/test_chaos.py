"""A batch under the full fault mix at once: every item succeeds, and each is generated exactly once.

The wall time against the same batch without faults is a benchmark figure
(``python -m bench --only chaos``), not a timed test.
"""

from __future__ import annotations

from collections import Counter

from airflow_gradient import read_results
from airflow_gradient.testing.emulator.faults import CHAOS_MIX
from tests.support.batch_task import run_batch_task

N = 200
# Random hangs are 1 %: these make sure a few happen, each on its first request only.
FORCED_HANGS = 3


def test_batch_under_chaos_succeeds_and_generates_each_item_once(gradient_conn, tmp_path) -> None:
    gradient_conn.configure(latency=0.03, fault_retry_after=0.05, hang_seconds=60, **CHAOS_MIX)
    prompts = [f"[[fault:hangx1]] chaos {i}" if i < FORCED_HANGS else f"chaos {i}" for i in range(N)]
    _, state, manifest = run_batch_task(
        "batch_chaos", inputs=prompts, output_path=str(tmp_path / "out"), max_output_tokens=10,
        max_concurrency=100, request_timeout=2.0, max_retries=8,
    )
    assert state == "success"
    assert manifest["counts"] == {"succeeded": N, "failed": 0, "skipped": 0}
    assert gradient_conn.generated_counts() == dict.fromkeys(prompts, 1)

    log = [r for r in gradient_conn.log if r.path == "/v1/responses"]
    served = Counter(r.fault for r in log)
    assert served["429"] and served["429-reset"] and served["500"] + served["503"] and served["hang"] >= FORCED_HANGS
    requests = manifest["requests"]
    assert requests["retries"] > 0 and requests["rate_limited"] > 0
    # The counters match what the server saw: no attempt is missing or counted twice.
    assert requests["sent"] == len(log) and requests["retries"] == len(log) - N
    assert requests["rate_limited"] == sum(r.status == 429 for r in log)
    rows = read_results(manifest, by="index")
    assert all(row["attempts"] >= 2 for row in rows[:FORCED_HANGS])
