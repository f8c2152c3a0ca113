"""On real parts: Airflow with the CeleryExecutor (Redis broker, PostgreSQL metadata database, the
API server, scheduler, DAG processor, triggerer and two ``airflow celery worker`` processes).

- Every example DAG, and the README's quick start, runs green when triggered over the REST API
  without a logical date, as the UI's Trigger button does.
- A batch of :data:`N` items mapped into :data:`SHARDS` shards on one account, against the emulator
  enforcing :data:`LIMIT` requests a minute with headers, each shard told that limit (as a user
  who knows the account's limit writes it) and the shards sharing pacing in Redis
  (``rate_limit_store``): the aggregate rate within 3 % of the limit with 0 x 429, and every item
  exactly once across the shards; then the same with one worker SIGKILLed mid-run and its tasks
  retried on the other.

Needs Redis and PostgreSQL (see ``tests/support/services.py``); about three minutes on two cores.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from airflow_gradient.testing import GradientEmulator, RequestRecord, connection_env
from tests.support.cluster import AirflowCluster, wait_for
from tests.conftest import EXAMPLES
from tests.support.services import postgres_conn_uri, postgres_database, redis_database

# The cluster starts in the first test's set-up (about a minute), within that test's time limit.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

KEY = "sk-do-cluster-test-5d1f"
N = 2000
SHARDS = 4
LIMIT = 1800  # requests a minute, enforced by the emulator over a sliding 60 s window
LATENCY = 0.05
CONCURRENCY = 8  # per shard
BROKER_DB, STORE_DB = 10, 11
# At the limit a request is admitted every 33 ms: a pause of 15 times that with none admitted is
# time no shard was sending (tasks failing over after their worker was lost), not pacing. The rate
# is measured over the time in between; the idle time is reported beside it.
IDLE_GAP_S = 0.5
SHARD_DAG_ID = "cluster_shards"
SHARD_DAG = f'''
from datetime import timedelta

import pendulum

from airflow.sdk import DAG, task
from airflow_gradient import GradientBatchOperator, merge_manifests

with DAG("{SHARD_DAG_ID}", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
         params={{"rows_path": "", "output_path": ""}}) as dag:
    shards = GradientBatchOperator.partial(
        task_id="shard", rows_path="{{{{ params.rows_path }}}}", output_path="{{{{ params.output_path }}}}",
        prompt_template="Describe {{{{ text }}}}", max_output_tokens=16, max_concurrency={CONCURRENCY},
        shard_count={SHARDS}, requests_per_minute={LIMIT}, retries=1, retry_delay=timedelta(seconds=1),
        progress_interval=5,
    ).expand(shard_index=list(range({SHARDS})))

    @task
    def merge(manifests):
        merged = merge_manifests(manifests)
        return {{key: merged[key] for key in ("total", "counts", "requests", "usage", "shard_count")}}

    merge(shards.output)
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowCluster, GradientEmulator]]:
    with ExitStack() as stack:
        broker = stack.enter_context(redis_database(BROKER_DB))
        stack.enter_context(redis_database(STORE_DB))
        database = stack.enter_context(postgres_database("gradient_cluster"))
        catalogue = stack.enter_context(postgres_database("gradient_catalogue"))  # embed_catalogue's own
        emulator = stack.enter_context(GradientEmulator(api_key=KEY, latency=LATENCY))
        home = tmp_path_factory.mktemp("cluster-home")
        dags = home / "dags"
        dags.mkdir()
        (dags / "examples").symlink_to(EXAMPLES, target_is_directory=True)
        (dags / f"{SHARD_DAG_ID}.py").write_text(SHARD_DAG)
        (dags / "readme_quick_start.py").write_text(_readme_quick_start())
        redis_conn = {"conn_type": "redis", "host": "127.0.0.1", "port": 6379, "extra": {"db": STORE_DB}}
        env = {
            **connection_env(emulator.base_url, KEY, model="cluster-model", rate_limit_store="gradient_pacing"),
            "AIRFLOW_CONN_GRADIENT_PACING": json.dumps(redis_conn),
            # The common.ai example's connection: gradient_default's key, URL and shared pace.
            "AIRFLOW_CONN_GRADIENT_AI": json.dumps({"conn_type": "pydanticai_gradient", "extra": {
                "gradient_conn_id": "gradient_default", "model": "llama3.3-70b-instruct"}}),
            "AIRFLOW_CONN_CATALOGUE_DB": postgres_conn_uri(catalogue),
            "GRADIENT_EXAMPLE_OUTPUT": str(home / "examples-output"),
            "GRADIENT_POLL_INTERVAL": "0.5",
        }
        airflow = AirflowCluster(home, dags_folder=dags, database_url=database, broker_url=broker,
                                 result_backend="db+" + database, env=env)
        stack.callback(airflow.stop)
        try:
            airflow.start()
        except Exception as exc:
            logs = "\n".join(f"--- {name}\n{airflow.tail(name)}" for name in airflow.procs)
            raise RuntimeError(f"the cluster did not start: {exc}\n{logs}") from exc
        yield airflow, emulator


def _readme_quick_start() -> str:
    """The README's quick-start DAG, as a user would paste it into a file."""
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    return readme.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def _example_names() -> list[str]:
    """Every example DAG's id (each file's name) and the README's quick start."""
    return [*sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")), "daily_summary"]


def test_every_example_runs_when_triggered_over_the_rest_api(cluster) -> None:
    airflow, _ = cluster
    names = _example_names()
    airflow.wait_for_dags([*names, SHARD_DAG_ID])
    runs = []
    for name in names:
        airflow.unpause(name)
        runs.append((name, airflow.trigger(name)))
    runs.append(("summarise_documents", airflow.trigger("summarise_documents", {"mode": "batch_job"})))
    try:
        states = airflow.wait_for_runs(runs, timeout=240)
        failed = [run for run, state in states.items() if state != "success"]
        assert not failed, f"{failed} failed:\n" + "\n".join(airflow.task_logs(*run) for run in failed)
    finally:
        # Unpausing a scheduled example also started its latest scheduled run: pause them again (an
        # hourly run would call the account in the middle of the next test), failed or not, and let
        # those runs end.
        for name in names:
            airflow.pause(name)
        wait_for("the scheduled example runs to end", lambda: True if airflow.api(
            "GET", "/dags/~/dagRuns", params={"state": ["queued", "running"]})["total_entries"] == 0 else None,
            180, 1.0)


def _write_rows(path: Path) -> list[str]:
    ids = [f"item-{i:05d}" for i in range(N)]
    with path.open("w", encoding="utf-8") as out:
        for cid in ids:
            out.write(json.dumps({"custom_id": cid, "text": f"product {cid}"}) + "\n")
    return ids


def _pacing(records: list[RequestRecord]) -> dict[str, Any]:
    """What the server saw: admitted requests, 429s, the rate over the time requests were being
    admitted, and the most admitted in any 60 s."""
    calls = [r for r in records if r.path == "/v1/responses"]
    admitted = sorted(r.t for r in calls if r.status == 200)
    gaps = [b - a for a, b in zip(admitted, admitted[1:])]
    active = sum(g for g in gaps if g <= IDLE_GAP_S)
    window_max, j = 0, 0
    for i, t in enumerate(admitted):
        while admitted[j] <= t - 60:
            j += 1
        window_max = max(window_max, i - j + 1)
    refused = sorted(r.t for r in calls if r.status == 429)
    return {"admitted": len(admitted), "rate_429": len(refused),
            "first_429s_at_s": [round(t - calls[0].t, 2) for t in refused[:5]],
            "other_statuses": sorted({r.status for r in calls} - {200, 429}),
            "rate_per_min": round((len(admitted) - 1) / active * 60, 1) if active else 0.0,
            "idle_s": round(sum(g for g in gaps if g > IDLE_GAP_S), 1), "span_s": round(admitted[-1] - admitted[0], 1),
            "max_in_60s": window_max}


def _rows_by_shard(out: Path) -> dict[int, list[dict[str, Any]]]:
    from airflow.sdk import ObjectStoragePath
    from airflow_gradient.batch.parts import iter_rows, list_parts

    return {i: [row for part in list_parts(ObjectStoragePath(str(out / f"shard-{i}-of-{SHARDS}")))
                for row in iter_rows(part)] for i in range(SHARDS)}


def _run_batch(airflow: AirflowCluster, emulator: GradientEmulator, rows_path: Path, out: Path,
               during: Any = None) -> tuple[dict[str, Any], list[RequestRecord], list[dict[str, Any]]]:
    """One run of the sharded DAG: its merged manifest, the requests the server saw, its task instances."""
    seen = len(emulator.log)
    run_id = airflow.trigger(SHARD_DAG_ID, {"rows_path": str(rows_path), "output_path": str(out)})
    if during is not None:
        during(run_id, seen)
    state = airflow.wait_for_runs([(SHARD_DAG_ID, run_id)], timeout=300)[(SHARD_DAG_ID, run_id)]
    tis = airflow.task_instances(SHARD_DAG_ID, run_id)
    assert state == "success", f"run {run_id} {state}:\n" + airflow.task_logs(SHARD_DAG_ID, run_id)
    return airflow.xcom(SHARD_DAG_ID, run_id, "merge"), emulator.log[seen:], tis


def _assert_exactly_once(ids: list[str], out: Path, merged: dict[str, Any]) -> None:
    from airflow_gradient.batch.inputs import Shard

    by_shard = _rows_by_shard(out)
    succeeded = Counter(row["custom_id"] for rows in by_shard.values() for row in rows if row["status"] == "succeeded")
    assert set(succeeded) == set(ids), f"{len(set(ids) - set(succeeded))} items have no succeeded row"
    assert set(succeeded.values()) == {1}, [cid for cid, n in succeeded.items() if n > 1][:10]
    misplaced = [(i, row["custom_id"]) for i, rows in by_shard.items() for row in rows
                 if not Shard(i, SHARDS).owns(row["custom_id"])]
    assert misplaced == []
    assert merged["total"] == N and merged["counts"] == {"succeeded": N, "failed": 0, "skipped": 0}
    assert merged["shard_count"] == SHARDS and merged["requests"]["rate_limited"] == 0


def _assert_paced(pacing: dict[str, Any]) -> None:
    assert pacing["rate_429"] == 0 and pacing["other_statuses"] == [], pacing
    assert pacing["max_in_60s"] <= LIMIT, pacing
    assert abs(pacing["rate_per_min"] / LIMIT - 1) <= 0.03, pacing


def test_sharded_batch_on_celery_shares_the_limit_and_survives_a_lost_worker(cluster, tmp_path) -> None:
    airflow, emulator = cluster
    airflow.wait_for_dags([SHARD_DAG_ID])
    airflow.unpause(SHARD_DAG_ID)
    rows_path = tmp_path / "rows.jsonl"
    ids = _write_rows(rows_path)
    emulator.configure(rpm_limit=LIMIT)

    # 1. Both workers up: the shards pace together at the account's limit.
    merged, records, tis = _run_batch(airflow, emulator, rows_path, tmp_path / "clean")
    pacing = _pacing(records)
    print("clean run:", pacing, merged["requests"])
    _assert_paced(pacing)
    _assert_exactly_once(ids, tmp_path / "clean", merged)
    generated = Counter(r.prompt_key for r in records if r.generated)
    assert len(generated) == N and set(generated.values()) == {1}

    # 2. One worker lost mid-run: its shards fail over to the other and resume from their rows.
    killed: dict[str, Any] = {}

    def kill_a_worker(run_id: str, seen: int) -> None:
        wait_for("a quarter of the batch", lambda: True if sum(
            1 for r in emulator.log[seen:] if r.generated) >= N // 4 else None, 120, 0.2)
        running = [ti for ti in airflow.task_instances(SHARD_DAG_ID, run_id)
                   if ti["task_id"] == "shard" and ti["state"] == "running" and ti["pid"]]
        by_worker: dict[int, list[int]] = {}
        for ti in running:
            worker = airflow.worker_running(ti["pid"])
            if worker is not None:
                by_worker.setdefault(worker, []).append(ti["map_index"])
        assert by_worker, f"no running shard found on a worker: {running}"
        worker, shards = max(by_worker.items(), key=lambda pair: len(pair[1]))
        airflow.kill_worker(worker)
        killed.update(worker=worker, shards=sorted(shards), other=sorted(by_worker.get(1 - worker, [])))

    merged, records, tis = _run_batch(airflow, emulator, rows_path, tmp_path / "killed", during=kill_a_worker)
    pacing = _pacing(records)
    print("killed run:", pacing, merged["requests"], killed)
    tries = {ti["map_index"]: ti["try_number"] for ti in tis if ti["task_id"] == "shard"}
    assert all(tries[i] == 2 for i in killed["shards"]), (tries, killed)
    _assert_paced(pacing)
    _assert_exactly_once(ids, tmp_path / "killed", merged)
    generated = Counter(r.prompt_key for r in records if r.generated)
    assert len(generated) == N
    # Replies lost with the worker were generated but never written: at most what was in flight.
    assert sum(generated.values()) - N <= len(killed["shards"]) * CONCURRENCY, sum(generated.values()) - N
